"""Reading and writing 16 kHz mono audio, with errors that name the file.

Reading goes through soundfile (WAV/FLAC/OGG...) and falls back to librosa's audioread
backend for other containers; resampling calls soxr directly (what ``librosa.resample`` uses
for ``res_type="soxr_hq"``, without paying librosa's numba start-up on the first call). Every
failure raises :class:`AudioError` naming the file and what was expected.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hamjax import io_utils

SAMPLE_RATE = 16_000
# Containers libsndfile reads itself (WAV, FLAC, OGG, MP3 with recent libsndfile, ...).
_SOUNDFILE_FORMATS = frozenset(sf.available_formats())


class AudioError(ValueError):
    """An audio file could not be used: unreadable, empty, or not audio."""


def load_audio(
    path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE, min_samples: int = 1
) -> np.ndarray:
    """Loads ``path`` as mono float32 in [-1, 1] at ``sample_rate``.

    Stereo (or more channels) is averaged to mono; other rates are resampled.

    Args:
      path: an audio file.
      sample_rate: the rate to return.
      min_samples: fewer samples than this (after resampling) is an error.

    Returns:
      ``[samples]`` float32.

    Raises:
      AudioError: the file is missing, unreadable, not audio, or shorter than ``min_samples``.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
    except Exception as sf_err:  # noqa: BLE001 - soundfile raises several types
        if path.suffix.lstrip(".").upper() in _SOUNDFILE_FORMATS:
            # soundfile reads this container natively: failing here means the file is broken,
            # and audioread would only fail again, slower and with a vaguer message.
            raise AudioError(
                f"{path}: not a readable audio file (broken {path.suffix.lstrip('.').upper()}: "
                f"{sf_err})"
            ) from sf_err
        try:
            import librosa  # only for containers soundfile cannot read (e.g. m4a via audioread)

            # librosa warns that it is falling back to audioread; the AudioError says it all.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wav, rate = librosa.load(str(path), sr=None, mono=True)
        except Exception as lr_err:  # noqa: BLE001
            raise AudioError(
                f"{path}: not a readable audio file (soundfile: {sf_err}; librosa: {lr_err})"
            ) from lr_err
    if rate != sample_rate and wav.size:
        wav = soxr.resample(wav, rate, sample_rate, quality="HQ")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.size < min_samples:
        raise AudioError(
            f"{path}: {wav.size} samples at {sample_rate} Hz, expected at least {min_samples}"
        )
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{path}: contains non-finite samples")
    return wav


def write_wav(
    path: str | os.PathLike[str], wav: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> None:
    """Atomically writes mono ``wav`` (float in [-1, 1]) as 16-bit PCM WAV."""
    wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    with io_utils.atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), wav, sample_rate, subtype="PCM_16", format="WAV")
