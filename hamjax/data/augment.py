"""Waveform augmentation: reverberation, noise, music and babble, from folders or built in.

The authors' scheme (the ECAPA-TDNN recipe of ``voxceleb_trainer``) feeds every training crop
twice: clean, and with *one* augmentation drawn uniformly from

* ``reverb`` -- convolution with a room impulse response (SLR28 ``simulated_rirs``);
* ``noise``  -- one MUSAN ``noise`` file at an SNR of 0-15 dB;
* ``music``  -- one MUSAN ``music`` file at 5-15 dB;
* ``babble`` -- 3-8 MUSAN ``speech`` files, each at 13-20 dB.

WeSpeaker's scheme augments a crop with probability ``p`` instead (the pipeline decides which
scheme; this module only transforms one waveform). The additive kinds scale a source ``n`` so that

.. math::
    \\mathrm{SNR} = 10 \\log_{10} \\frac{\\overline{x^2}}{\\overline{(g n)^2}}, \\qquad
    g = \\sqrt{\\overline{x^2} / (\\overline{n^2}\\, 10^{\\mathrm{SNR}/10})},

over the crop ``x`` and the equally long noise segment (a random window of the source file,
looped when the file is shorter). Reverberation aligns the RIR's direct path (its largest
sample) with sample 0 and gives it unit gain, so the dry signal keeps its timing and level and
the output is ``(x * h)[:S]``.

Sources come from a MUSAN-layout folder (``noise/``, ``music/``, ``speech/``, ``.wav`` at any
depth) and an RIR folder (``simulated_rirs/{smallroom,mediumroom,largeroom}/**/*.wav``, or any
folder of ``.wav`` RIRs); with none given (``synthetic=True``) the augmenter builds its own
deterministically in memory: exponentially decaying noise RIRs with an RT60 from ``rt60``,
coloured noise with a random ``1/f^a`` slope, tonal "music" (harmonic notes of a random scale)
and babble from the voices of :mod:`hamjax.data.source_filter`. So the default runs on any machine.

An :class:`Augmenter` is picklable for grain worker processes: it carries file lists and the
config; audio is read lazily in each process (a window of a long file with ``soundfile``, whole
short files kept in a bounded LRU cache) and the built-in babble voices and music clips are made
once per process on first use.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
import soundfile as sf

from hamjax.data import audio, source_filter

KINDS = ("reverb", "noise", "music", "babble")
MUSAN_FOLDERS = {"noise": "noise", "music": "music", "babble": "speech"}
RIR_ROOMS = ("smallroom", "mediumroom", "largeroom")
# Keys of the trainer's ``data.augment`` config section that belong to the pipeline, not here.
_PIPELINE_KEYS = frozenset({"enabled", "scheme", "prob", "musan_root", "rir_root"})


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What an :class:`Augmenter` draws from (defaults: the authors' recipe).

    Attributes:
      kinds: augmentation types to choose from, a subset of :data:`KINDS`.
      weights: relative probability of each kind (``None``: uniform, as the authors).
      snr_noise: (low, high) SNR in dB of ``noise``.
      snr_music: (low, high) SNR in dB of ``music``.
      snr_speech: (low, high) SNR in dB of each ``babble`` talker.
      babble_speakers: (low, high) number of babble talkers, inclusive.
      rt60: (low, high) reverberation time in seconds of the built-in RIRs.
      synthetic: use built-in sources for kinds whose folder is not given; when False a kind
        without a folder is an error.
      num_builtin_clips: size of each built-in pool: babble voices (one 6 s utterance each)
        and music clips (8 s each), made once per process on first use.
      cache_mb: per-process budget for whole source files kept in memory.
    """

    kinds: tuple[str, ...] = KINDS
    weights: tuple[float, ...] | None = None
    snr_noise: tuple[float, float] = (0.0, 15.0)
    snr_music: tuple[float, float] = (5.0, 15.0)
    snr_speech: tuple[float, float] = (13.0, 20.0)
    babble_speakers: tuple[int, int] = (3, 8)
    rt60: tuple[float, float] = (0.2, 1.0)
    synthetic: bool = True
    num_builtin_clips: int = 24
    cache_mb: float = 256.0

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(f"augment.kinds={self.kinds!r}: expected distinct names from {KINDS}")
        object.__setattr__(self, "kinds", kinds)
        if self.weights is not None:
            w = tuple(float(x) for x in self.weights)
            if len(w) != len(kinds) or any(x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(
                    f"augment.weights={self.weights!r}: expected {len(kinds)} non-negative "
                    f"numbers (one per kind of {kinds}) with a positive sum"
                )
            object.__setattr__(self, "weights", w)
        for name in ("snr_noise", "snr_music", "snr_speech", "rt60"):
            lo_hi = tuple(float(x) for x in getattr(self, name))
            if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1] or not np.all(np.isfinite(lo_hi)):
                raise ValueError(f"augment.{name}={getattr(self, name)!r}: expected (low, high)")
            object.__setattr__(self, name, lo_hi)
        if not 0.0 < self.rt60[0]:
            raise ValueError(f"augment.rt60={self.rt60!r}: expected positive seconds")
        lo, hi = (int(x) for x in self.babble_speakers)
        if not 1 <= lo <= hi:
            raise ValueError(
                f"augment.babble_speakers={self.babble_speakers!r}: expected 1 <= low <= high"
            )
        object.__setattr__(self, "babble_speakers", (lo, hi))
        if int(self.num_builtin_clips) < 1:
            raise ValueError(f"augment.num_builtin_clips={self.num_builtin_clips!r}: expected >= 1")
        if not self.cache_mb >= 0:
            raise ValueError(f"augment.cache_mb={self.cache_mb!r}: expected >= 0")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | Any | None) -> AugmentConfig:
        """Builds a config from a dict or an ``ml_collections.ConfigDict`` (``data.augment``).

        The pipeline's own keys (``enabled``, ``scheme``, ``prob``, ``musan_root``,
        ``rir_root``) are ignored; any other unknown key is an error naming it.
        """
        if config is None:
            return cls()
        if isinstance(config, AugmentConfig):
            return config
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        if not isinstance(config, Mapping):
            raise ValueError(f"augment config {config!r}: expected a mapping or AugmentConfig")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields - _PIPELINE_KEYS)
        if unknown:
            raise ValueError(
                f"augment config: unknown key(s) {unknown}; expected some of {sorted(fields)}"
            )
        return cls(**{k: v for k, v in config.items() if k in fields})


def _wav_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())


def musan_files(musan_dir: str | os.PathLike[str], kinds: Sequence[str]) -> dict[str, list[str]]:
    """Lists the ``.wav`` files (any depth) of the MUSAN sub-folders that ``kinds`` need.

    Raises:
      ValueError: ``musan_dir`` or a needed sub-folder is missing or holds no ``.wav`` file.
    """
    root = Path(musan_dir).expanduser()
    layout = "expected the MUSAN layout <dir>/{noise,music,speech}/**/*.wav"
    if not root.is_dir():
        raise ValueError(f"musan_dir={str(root)!r}: no such folder; {layout}")
    out = {}
    for kind in kinds:
        if kind not in MUSAN_FOLDERS:
            continue
        sub = root / MUSAN_FOLDERS[kind]
        files = _wav_files(sub) if sub.is_dir() else []
        if not files:
            raise ValueError(
                f"{sub}: {'no .wav files' if sub.is_dir() else 'missing'} (needed for "
                f"augmentation kind {kind!r}); {layout}"
            )
        out[kind] = files
    return out


def rir_files(rir_dir: str | os.PathLike[str]) -> list[str]:
    """Lists the RIR ``.wav`` files of an SLR28-style folder.

    Accepts ``RIRS_NOISES`` (holding ``simulated_rirs/``), ``simulated_rirs`` itself (holding
    ``smallroom/``, ``mediumroom/``, ``largeroom/``) or any folder of ``.wav`` RIRs.

    Raises:
      ValueError: the folder is missing or holds no ``.wav`` file.
    """
    root = Path(rir_dir).expanduser()
    layout = "expected SLR28's simulated_rirs/{smallroom,mediumroom,largeroom}/**/*.wav"
    if not root.is_dir():
        raise ValueError(f"rir_dir={str(root)!r}: no such folder; {layout}")
    if (root / "simulated_rirs").is_dir():
        root = root / "simulated_rirs"
    rooms = [root / r for r in RIR_ROOMS if (root / r).is_dir()]
    files = [f for r in rooms for f in _wav_files(r)] if rooms else _wav_files(root)
    if not files:
        raise ValueError(f"rir_dir={str(root)!r}: no .wav files; {layout}")
    return files


class Augmenter:
    """Applies one random augmentation to a waveform (numpy, for grain worker transforms).

    Args:
      config: an :class:`AugmentConfig`, a mapping of its fields, or the trainer's
        ``data.augment`` ``ConfigDict`` (``None``: the authors' defaults).
      musan_dir: a MUSAN-layout folder, or None for built-in noise, music and babble.
      rir_dir: an SLR28 RIR folder, or None for built-in synthetic RIRs.
      seed: seeds the built-in babble voices (the per-call randomness comes from ``rng``).

    Raises:
      ValueError: a folder is missing / empty (naming it and the expected layout), or a kind
        has no source (no folder and ``synthetic=False``).

    Example:
      >>> aug = Augmenter({"kinds": ("noise",), "snr_noise": (5.0, 5.0)})
      >>> x = np.sin(np.linspace(0, 800, 16000)).astype(np.float32)
      >>> y, info = aug.augment(x, np.random.default_rng(0), return_info=True)
      >>> info["kind"], round(info["snr_db"][0], 1), y.shape
      ('noise', 5.0, (16000,))
    """

    def __init__(
        self,
        config: AugmentConfig | Mapping[str, Any] | Any | None = None,
        musan_dir: str | os.PathLike[str] | None = None,
        rir_dir: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.config = AugmentConfig.from_mapping(config)
        self.seed = int(seed)
        kinds = self.config.kinds
        self.files: dict[str, list[str]] = {}
        if musan_dir is not None and str(musan_dir):
            self.files.update(musan_files(musan_dir, kinds))
        if rir_dir is not None and str(rir_dir) and "reverb" in kinds:
            self.files["reverb"] = rir_files(rir_dir)
        missing = [k for k in kinds if k not in self.files]
        if missing and not self.config.synthetic:
            needs = sorted({"rir_dir" if k == "reverb" else "musan_dir" for k in missing})
            raise ValueError(
                f"augmentation kinds {missing} have no source: give {' and '.join(needs)} "
                "or set augment.synthetic=True"
            )
        probs = (
            np.ones(len(kinds)) if self.config.weights is None else np.array(self.config.weights)
        )
        self._probs = probs / probs.sum()
        self._reset_caches()

    # -- pickling: caches are per process, rebuilt lazily -------------------------------------
    def _reset_caches(self) -> None:
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._cache_bytes = 0
        self._info: dict[str, tuple[int, int]] = {}
        self._pools: dict[str, list[np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_cache", "_cache_bytes", "_info", "_pools"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def __repr__(self) -> str:
        src = {
            k: (f"{len(v)} files" if k in self.files else "built-in")
            for k, v in ((k, self.files.get(k, [])) for k in self.config.kinds)
        }
        return f"Augmenter({src}, seed={self.seed})"

    # -- sources ----------------------------------------------------------------------------
    def _whole(self, path: str) -> np.ndarray:
        """A whole file at 16 kHz, from the LRU cache when it fits the budget."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        wav = audio.load_audio(path)
        budget = self.config.cache_mb * 2**20
        if wav.nbytes <= budget:
            self._cache[path] = wav
            self._cache_bytes += wav.nbytes
            while self._cache_bytes > budget:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return wav

    def _segment(self, path: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """A random ``num_samples`` window of a file (looped when the file is shorter)."""
        if path not in self._info:
            try:
                info = sf.info(path)
            except Exception as e:  # noqa: BLE001 - soundfile raises several types
                raise audio.AudioError(f"{path}: not a readable audio file ({e})") from e
            self._info[path] = (int(info.frames), int(info.samplerate))
        frames, rate = self._info[path]
        if rate == audio.SAMPLE_RATE and frames > num_samples and path not in self._cache:
            # A long file: read just the window instead of the whole (MUSAN music is minutes).
            start = int(rng.integers(0, frames - num_samples + 1))
            try:
                x, _ = sf.read(
                    path, start=start, frames=num_samples, dtype="float32", always_2d=True
                )
            except Exception as e:  # noqa: BLE001
                raise audio.AudioError(f"{path}: could not read samples {start}+ ({e})") from e
            if x.shape[0] != num_samples:
                raise audio.AudioError(f"{path}: read {x.shape[0]} of {num_samples} samples")
            return x.mean(axis=1)
        return _crop_or_loop(self._whole(path), num_samples, rng)

    def _pool(self, kind: str) -> list[np.ndarray]:
        """The built-in clips of ``kind`` ("babble" or "music"), made on first use."""
        if kind not in self._pools:
            pool = []
            for i in range(self.config.num_builtin_clips):
                rng = np.random.default_rng(
                    np.random.SeedSequence([self.seed, KINDS.index(kind), i])
                )
                if kind == "babble":
                    family, voice = source_filter.sample_random_voice(rng)
                    clip = source_filter.synthesize_utterance(
                        family, voice, rng, 6 * audio.SAMPLE_RATE
                    )
                else:
                    clip = _tonal_music(rng, 8 * audio.SAMPLE_RATE)
                pool.append(clip)
            self._pools[kind] = pool
        return self._pools[kind]

    def _source(
        self, kind: str, num_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, str]:
        """One additive source segment ``[num_samples]`` and its name."""
        files = self.files.get(kind)
        if files:
            path = files[int(rng.integers(len(files)))]
            return self._segment(path, num_samples, rng), path
        if kind == "noise":
            exponent = rng.uniform(0.0, 2.0)
            x = source_filter.coloured_noise(rng, num_samples, exponent)
            # Slow amplitude modulation: real noises are rarely stationary.
            mod = 1.0 + rng.uniform(0.0, 0.8) * np.sin(
                2 * np.pi * rng.uniform(0.1, 3.0) * np.arange(num_samples) / audio.SAMPLE_RATE
                + rng.uniform(0, 2 * np.pi)
            )
            return (x * mod).astype(np.float32), f"synthetic:noise(1/f^{exponent:.2f})"
        pool = self._pool(kind)
        i = int(rng.integers(len(pool)))
        return _crop_or_loop(pool[i], num_samples, rng), f"synthetic:{kind}{i}"

    def _rir(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        files = self.files.get("reverb")
        if files:
            path = files[int(rng.integers(len(files)))]
            return self._whole(path), path
        rt60 = rng.uniform(*self.config.rt60)
        return source_filter.synthetic_rir(rng, rt60), f"synthetic:rir(rt60={rt60:.2f})"

    # -- the transform ------------------------------------------------------------------------
    def augment(
        self, wav: np.ndarray, rng: np.random.Generator, *, return_info: bool = False
    ) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
        """Returns ``wav`` with one augmentation applied.

        Args:
          wav: ``[S]`` float waveform at 16 kHz.
          rng: the example's generator; the kind, source, window and SNR all come from it.
          return_info: also return ``{"kind", "sources", "snr_db", "gain"}`` (``snr_db`` a
            list, one per additive source, empty for reverb; ``gain`` < 1 when the result was
            scaled down to stay in [-1, 1]).

        Returns:
          ``[S]`` float32 (and the info dict). If the result would exceed [-1, 1] it is
          scaled down as a whole (the SNR is unchanged).

        Raises:
          ValueError: ``wav`` is not a non-empty finite 1-D array, or ``rng`` is not a
            ``numpy.random.Generator``.
        """
        x = np.asarray(wav)
        if x.ndim != 1 or x.size == 0 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"wav: shape {x.shape} dtype {x.dtype}, expected a non-empty float [S]"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("wav: contains non-finite samples")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: got {type(rng).__name__}, expected numpy.random.Generator")
        x = x.astype(np.float32, copy=False)
        n = x.shape[0]
        kind = self.config.kinds[int(rng.choice(len(self.config.kinds), p=self._probs))]
        info: dict[str, Any] = {"kind": kind, "sources": [], "snr_db": []}
        if kind == "reverb":
            rir, name = self._rir(rng)
            info["sources"].append(name)
            out = reverberate(x, rir)
        else:
            count = 1
            if kind == "babble":
                count = int(
                    rng.integers(self.config.babble_speakers[0], self.config.babble_speakers[1] + 1)
                )
            snr_range = {
                "noise": self.config.snr_noise,
                "music": self.config.snr_music,
                "babble": self.config.snr_speech,
            }[kind]
            total = np.zeros(n, np.float64)
            p_clean = float(np.mean(x.astype(np.float64) ** 2))
            for _ in range(count):
                src, name = self._source(kind, n, rng)
                snr = float(rng.uniform(*snr_range))
                total += scale_to_snr(src, p_clean, snr)
                info["sources"].append(name)
                info["snr_db"].append(snr)
            out = x + total
        # Waveforms live in [-1, 1]: scale the whole result down (the SNR is unchanged).
        peak = float(np.max(np.abs(out)))
        info["gain"] = 1.0 / peak if peak > 1.0 else 1.0
        out = out * info["gain"]
        out = out.astype(np.float32)
        return (out, info) if return_info else out

    __call__ = augment


def scale_to_snr(noise: np.ndarray, clean_power: float, snr_db: float) -> np.ndarray:
    """``noise`` scaled so that ``10 log10(clean_power / mean(scaled**2)) == snr_db``.

    A silent noise stays silent (nothing to scale).
    """
    noise = np.asarray(noise, np.float64)
    p_noise = float(np.mean(noise**2))
    if p_noise <= 0.0:
        return noise
    return noise * np.sqrt(clean_power / (p_noise * 10.0 ** (snr_db / 10.0)))


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolves ``wav [S]`` with ``rir [R]``, keeping the dry signal's timing and level.

    The RIR is cut to start at its direct path (its largest absolute sample) and scaled so that
    sample is 1: the output's direct component is exactly ``wav``; the output is the first
    ``S`` samples of the convolution.

    Raises:
      ValueError: the RIR is empty, silent or not finite.
    """
    rir = np.asarray(rir, np.float64).reshape(-1)
    if rir.size == 0 or not np.all(np.isfinite(rir)) or not np.any(rir):
        raise ValueError(f"rir: {rir.size} samples, expected a non-silent finite impulse response")
    direct = int(np.argmax(np.abs(rir)))
    rir = rir[direct:] / rir[direct]
    return scipy.signal.fftconvolve(np.asarray(wav, np.float64), rir)[: len(wav)]


def _crop_or_loop(src: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``num_samples`` window of ``src``, which is looped when shorter."""
    if src.shape[0] < num_samples:
        src = np.tile(src, -(-num_samples // src.shape[0]) + 1)
    start = int(rng.integers(0, src.shape[0] - num_samples + 1))
    return src[start : start + num_samples]


def _tonal_music(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Built-in "music": notes of a random scale, each a decaying harmonic tone, some chords.

    Returns:
      ``[num_samples]`` float32 with unit RMS.
    """
    sr = audio.SAMPLE_RATE
    root = 110.0 * 2.0 ** rng.uniform(0.0, 2.0)
    scale = (
        np.array([0, 2, 4, 5, 7, 9, 11]) if rng.random() < 0.5 else np.array([0, 2, 3, 5, 7, 8, 10])
    )
    out = np.zeros(num_samples)
    pos = 0
    harmonics = np.arange(1, 7)
    amps = rng.uniform(0.3, 1.0, 6) / harmonics ** rng.uniform(0.5, 1.5)
    while pos < num_samples:
        dur = int(rng.uniform(0.15, 0.6) * sr)
        t = np.arange(min(dur + sr // 4, num_samples - pos)) / sr  # notes ring past their slot
        env = np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(2.0, 8.0))
        for _ in range(int(rng.integers(1, 4))):  # a note or a chord
            f0 = root * 2.0 ** ((scale[rng.integers(7)] + 12 * rng.integers(0, 2)) / 12.0)
            ks = harmonics[harmonics * f0 < 0.45 * sr]
            tone = np.sin(2 * np.pi * f0 * np.outer(t, ks) + rng.uniform(0, 2 * np.pi, len(ks)))
            out[pos : pos + len(t)] += env * (tone @ amps[: len(ks)])
        pos += dur
    return (out / (np.sqrt(np.mean(out**2)) + 1e-12)).astype(np.float32)
