"""A real-voice hierarchical speaker corpus built from Debian's espeak-ng and MBROLA voices.

Each MBROLA diphone database is cut from the recordings of one real person, so the database is
a *person*; ``mb-xx`` and ``mb-xx-en`` (that person reading English) are the same person. Debian
bookworm ships 72 usable databases across 37 language varieties (``bz1`` and ``hn1`` have no
espeak-ng voice and ``cn1`` no Chinese dictionary, so they are skipped). The hierarchy:

* **family** -- the language family of the database (:data:`PERSONS`): Germanic, Romance,
  Balto-Slavic, Hellenic, Semitic, Indo-Iranian, Uralic, Turkic, Japonic, Austronesian,
  Dravidian;
* **person** -- the database (the corpus's ``base`` level: ``metadata.json`` writes it as
  ``base`` so every hamjax tool that reads a hierarchy understands it);
* **derived speaker** -- the person through a fixed vocal-tract-length warp (the waveform is
  played ``alpha`` times faster, moving every formant by ``alpha``, while MBROLA's pitch and
  time ratios undo the side effects on F0 and duration), a pitch register, a speaking rate and
  a spectral tilt (first-order pre-emphasis ``1 - beta z^-1``);
* **utterance** -- random text (numbers, which espeak-ng reads in the voice's own language, and
  pseudo-words), in the person's English voice with probability ``english_prob`` when there is
  one, with per-session and per-utterance pitch and rate jitter, a per-session microphone
  response, a per-utterance equaliser, and optional reverberation and noise (the channel
  models of :mod:`hamjax.data.source_filter`).

Splits hold out whole PERSONS (every derived speaker of a held-out person is unseen) and whole
families; every derived speaker of a training person trains. Trial lists:

* ``heldout_persons``: speakers of held-out persons of training families;
* ``heldout_families``: speakers of persons of held-out families;
* ``within_family``: every held-out speaker, non-targets always another person of the same
  family (hard: same language, same phone set).

A pitch-only verifier's EER (median YIN F0, score ``-|log F0_e - log F0_t|``) is stored per list
beside a long-term-cepstrum verifier's, so a shortcut would be visible next to a model's EER.

Layout (VoxCeleb conventions, as :mod:`hamjax.data.synthetic`)::

    root/wav/<spk>/<session>/<n>.wav   16 kHz 16-bit mono
    root/metadata.json                 speakers -> base (person), family; splits; summary
    root/train_list.txt, root/all_list.txt, root/trials/<name>.txt

Requires the ``espeak-ng`` and ``mbrola`` programs and the ``mbrola-*`` voice packages
(``scripts/make_mbrola_corpus.py --install`` performs the apt steps).
"""

from __future__ import annotations

import fractions
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
import soundfile

from hamjax import io_utils
from hamjax.data import audio, generated
from hamjax.data.generated import seeded_rng as _rng
from hamjax.data.source_filter import (
    _mix_at_snr,
    _peaking,
    coloured_noise,
    sample_channel,
    synthetic_rir,
)

__all__ = [
    "DEFAULT",
    "FORMAT_NAME",
    "GENERATOR_VERSION",
    "PERSONS",
    "TINY",
    "TRIAL_LISTS",
    "available_persons",
    "generate_corpus",
    "missing_tools",
]

GENERATOR_VERSION = 1
FORMAT_NAME = "hamjax-mbrola"
SAMPLE_RATE = audio.SAMPLE_RATE
MBROLA_DIR = Path("/usr/share/mbrola")
TRIAL_LISTS = ("heldout_persons", "heldout_families", "within_family")

_FAMILIES: dict[str, str] = {
    "germanic": "af1 de1 de2 de3 de4 de5 de6 de7 de8 en1 us1 us2 us3 nl1 nl2 nl3 sw1 sw2 ic1",
    "romance": "fr1 fr2 fr3 fr4 fr5 fr6 fr7 ca1 ca2 es1 es2 es3 es4 mx1 mx2 vz1 it1 it2 it3 it4 "
    "pt1 br1 br2 br3 br4 ro1 la1",
    "balto_slavic": "cz1 cz2 cr1 pl1 lt1 lt2",
    "hellenic": "gr1 gr2",
    "semitic": "ar1 ar2 hb1 hb2",
    "indo_iranian": "in1 in2 ir1",
    "uralic": "hu1 ee1",
    "turkic": "tr1 tr2",
    "japonic": "jp1 jp2 jp3",
    "austronesian": "id1 ma1 nz1",
    "dravidian": "tl1",
}
#: MBROLA database (person) -> language family.
PERSONS: dict[str, str] = {db: fam for fam, dbs in _FAMILIES.items() for db in dbs.split()}
# Databases with an espeak-ng voice reading English (``mb-<db>-en``): the same person.
_ENGLISH = frozenset("af1 nl2 fr1 fr4 de1 de2 de3 de4 de5 de6 gr2 hu1 pl1 ro1 sw1 sw2".split())

#: The issue's size: 72 persons x 11 derived speakers x 13 utterances (~800 speakers, ~10k utts).
DEFAULT: dict[str, Any] = dict(
    speakers_per_person=11, sessions_per_speaker=2, utterances_per_session=7
)
#: Seconds of generation; for tests.
TINY: dict[str, Any] = dict(
    persons=("de1", "de2", "de4", "nl2", "fr1", "fr3", "it1", "it3", "gr1", "gr2"),
    speakers_per_person=2,
    sessions_per_speaker=2,
    utterances_per_session=2,
    heldout_person_fraction=0.34,
    heldout_families=("hellenic",),
    trials_per_speaker=4,
)

_DEFAULTS: dict[str, Any] = dict(
    persons=None,
    heldout_person_fraction=0.2,
    heldout_families=None,
    num_heldout_families=2,
    trials_per_speaker=12,
    english_prob=0.25,
    vtl_warp_range=(0.88, 1.13),
    pitch_ratio_range=(0.8, 1.25),
    rate_range=(0.85, 1.18),
    tilt_range=(-0.5, 0.5),
    session_f0_sd=0.05,
    utterance_f0_sd=0.06,
    utterance_rate_sd=0.05,
    reverb_prob=0.15,
    noise_prob=0.3,
    snr_range=(5.0, 30.0),
)

# Seed-sequence domains, as in hamjax.data.synthetic: content is keyed by (seed, domain, ...).
_SPEAKER, _UTTERANCE, _SESSION, _TRIALS, _SPLITS, _IDS = range(6)

_NUMBER_WORDS = 0.6  # probability that a token is a number (read in the voice's language)
_SYLLABLE_ONSETS = list("bdfgklmnprstvz") + ["ch", "sh", "tr", "pl", ""]
_SYLLABLE_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


def missing_tools(mbrola_dir: str | os.PathLike[str] = MBROLA_DIR) -> list[str]:
    """What is missing to generate the corpus (empty when espeak-ng, mbrola and voices exist)."""
    missing = [p for p in ("espeak-ng", "mbrola") if shutil.which(p) is None]
    if not available_persons(mbrola_dir):
        missing.append(f"MBROLA voices in {mbrola_dir} (Debian packages mbrola-*)")
    return missing


def available_persons(mbrola_dir: str | os.PathLike[str] = MBROLA_DIR) -> list[str]:
    """The persons of :data:`PERSONS` whose MBROLA database is installed under ``mbrola_dir``."""
    d = Path(mbrola_dir)
    return [db for db in PERSONS if (d / db / db).is_file()]


def _voice(db: str, english: bool) -> str:
    return f"mb-{db}-en" if english and db in _ENGLISH else f"mb-{db}"


def _sentence(rng: np.random.Generator, kind: str = "mixed") -> str:
    """Random text: numbers (read in the voice's own language) and/or pseudo-words.

    ``kind`` is ``"mixed"``, ``"numbers"`` or ``"words"`` (espeak-ng's Hebrew reads no digits).
    """
    tokens = []
    for _ in range(int(rng.integers(2, 6))):
        if kind == "numbers" or (kind == "mixed" and rng.random() < _NUMBER_WORDS):
            tokens.append(str(int(10 ** rng.uniform(0.0, 4.0))))
        else:
            word = "".join(
                _SYLLABLE_ONSETS[int(rng.integers(len(_SYLLABLE_ONSETS)))]
                + _SYLLABLE_VOWELS[int(rng.integers(len(_SYLLABLE_VOWELS)))]
                for _ in range(int(rng.integers(1, 4)))
            )
            tokens.append(word)
    # Commas and full stops give espeak-ng's intonation phrases (and pauses).
    out = []
    for i, tok in enumerate(tokens):
        sep = "" if i == len(tokens) - 1 else (", " if rng.random() < 0.3 else " ")
        out.append(tok + sep)
    return "".join(out) + "."


# espeak-ng drives mbrola itself even when only asked for phonemes (~0.1 s per call, mostly
# waiting), so each speaker's sentences for one voice go through one call, separated by SSML
# breaks of this length; the break comes back as a "_ <ms>" phoneme line that splits them.
_BREAK_MS = 7777
_ATTEMPTS = 4  # synthesis attempts per utterance (see _render)


def _phonemes(voice: str, texts: Sequence[str]) -> list[bytes | None]:
    """MBROLA phoneme input (``.pho``) for each text (None where espeak-ng gave no phonemes)."""
    ssml = "".join(f'{t} <break time="{_BREAK_MS}ms"/> ' for t in texts)
    res = subprocess.run(
        ["espeak-ng", "-m", "-v", voice, "-q", "--pho", ssml], capture_output=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"espeak-ng -v {voice} --pho failed (exit {res.returncode}) on {texts[0]!r}...: "
            f"{res.stderr.decode(errors='replace').strip()[:300]}"
        )
    chunks: list[list[bytes]] = [[]]
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == b"_" and int(parts[1]) > _BREAK_MS // 2:
            chunks.append([])
        else:
            chunks[-1].append(line)
    if len(chunks) != len(texts) + 1:
        if len(texts) == 1:
            return [None]
        # A text that ends in a pause of its own can merge with the break: one call each.
        return [_phonemes(voice, [t])[0] for t in texts]
    out: list[bytes | None] = []
    for c in chunks[:-1]:
        if any(ln.strip() and not ln.startswith(b"_") for ln in c):
            # A short pause before and after each utterance, as a recording would have.
            out.append(b"_ 150\n" + b"\n".join(c) + b"\n_ 250\n")
        else:
            out.append(None)
    return out


@functools.cache
def _database_rate(db_path: str) -> int:
    """The sample rate of an MBROLA database (16 or 22.05 kHz), from a one-phoneme synthesis."""
    with tempfile.TemporaryDirectory(prefix="hamjax-mbrola-") as tmp:
        out = os.path.join(tmp, "probe.wav")
        subprocess.run(
            ["mbrola", "-e", db_path, "-", out], input=b"_ 50\n", capture_output=True, check=False
        )
        if not os.path.exists(out):
            raise RuntimeError(f"mbrola {db_path}: could not synthesise a probe (broken database?)")
        return int(soundfile.info(out).samplerate)


def _mbrola(
    db: str, pho: bytes, pitch_ratio: float, time_ratio: float, mbrola_dir: Path
) -> tuple[np.ndarray, int]:
    """mbrola: phonemes -> waveform at the database's own rate (16 or 22.05 kHz)."""
    db_path = str(mbrola_dir / db / db)
    syn = subprocess.run(
        # -e: skip a missing diphone instead of stopping (a few databases lack rare pairs);
        # output "-": raw 16-bit samples on stdout.
        ["mbrola", "-e", "-f", f"{pitch_ratio:.5f}", "-t", f"{time_ratio:.5f}", db_path, "-", "-"],
        input=pho,
        capture_output=True,
        check=False,
    )
    if syn.returncode != 0 or len(syn.stdout) < 2:
        raise RuntimeError(
            f"mbrola {db_path} failed (exit {syn.returncode}): "
            f"{syn.stderr.decode(errors='replace').strip()[:300]}"
        )
    wav = np.frombuffer(syn.stdout[: len(syn.stdout) // 2 * 2], "<i2").astype(np.float32) / 32768
    return wav, _database_rate(db_path)


_worker_state: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _worker_state.clear()
    _worker_state.update(state)


def _render(
    job: tuple[int, list[tuple[int, str, bool]]],
) -> list[tuple[int, int, int, float, list[float]]]:
    """Synthesises, warps, channels and writes one speaker's utterances.

    Args:
      job: ``(speaker index, [(session, relative path, want stats)] per utterance)``.

    Returns:
      ``(speaker, utterance, samples, median F0, cepstrum)`` per utterance.
    """
    spk, utts = job
    st = _worker_state
    args, sr = st["args"], SAMPLE_RATE
    row = st["speakers"][spk]
    person, alpha = row["person"], row["vtl_warp"]
    rngs = [_rng(st["seed"], _UTTERANCE, spk, k) for k in range(len(utts))]
    english = [rng.random() < args["english_prob"] for rng in rngs]
    texts = [_sentence(rng) for rng in rngs]
    phos: dict[int, bytes | None] = {}
    for eng in (False, True):
        idx = [k for k in range(len(utts)) if english[k] == eng]
        if idx:
            out = _phonemes(_voice(person, eng), [texts[k] for k in idx])
            phos.update(zip(idx, out, strict=True))
    results = []
    for k, (session, relpath, want_stats) in enumerate(utts):
        rng = rngs[k]
        sess_rng = _rng(st["seed"], _SESSION, spk, session)
        session_f0 = sess_rng.normal(0.0, args["session_f0_sd"])
        channel = sample_channel(sess_rng, sr)
        pitch = row["pitch_ratio"] * np.exp(session_f0 + rng.normal(0.0, args["utterance_f0_sd"]))
        rate = row["rate"] * np.exp(rng.normal(0.0, args["utterance_rate_sd"]))
        # Playing the waveform alpha times faster scales formants, F0 and tempo by alpha;
        # MBROLA's pitch ratio 1/alpha and time ratio alpha leave only the formants moved.
        for attempt in range(_ATTEMPTS):
            try:
                if phos[k] is None:
                    raise RuntimeError(f"espeak-ng -v {_voice(person, english[k])}: no phonemes")
                wav, db_rate = _mbrola(
                    person, phos[k], pitch / alpha, alpha / rate, st["mbrola_dir"]
                )
                break
            except RuntimeError:
                # A voice may read a text as nothing (espeak-ng's Hebrew reads no digits), or
                # its database may reject a phoneme espeak-ng produced for a pseudo-word
                # ("Invalid phoneme code" in ar2): redraw the text as numbers only, then as
                # pseudo-words only, alternately.
                if attempt == _ATTEMPTS - 1:
                    raise
                kind = ("numbers", "words")[attempt % 2]
                phos[k] = _phonemes(_voice(person, english[k]), [_sentence(rng, kind)])[0]
        ratio = fractions.Fraction(sr / (db_rate * alpha)).limit_denominator(256)
        wav = scipy.signal.resample_poly(wav.astype(np.float64), ratio.numerator, ratio.denominator)
        wav = scipy.signal.lfilter([1.0, -row["tilt"]], [1.0], wav)
        num_samples = wav.shape[0]
        eq = _peaking(
            float(np.exp(rng.uniform(np.log(300.0), np.log(4000.0)))),
            rng.uniform(-4, 4),
            1.0,
            sr,
        )
        wav = scipy.signal.sosfilt(np.concatenate([channel, eq]), wav)
        if rng.random() < args["reverb_prob"]:
            rir = synthetic_rir(rng, rng.uniform(0.2, 0.8), sr)
            wav = scipy.signal.fftconvolve(wav, rir)[:num_samples]
        if rng.random() < args["noise_prob"]:
            snr = rng.uniform(*args["snr_range"])
            wav = _mix_at_snr(wav, coloured_noise(rng, num_samples, rng.uniform(0.0, 2.0)), snr)
        level = 10.0 ** (rng.uniform(-32.0, -20.0) / 20.0)
        wav = wav * (level / (np.sqrt(np.mean(wav**2)) + 1e-12))
        wav = (wav * min(1.0, 0.99 / (np.max(np.abs(wav)) + 1e-12))).astype(np.float32)
        audio.write_wav(Path(st["out"]) / "wav" / relpath, wav, sr)
        f0, cep = generated.utterance_stats(wav, sr) if want_stats else (float("nan"), [])
        results.append((spk, k, num_samples, f0, cep))
    return results


def _validate(args: dict[str, Any], installed: Sequence[str]) -> None:
    for name in ("speakers_per_person", "sessions_per_speaker", "utterances_per_session",
                 "trials_per_speaker", "num_heldout_families"):  # fmt: skip
        v, low = args[name], 0 if name == "num_heldout_families" else 1
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name}={v!r}: expected an integer >= {low}")
    if args["sessions_per_speaker"] * args["utterances_per_session"] < 2:
        raise ValueError(
            "sessions_per_speaker * utterances_per_session: expected >= 2 (target trials need "
            "two utterances per speaker)"
        )
    if not 0.0 <= args["heldout_person_fraction"] < 1.0:
        raise ValueError(
            f"heldout_person_fraction={args['heldout_person_fraction']!r}: expected [0, 1)"
        )
    for name in ("english_prob", "reverb_prob", "noise_prob"):
        if not 0.0 <= args[name] <= 1.0:
            raise ValueError(f"{name}={args[name]!r}: expected a probability in [0, 1]")
    for name in ("vtl_warp_range", "pitch_ratio_range", "rate_range"):
        lo, hi = args[name]
        if not 0.5 <= lo <= hi <= 2.0:
            raise ValueError(f"{name}={args[name]!r}: expected (low, high) with 0.5<=low<=high<=2")
    lo, hi = args["tilt_range"]
    if not -0.95 <= lo <= hi <= 0.95:
        raise ValueError(f"tilt_range={args['tilt_range']!r}: expected -0.95<=low<=high<=0.95")
    for name in ("session_f0_sd", "utterance_f0_sd", "utterance_rate_sd"):
        if not 0.0 <= args[name] <= 0.5:
            raise ValueError(f"{name}={args[name]!r}: expected a log-ratio std in [0, 0.5]")
    if args["persons"] is not None:
        unknown = [p for p in args["persons"] if p not in PERSONS]
        if unknown:
            raise ValueError(
                f"persons: unknown MBROLA databases {unknown}; known: {sorted(PERSONS)}"
            )
        absent = [p for p in args["persons"] if p not in installed]
        if absent:
            raise ValueError(
                f"persons: MBROLA databases {absent} are not installed under {MBROLA_DIR} "
                "(scripts/make_mbrola_corpus.py --install)"
            )
    if args["heldout_families"] is not None:
        unknown = [f for f in args["heldout_families"] if f not in _FAMILIES]
        if unknown:
            raise ValueError(
                f"heldout_families: unknown families {unknown}; expected some of "
                f"{sorted(_FAMILIES)}"
            )
    if (
        not isinstance(args["seed"], (int, np.integer))
        or isinstance(args["seed"], bool)
        or args["seed"] < 0
    ):
        raise ValueError(f"seed={args['seed']!r}: expected a non-negative integer")


def _plan(args: dict[str, Any], persons: Sequence[str]) -> dict[str, Any]:
    """The hierarchy, splits, ids and trial lists: everything but the audio."""
    seed = args["seed"]
    families = sorted({PERSONS[p] for p in persons})
    by_family = {f: [p for p in persons if PERSONS[p] == f] for f in families}
    if args["heldout_families"] is not None:
        held_fams = set(args["heldout_families"]) & set(families)
    else:
        # Families of 2-4 persons: big enough for cross-person trials, small enough to spare.
        cand = [f for f in families if 2 <= len(by_family[f]) <= 4]
        order = _rng(seed, _SPLITS).permutation(len(cand))
        held_fams = {cand[int(i)] for i in order[: args["num_heldout_families"]]}
    split_of: dict[str, str] = {}
    for f in families:
        members = by_family[f]
        if f in held_fams:
            split_of.update({p: "heldout_family" for p in members})
            continue
        n_hold = int(round(args["heldout_person_fraction"] * len(members)))
        n_hold = min(n_hold, len(members) - 1)  # every training family keeps a training person
        held = {
            members[int(i)]
            for i in _rng(seed, _SPLITS, families.index(f)).permutation(len(members))[:n_hold]
        }
        split_of.update({p: ("heldout_person" if p in held else "train") for p in members})

    nsp = args["speakers_per_person"]
    num_spk = len(persons) * nsp
    id_perm = _rng(seed, _IDS).permutation(num_spk)
    width = max(4, len(str(num_spk)))
    rows = []
    for p_idx, person in enumerate(persons):
        for s in range(nsp):
            idx = len(rows)
            rng = _rng(seed, _SPEAKER, p_idx, s)
            rows.append(
                dict(
                    index=idx,
                    name=f"m{id_perm[idx] + 1:0{width}d}",
                    person=person,
                    family=PERSONS[person],
                    split=split_of[person],
                    vtl_warp=float(np.exp(rng.uniform(*np.log(args["vtl_warp_range"])))),
                    pitch_ratio=float(np.exp(rng.uniform(*np.log(args["pitch_ratio_range"])))),
                    rate=float(np.exp(rng.uniform(*np.log(args["rate_range"])))),
                    tilt=float(rng.uniform(*args["tilt_range"])),
                )
            )
    n_sess, n_utt = args["sessions_per_speaker"], args["utterances_per_session"]
    utts = generated.plan_utterances(rows, lambda i: _rng(seed, _IDS, i), n_sess, n_utt)
    trials = generated.sample_trial_lists(
        rows,
        {
            "heldout_persons": ("heldout_person", None),
            "heldout_families": ("heldout_family", None),
            "within_family": (None, "person"),
        },
        utts,
        n_sess,
        args["trials_per_speaker"],
        lambda t: _rng(seed, _TRIALS, t),
    )
    return dict(rows=rows, utts=utts, trials=trials, heldout_families=sorted(held_fams))


def _canonical(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()}


def generate_corpus(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    speakers_per_person: int = DEFAULT["speakers_per_person"],
    sessions_per_speaker: int = DEFAULT["sessions_per_speaker"],
    utterances_per_session: int = DEFAULT["utterances_per_session"],
    persons: Sequence[str] | None = _DEFAULTS["persons"],
    heldout_person_fraction: float = _DEFAULTS["heldout_person_fraction"],
    heldout_families: Sequence[str] | None = _DEFAULTS["heldout_families"],
    num_heldout_families: int = _DEFAULTS["num_heldout_families"],
    trials_per_speaker: int = _DEFAULTS["trials_per_speaker"],
    english_prob: float = _DEFAULTS["english_prob"],
    vtl_warp_range: Sequence[float] = _DEFAULTS["vtl_warp_range"],
    pitch_ratio_range: Sequence[float] = _DEFAULTS["pitch_ratio_range"],
    rate_range: Sequence[float] = _DEFAULTS["rate_range"],
    tilt_range: Sequence[float] = _DEFAULTS["tilt_range"],
    session_f0_sd: float = _DEFAULTS["session_f0_sd"],
    utterance_f0_sd: float = _DEFAULTS["utterance_f0_sd"],
    utterance_rate_sd: float = _DEFAULTS["utterance_rate_sd"],
    reverb_prob: float = _DEFAULTS["reverb_prob"],
    noise_prob: float = _DEFAULTS["noise_prob"],
    snr_range: Sequence[float] = _DEFAULTS["snr_range"],
    num_workers: int | None = None,
    overwrite: bool = False,
    mbrola_dir: str | os.PathLike[str] = MBROLA_DIR,
) -> dict[str, Any]:
    """Generates (or reuses) the MBROLA real-voice hierarchical corpus under ``root``.

    ``len(persons) * speakers_per_person`` speakers with ``sessions_per_speaker *
    utterances_per_session`` utterances each. In each family ``round(heldout_person_fraction *
    persons)`` persons are held out (at least one person stays for training);
    ``heldout_families`` (or ``num_heldout_families`` families of 2-4 persons drawn from the seed)
    are held out whole. Each held-out speaker gets up to ``trials_per_speaker`` target trials
    across sessions and as many non-targets.

    Every random draw is keyed by ``(seed, level, indices)``, and espeak-ng and mbrola are
    deterministic, so the bytes written depend on the arguments only, never on ``num_workers``.
    The corpus is built in a hidden sibling folder and renamed onto ``root`` when complete;
    a complete corpus with the same arguments is reused as is.

    Args:
      root: output folder (missing, empty, or holding a corpus made by this function).
      seed: the corpus seed.
      speakers_per_person: derived speakers per person (MBROLA database).
      sessions_per_speaker: sessions (microphone, register shift) per speaker.
      utterances_per_session: utterances per session.
      persons: MBROLA databases to use (default: every installed one of :data:`PERSONS`).
      heldout_person_fraction: fraction of each training family's persons held out.
      heldout_families: families held out whole (default: drawn, see ``num_heldout_families``).
      num_heldout_families: how many families to draw when ``heldout_families`` is None.
      trials_per_speaker: target (and non-target) trials per held-out speaker and list.
      english_prob: probability that an utterance uses the person's English voice, if any.
      vtl_warp_range: (low, high) vocal-tract warp ``alpha`` of a derived speaker (log-uniform).
      pitch_ratio_range: (low, high) F0 register ratio of a derived speaker (log-uniform).
      rate_range: (low, high) speaking-rate ratio of a derived speaker (log-uniform).
      tilt_range: (low, high) pre-emphasis coefficient ``beta`` (spectral tilt).
      session_f0_sd: std of the per-session log-F0 shift.
      utterance_f0_sd: std of the per-utterance log-F0 shift.
      utterance_rate_sd: std of the per-utterance log-rate shift.
      reverb_prob: probability of a synthetic RIR (RT60 0.2-0.8 s).
      noise_prob: probability of coloured noise at an SNR from ``snr_range``.
      snr_range: (low, high) dB.
      num_workers: processes (default: the usable CPUs; 0 or 1 = in process).
      overwrite: replace a corpus made with different arguments instead of raising.
      mbrola_dir: where the MBROLA databases are installed.

    Returns:
      The metadata (``root/metadata.json``): ``families``, ``persons``, ``speakers`` (name ->
      ``base`` = person, ``family``, ``split``, derivation parameters), ``splits``, ``trials``
      (per list: counts, ``pitch_only_eer``, ``cepstrum_eer``), ``summary``, ``args``.

    Raises:
      RuntimeError: espeak-ng, mbrola or the voices are missing (the message says how to
        install them), or a synthesis failed (the message names the voice and text).
      ValueError: an argument is out of range, or ``root`` holds something else.
    """
    root = Path(root)
    mbrola_dir = Path(mbrola_dir)
    missing = missing_tools(mbrola_dir)
    if missing:
        raise RuntimeError(
            f"cannot build the MBROLA corpus: missing {', '.join(missing)}; run "
            "`python scripts/make_mbrola_corpus.py --install` (as root: enables Debian contrib "
            "and non-free, then apt-get install espeak-ng mbrola mbrola-*)"
        )
    installed = available_persons(mbrola_dir)
    args = dict(
        seed=seed,
        speakers_per_person=speakers_per_person,
        sessions_per_speaker=sessions_per_speaker,
        utterances_per_session=utterances_per_session,
        persons=tuple(persons) if persons is not None else None,
        heldout_person_fraction=heldout_person_fraction,
        heldout_families=tuple(heldout_families) if heldout_families is not None else None,
        num_heldout_families=num_heldout_families,
        trials_per_speaker=trials_per_speaker,
        english_prob=english_prob,
        vtl_warp_range=tuple(vtl_warp_range),
        pitch_ratio_range=tuple(pitch_ratio_range),
        rate_range=tuple(rate_range),
        tilt_range=tuple(tilt_range),
        session_f0_sd=session_f0_sd,
        utterance_f0_sd=utterance_f0_sd,
        utterance_rate_sd=utterance_rate_sd,
        reverb_prob=reverb_prob,
        noise_prob=noise_prob,
        snr_range=tuple(snr_range),
    )
    _validate(args, installed)
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
    ):
        raise ValueError(f"num_workers={num_workers!r}: expected None or an integer >= 0")
    use = list(args["persons"]) if args["persons"] is not None else installed
    canonical = _canonical({**args, "persons": use})

    plan = _plan(args, use)
    return generated.build_atomically(
        root,
        canonical,
        GENERATOR_VERSION,
        FORMAT_NAME,
        overwrite,
        lambda tmp: _build(tmp, args, canonical, plan, num_workers, mbrola_dir),
    )


def _build(
    out: Path,
    args: dict[str, Any],
    canonical: dict[str, Any],
    plan: dict[str, Any],
    num_workers: int | None,
    mbrola_dir: Path,
) -> dict[str, Any]:
    rows, utts, trials = plan["rows"], plan["utts"], plan["trials"]
    in_trials = {path for lines in trials.values() for _, e, t in lines for path in (e, t)}
    jobs = [
        (row["index"], [(sess, rel, rel in in_trials) for rel, sess in utts[row["index"]]])
        for row in rows
    ]
    state = dict(seed=args["seed"], args=args, out=str(out), speakers=rows, mbrola_dir=mbrola_dir)
    per_speaker = generated.map_jobs(
        _render, jobs, _init_worker, state, num_workers, 4, desc=f"rendering {out.name} (speakers)"
    )
    results = [r for rs in per_speaker for r in rs]

    lengths, stats = generated.gather_results(results, utts)

    person_of = {r["name"]: r["person"] for r in rows}

    def persons(lines: Sequence[tuple[int, str, str]]) -> dict[str, Any]:
        return {"num_persons": len({person_of[e.split("/")[0]] for _, e, _ in lines})}

    trials_meta = generated.write_lists_and_trials(out, rows, utts, trials, stats, persons)

    durations = lengths / SAMPLE_RATE
    speakers_meta = {
        r["name"]: dict(
            base=r["person"],
            family=r["family"],
            split=r["split"],
            person=r["person"],
            sessions=r["sessions"],
            num_utterances=len(utts[r["index"]]),
            seconds=round(float(durations[r["index"]].sum()), 3),
            vtl_warp=round(r["vtl_warp"], 4),
            pitch_ratio=round(r["pitch_ratio"], 4),
            rate=round(r["rate"], 4),
            tilt=round(r["tilt"], 4),
        )
        for r in rows
    }
    persons_meta: dict[str, Any] = {}
    for r in rows:
        p = persons_meta.setdefault(
            r["person"],
            dict(
                family=r["family"], split=r["split"], english=r["person"] in _ENGLISH, speakers=[]
            ),
        )
        p["speakers"].append(r["name"])
    families_meta = {
        f: dict(persons=sorted(p for p, m in persons_meta.items() if m["family"] == f))
        for f in sorted({r["family"] for r in rows})
    }
    splits = {
        s: sorted(r["name"] for r in rows if r["split"] == s)
        for s in ("train", "heldout_person", "heldout_family")
    }
    meta = dict(
        format=FORMAT_NAME,
        version=GENERATOR_VERSION,
        args=canonical,
        sample_rate=SAMPLE_RATE,
        families=families_meta,
        persons=persons_meta,
        heldout_families=plan["heldout_families"],
        speakers=speakers_meta,
        splits=splits,
        trials=trials_meta,
        summary=dict(
            num_families=len(families_meta),
            num_persons=len(persons_meta),
            num_train_persons=sum(m["split"] == "train" for m in persons_meta.values()),
            **generated.summary(rows, lengths, SAMPLE_RATE, trials_meta),
        ),
    )
    io_utils.write_json(out / "metadata.json", meta)  # the completion marker: written last
    return meta
