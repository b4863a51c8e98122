"""A built-in speech-like corpus with a known speaker hierarchy, generated on any machine.

The generator is a source-filter synthesiser (numpy + ``scipy.signal``) whose parameters are
drawn down a four-level tree, so that the "hierarchy" claim of hyperbolic heads can be measured
against ground truth:

* **family** -- a phone inventory (vowel formant targets F1-F3, fricative noise bands, stop-burst
  bands, nasal formants), phonotactics (syllable shapes, speech rate) and a spectral-envelope
  class (formant bandwidths, spectral tilt). Families play the role of languages.
* **base voice** -- a vocal-tract length (every formant scaled by ``1 / vtl_scale``), an F0
  register, a voice quality (Rosenberg glottal open quotient, breathiness = aspiration noise,
  jitter, shimmer, extra spectral tilt), high formants F4/F5 and idiosyncratic per-vowel formant
  offsets. Base voices play the role of accent / gender / age groups.
* **speaker** -- a small perturbation of every base-voice parameter.
* **utterance** -- a random phone sequence with formant transitions, pauses, an F0 contour with
  declination, accents and per-session / per-utterance register shifts, a per-session microphone
  response and per-utterance equaliser, and optionally reverberation and additive noise.

Pitch is deliberately *not* a shortcut: F0 registers overlap across base voices (they are drawn
independently of vocal-tract length from one shared range) and each session and utterance shifts
the speaker's register. :func:`generate_corpus` measures this: it runs a pitch-only verifier
(median YIN F0 per utterance, score ``-|log F0_enrol - log F0_test|``) on every trial list and
stores its EER in ``metadata.json`` (36-42 % on the QUICKSTART lists), beside that of a
long-term-average-spectrum verifier (cosine of per-utterance mean cepstra, ~45-50 %): the
per-session microphone response masks the average spectrum, so neither shortcut works and a
model has to learn the speaker's formant pattern, vocal-tract length and voice quality.

The voices and the synthesiser live in :mod:`hamjax.data.source_filter` (re-exported here);
this module plans the corpus (hierarchy, splits, ids, trials), renders it in worker processes
and writes it atomically.

Layout written by :func:`generate_corpus` (VoxCeleb conventions)::

    root/wav/<spk>/<session>/<n>.wav   16 kHz 16-bit mono, spk like s0001, n like 00001
    root/metadata.json                 hierarchy, splits, generator arguments, summary
    root/train_list.txt                "spk path" lines, training speakers only
    root/all_list.txt                  "spk path" lines, every utterance
    root/trials/<name>.txt             "label enrol test" lines (1 = same speaker)

Paths in lists and trials are relative to ``root/wav``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal

from hamjax import io_utils
from hamjax.data import audio, generated
from hamjax.data.source_filter import (
    FamilyParams,
    VoiceParams,
    _mix_at_snr,
    _peaking,
    coloured_noise,
    sample_base_voice,
    sample_channel,
    sample_family,
    sample_random_voice,
    sample_speaker,
    synthesize_utterance,
    synthetic_rir,
    yin_f0,
)

__all__ = [
    "FORMAT_NAME",
    "GENERATOR_VERSION",
    "QUICKSTART",
    "TINY",
    "TRIAL_LISTS",
    "FamilyParams",
    "VoiceParams",
    "coloured_noise",
    "generate_corpus",
    "sample_base_voice",
    "sample_channel",
    "sample_family",
    "sample_random_voice",
    "sample_speaker",
    "synthesize_utterance",
    "synthetic_rir",
    "yin_f0",
]

GENERATOR_VERSION = 1
SAMPLE_RATE = audio.SAMPLE_RATE
FORMAT_NAME = "hamjax-synthetic"

# Sizes: ~100 training speakers, ~30-70 held out, ~5,000 utterances (see the quickstart recipe).
QUICKSTART: dict[str, Any] = dict(
    num_families=5,
    bases_per_family=4,
    speakers_per_base=8,
    sessions_per_speaker=3,
    utterances_per_session=10,
    heldout_base_fraction=0.25,
    heldout_speaker_fraction=0.25,
)
# A few seconds of generation; for tests.
TINY: dict[str, Any] = dict(
    num_families=2,
    bases_per_family=2,
    speakers_per_base=3,
    sessions_per_speaker=2,
    utterances_per_session=2,
    heldout_base_fraction=0.5,
    heldout_speaker_fraction=0.34,
    min_duration=1.0,
    max_duration=1.5,
    trials_per_speaker=4,
)

TRIAL_LISTS = ("heldout_speakers", "heldout_bases", "within_family")

# Seed-sequence domains: every random draw is keyed by (seed, domain, indices...), so a family's,
# speaker's or utterance's content does not depend on the corpus size or the worker count.
_FAMILY, _BASE, _SPEAKER, _UTTERANCE, _SESSION, _TRIALS, _SPLITS, _IDS = range(8)


# Shared with hamjax.data.mbrola (see hamjax.data.generated).
_rng = generated.seeded_rng
_eer = generated.baseline_eer
_utterance_stats = generated.utterance_stats


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

# Arguments that change the corpus (and are therefore compared when a corpus is reused).
_DEFAULTS: dict[str, Any] = dict(
    heldout_base_fraction=0.25,
    heldout_speaker_fraction=0.25,
    min_duration=2.0,
    max_duration=6.0,
    trials_per_speaker=20,
    reverb_prob=0.15,
    noise_prob=0.3,
    snr_range=(5.0, 30.0),
    session_f0_sd=0.08,
    utterance_f0_sd=0.10,
    sample_rate=SAMPLE_RATE,
)

_worker_state: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _worker_state.clear()
    _worker_state.update(state)


def _render(job: tuple[int, int, int, str, bool]) -> tuple[int, int, int, float, list[float]]:
    """Renders, channels and writes one utterance (in a worker); returns its length and stats."""
    spk, utt, session, relpath, want_stats = job
    st = _worker_state
    args, sr = st["args"], st["args"]["sample_rate"]
    family = st["families"][st["speaker_family"][spk]]
    voice = st["speakers"][spk]
    rng = _rng(st["seed"], _UTTERANCE, spk, utt)
    sess_rng = _rng(st["seed"], _SESSION, spk, session)
    session_shift = sess_rng.normal(0.0, args["session_f0_sd"])
    channel = sample_channel(sess_rng, sr)

    num_samples = int(round(rng.uniform(args["min_duration"], args["max_duration"]) * sr))
    shift = session_shift + rng.normal(0.0, args["utterance_f0_sd"])
    wav = synthesize_utterance(family, voice, rng, num_samples, f0_shift=shift, sample_rate=sr)
    eq = _peaking(
        float(np.exp(rng.uniform(np.log(300.0), np.log(4000.0)))), rng.uniform(-4, 4), 1.0, sr
    )
    wav = scipy.signal.sosfilt(np.concatenate([channel, eq]), wav)
    if rng.random() < args["reverb_prob"]:
        rir = synthetic_rir(rng, rng.uniform(0.2, 0.8), sr)
        wav = scipy.signal.fftconvolve(wav, rir)[:num_samples]
    if rng.random() < args["noise_prob"]:
        snr = rng.uniform(*args["snr_range"])
        wav = _mix_at_snr(wav, coloured_noise(rng, num_samples, rng.uniform(0.0, 2.0)), snr)
    # Recording level -32..-20 dBFS RMS, peaks kept below full scale.
    wav = wav * (10.0 ** (rng.uniform(-32.0, -20.0) / 20.0) / (np.sqrt(np.mean(wav**2)) + 1e-12))
    wav = (wav * min(1.0, 0.99 / (np.max(np.abs(wav)) + 1e-12))).astype(np.float32)
    audio.write_wav(Path(st["out"]) / "wav" / relpath, wav, sr)
    f0, cep = _utterance_stats(wav, sr) if want_stats else (float("nan"), [])
    return spk, utt, num_samples, f0, cep


def _validate(args: dict[str, Any]) -> None:
    for name in (
        "num_families",
        "bases_per_family",
        "speakers_per_base",
        "sessions_per_speaker",
        "utterances_per_session",
        "trials_per_speaker",
    ):
        v = args[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}={v!r}: expected an integer >= 1")
    if args["sessions_per_speaker"] * args["utterances_per_session"] < 2:
        raise ValueError(
            f"sessions_per_speaker * utterances_per_session = "
            f"{args['sessions_per_speaker'] * args['utterances_per_session']}: expected >= 2 "
            "(target trials need two utterances per speaker)"
        )
    for name in ("heldout_base_fraction", "heldout_speaker_fraction"):
        if not 0.0 <= args[name] < 1.0:
            raise ValueError(f"{name}={args[name]!r}: expected a fraction in [0, 1)")
    for name in ("reverb_prob", "noise_prob"):
        if not 0.0 <= args[name] <= 1.0:
            raise ValueError(f"{name}={args[name]!r}: expected a probability in [0, 1]")
    for name in ("session_f0_sd", "utterance_f0_sd"):
        if not 0.0 <= args[name] <= 1.0:
            raise ValueError(f"{name}={args[name]!r}: expected a log-F0 std in [0, 1]")
    if not 0.25 <= args["min_duration"] <= args["max_duration"] <= 120.0:
        raise ValueError(
            f"min_duration={args['min_duration']!r}, max_duration={args['max_duration']!r}: "
            "expected 0.25 <= min_duration <= max_duration <= 120 seconds"
        )
    snr = args["snr_range"]
    if len(snr) != 2 or not -20.0 <= snr[0] <= snr[1] <= 100.0:
        raise ValueError(
            f"snr_range={snr!r}: expected (low, high) dB with -20 <= low <= high <= 100"
        )
    if (
        isinstance(args["sample_rate"], bool)
        or not isinstance(args["sample_rate"], int)
        or args["sample_rate"] < 11025
    ):
        raise ValueError(f"sample_rate={args['sample_rate']!r}: expected an integer >= 11025 Hz")
    if (
        not isinstance(args["seed"], (int, np.integer))
        or isinstance(args["seed"], bool)
        or args["seed"] < 0
    ):
        raise ValueError(f"seed={args['seed']!r}: expected a non-negative integer")


def _plan(args: dict[str, Any]) -> dict[str, Any]:
    """The hierarchy, the splits, ids and the trial lists: everything but the audio."""
    seed = args["seed"]
    nf, nb, ns = args["num_families"], args["bases_per_family"], args["speakers_per_base"]
    n_hb = int(round(args["heldout_base_fraction"] * nb))
    n_hs = int(round(args["heldout_speaker_fraction"] * ns))
    if n_hb >= nb:
        raise ValueError(
            f"heldout_base_fraction={args['heldout_base_fraction']}: holds out all "
            f"{nb} base voices of each family; expected fewer than bases_per_family"
        )
    if n_hs >= ns:
        raise ValueError(
            f"heldout_speaker_fraction={args['heldout_speaker_fraction']}: holds out all "
            f"{ns} speakers of each base voice; expected fewer than speakers_per_base"
        )
    families = [sample_family(_rng(seed, _FAMILY, f)) for f in range(nf)]
    num_spk = nf * nb * ns
    id_perm = _rng(seed, _IDS).permutation(num_spk)
    width = max(4, len(str(num_spk)))
    speakers, spk_family, spk_rows = [], [], []
    bases_meta: dict[str, Any] = {}
    for f in range(nf):
        heldout_bases = set(_rng(seed, _SPLITS, f).permutation(nb)[:n_hb].tolist())
        for b in range(nb):
            base = sample_base_voice(families[f], _rng(seed, _BASE, f, b))
            base_name = f"f{f + 1:02d}b{b + 1:02d}"
            heldout_spk = set(_rng(seed, _SPLITS, f, b).permutation(ns)[:n_hs].tolist())
            bases_meta[base_name] = dict(
                family=f"f{f + 1:02d}",
                split="heldout_base" if b in heldout_bases else "train",
                vtl_scale=round(base.vtl_scale, 4),
                f0_hz=round(base.f0_hz, 2),
                speakers=[],
            )
            for s in range(ns):
                idx = len(speakers)
                voice = sample_speaker(base, _rng(seed, _SPEAKER, f, b, s))
                speakers.append(voice)
                spk_family.append(f)
                if b in heldout_bases:
                    split = "heldout_base"
                elif s in heldout_spk:
                    split = "heldout_speaker"
                else:
                    split = "train"
                name = f"s{id_perm[idx] + 1:0{width}d}"
                bases_meta[base_name]["speakers"].append(name)
                spk_rows.append(
                    dict(
                        index=idx,
                        name=name,
                        base=base_name,
                        family=f"f{f + 1:02d}",
                        split=split,
                        voice=voice,
                    )
                )
    # Utterances: VoxCeleb-like 11-character session ids, drawn per speaker.
    n_sess, n_utt = args["sessions_per_speaker"], args["utterances_per_session"]
    utts = generated.plan_utterances(spk_rows, lambda i: _rng(seed, _IDS, i), n_sess, n_utt)
    trials = generated.sample_trial_lists(
        spk_rows,
        {
            "heldout_speakers": ("heldout_speaker", None),
            "heldout_bases": ("heldout_base", None),
            "within_family": (None, "index"),
        },
        utts,
        n_sess,
        args["trials_per_speaker"],
        lambda t: _rng(seed, _TRIALS, t),
    )
    return dict(
        families=families,
        speakers=speakers,
        spk_family=spk_family,
        spk_rows=spk_rows,
        bases=bases_meta,
        utts=utts,
        trials=trials,
    )


def _canonical_args(args: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(
        json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()})
    )


def _load_metadata(root: Path) -> dict[str, Any] | None:
    return generated.load_metadata(root, FORMAT_NAME)


def generate_corpus(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_families: int,
    bases_per_family: int,
    speakers_per_base: int,
    sessions_per_speaker: int,
    utterances_per_session: int,
    heldout_base_fraction: float = _DEFAULTS["heldout_base_fraction"],
    heldout_speaker_fraction: float = _DEFAULTS["heldout_speaker_fraction"],
    min_duration: float = _DEFAULTS["min_duration"],
    max_duration: float = _DEFAULTS["max_duration"],
    trials_per_speaker: int = _DEFAULTS["trials_per_speaker"],
    reverb_prob: float = _DEFAULTS["reverb_prob"],
    noise_prob: float = _DEFAULTS["noise_prob"],
    snr_range: Sequence[float] = _DEFAULTS["snr_range"],
    session_f0_sd: float = _DEFAULTS["session_f0_sd"],
    utterance_f0_sd: float = _DEFAULTS["utterance_f0_sd"],
    sample_rate: int = _DEFAULTS["sample_rate"],
    num_workers: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generates (or reuses) a synthetic hierarchical speaker corpus under ``root``.

    ``num_families * bases_per_family * speakers_per_base`` speakers, each with
    ``sessions_per_speaker * utterances_per_session`` utterances. In each family
    ``round(heldout_base_fraction * bases_per_family)`` base voices are held out entirely
    (split ``heldout_base``); in every other base ``round(heldout_speaker_fraction *
    speakers_per_base)`` speakers are held out (split ``heldout_speaker``); the rest train.

    Trial lists (each speaker gets up to ``trials_per_speaker`` target trials across sessions and
    as many non-target trials, so the lists are balanced; no training speaker appears):

    * ``heldout_speakers``: unseen speakers of seen base voices;
    * ``heldout_bases``: speakers of unseen base voices;
    * ``within_family``: all held-out speakers, non-targets always from the same family (hard).

    A list that would be empty (e.g. a fraction of 0) is not written.

    Every random draw is keyed by ``(seed, level, indices)`` through ``np.random.SeedSequence``,
    so the bytes written depend on the arguments only, never on ``num_workers``; and a family's,
    speaker's or utterance's content does not change when the corpus grows.

    The corpus is built in a hidden sibling folder ``.<root>.tmp-*`` and renamed onto ``root``
    when complete (``metadata.json`` last), so ``root`` is never seen half-written. If ``root``
    already holds a complete corpus with the same arguments it is reused as is.

    Args:
      root: output folder (must not exist, be empty, or hold a corpus made by this function).
      seed: the corpus seed.
      num_families: families (phone inventories).
      bases_per_family: base voices per family.
      speakers_per_base: speakers per base voice.
      sessions_per_speaker: sessions (channel, register shift) per speaker.
      utterances_per_session: utterances per session.
      heldout_base_fraction: fraction of each family's base voices held out, in [0, 1).
      heldout_speaker_fraction: fraction of each seen base's speakers held out, in [0, 1).
      min_duration: shortest utterance in seconds (durations are uniform in the range).
      max_duration: longest utterance in seconds.
      trials_per_speaker: target (and non-target) trials per held-out speaker and list.
      reverb_prob: probability that an utterance is reverberated (synthetic RIR, RT60 0.2-0.8 s).
      noise_prob: probability that coloured noise is added at an SNR from ``snr_range``.
      snr_range: (low, high) SNR in dB of that noise.
      session_f0_sd: std of the per-session log-F0 register shift.
      utterance_f0_sd: std of the per-utterance log-F0 register shift.
      sample_rate: output rate in Hz.
      num_workers: processes rendering audio (default: the usable CPUs; 0 or 1 = in process).
      overwrite: replace an existing corpus made with different arguments instead of raising.

    Returns:
      The corpus metadata (the content of ``root/metadata.json``): ``families``, ``bases``,
      ``speakers`` (name -> base, family, split, ...), ``splits``, ``trials`` (per list: path,
      counts, ``pitch_only_eer``, ``cepstrum_eer``), ``summary`` and ``args``.

    Raises:
      ValueError: an argument is out of range (the message names it), or ``root`` holds
        something else (another corpus without ``overwrite``, or files that are not a corpus).
    """
    root = Path(root)
    args = dict(
        seed=seed,
        num_families=num_families,
        bases_per_family=bases_per_family,
        speakers_per_base=speakers_per_base,
        sessions_per_speaker=sessions_per_speaker,
        utterances_per_session=utterances_per_session,
        heldout_base_fraction=heldout_base_fraction,
        heldout_speaker_fraction=heldout_speaker_fraction,
        min_duration=min_duration,
        max_duration=max_duration,
        trials_per_speaker=trials_per_speaker,
        reverb_prob=reverb_prob,
        noise_prob=noise_prob,
        snr_range=tuple(snr_range),
        session_f0_sd=session_f0_sd,
        utterance_f0_sd=utterance_f0_sd,
        sample_rate=sample_rate,
    )
    _validate(args)
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
    ):
        raise ValueError(f"num_workers={num_workers!r}: expected None or an integer >= 0")
    canonical = _canonical_args(args)

    plan = _plan(args)
    return generated.build_atomically(
        root,
        canonical,
        GENERATOR_VERSION,
        FORMAT_NAME,
        overwrite,
        lambda tmp: _build(tmp, args, canonical, plan, num_workers),
    )


def _build(
    out: Path,
    args: dict[str, Any],
    canonical: dict[str, Any],
    plan: dict[str, Any],
    num_workers: int | None,
) -> dict[str, Any]:
    rows, utts, trials = plan["spk_rows"], plan["utts"], plan["trials"]
    in_trials = {path for lines in trials.values() for _, e, t in lines for path in (e, t)}
    jobs = [
        (row["index"], k, sess, rel, rel in in_trials)
        for row in rows
        for k, (rel, sess) in enumerate(utts[row["index"]])
    ]
    state = dict(
        seed=args["seed"],
        args=args,
        out=str(out),
        families=plan["families"],
        speakers=plan["speakers"],
        speaker_family=plan["spk_family"],
    )
    results = generated.map_jobs(
        _render,
        jobs,
        _init_worker,
        state,
        num_workers,
        desc=f"synthesising {out.name} (utterances)",
    )

    sr = args["sample_rate"]
    lengths, stats = generated.gather_results(results, utts)

    trials_meta = generated.write_lists_and_trials(out, rows, utts, trials, stats)

    durations = lengths / sr
    speakers_meta = {}
    for r in rows:
        v = r["voice"]
        speakers_meta[r["name"]] = dict(
            base=r["base"],
            family=r["family"],
            split=r["split"],
            sessions=r["sessions"],
            num_utterances=len(utts[r["index"]]),
            seconds=round(float(durations[r["index"]].sum()), 3),
            vtl_scale=round(v.vtl_scale, 4),
            f0_hz=round(v.f0_hz, 2),
            open_quotient=round(v.open_quotient, 4),
            breathiness=round(v.breathiness, 4),
        )
    families_meta = {}
    for f, fam in enumerate(plan["families"]):
        families_meta[f"f{f + 1:02d}"] = dict(
            bases=[b for b, m in plan["bases"].items() if m["family"] == f"f{f + 1:02d}"],
            num_vowels=len(fam.vowels),
            num_fricatives=len(fam.fricatives),
        )
    splits = {
        s: sorted(r["name"] for r in rows if r["split"] == s)
        for s in ("train", "heldout_speaker", "heldout_base")
    }
    meta = dict(
        format=FORMAT_NAME,
        version=GENERATOR_VERSION,
        args=canonical,
        sample_rate=sr,
        families=families_meta,
        bases=plan["bases"],
        speakers=speakers_meta,
        splits=splits,
        trials=trials_meta,
        summary=dict(
            num_families=len(families_meta),
            num_bases=len(plan["bases"]),
            **generated.summary(rows, lengths, sr, trials_meta),
        ),
    )
    io_utils.write_json(out / "metadata.json", meta)  # the completion marker: written last
    return meta
