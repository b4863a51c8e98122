"""Reading and writing 16 kHz mono audio, with errors that name the file.

Reading goes through soundfile (WAV/FLAC/OGG...) and falls back to librosa's audioread
backend for other containers; resampling calls soxr directly (what ``librosa.resample`` uses
for ``res_type="soxr_hq"``, without paying librosa's numba start-up on the first call). Every
failure raises :class:`AudioError` naming the file and what was expected.

Two silent failures are made loud:

* **Truncated WAVs.** libsndfile reads a RIFF/WAVE file whose ``data`` chunk is cut short (a copy
  or download interrupted) without complaint, returning only the frames present. Before decoding,
  :func:`check_wav_header` compares the size the ``data`` chunk declares with the bytes the file
  holds and raises naming both (other containers -- FLAC, OGG, MP3 -- detect truncation in their
  decoders and already fail).
* **Too-short audio.** :func:`check_duration` (and ``load_audio(..., min_seconds=...)``) refuses
  audio shorter than :data:`MIN_SECONDS`: a few frames give an embedding, and a score, that means
  nothing. Training preparation skips such files (with a log line); evaluation and inference
  refuse them.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from hamjax import io_utils

SAMPLE_RATE = 16_000
#: Shortest audio (seconds) worth an embedding: 0.5 s is ~48 frames of 10 ms, below which speaker
#: embeddings are dominated by the utterance's content (the shortest VoxCeleb1 file is 4 s).
MIN_SECONDS = 0.5
# Containers libsndfile reads itself (WAV, FLAC, OGG, MP3 with recent libsndfile, ...).
_SOUNDFILE_FORMATS = frozenset(sf.available_formats())


class AudioError(ValueError):
    """An audio file could not be used: unreadable, empty, or not audio."""


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int = SAMPLE_RATE,
    min_samples: int = 1,
    *,
    min_seconds: float | None = None,
) -> np.ndarray:
    """Loads ``path`` as mono float32 in [-1, 1] at ``sample_rate``.

    Stereo (or more channels) is averaged to mono; other rates are resampled.

    Args:
      path: an audio file.
      sample_rate: the rate to return.
      min_samples: fewer samples than this (after resampling) is an error.
      min_seconds: when given, audio shorter than this is an error (:func:`check_duration`;
        evaluation and inference pass :data:`MIN_SECONDS`). Default: no duration check.

    Returns:
      ``[samples]`` float32.

    Raises:
      AudioError: the file is missing, unreadable, not audio, a truncated WAV (the header
        declares more audio than the file holds), shorter than ``min_samples`` or
        ``min_seconds``.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    check_wav_header(path)
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
    if min_seconds is not None:
        check_duration(wav, path=path, min_seconds=min_seconds, sample_rate=sample_rate)
    return wav


def check_duration(
    wav_or_num_samples: np.ndarray | int,
    *,
    path: str | os.PathLike[str],
    min_seconds: float = MIN_SECONDS,
    sample_rate: int = SAMPLE_RATE,
) -> None:
    """Raises :class:`AudioError` if audio is shorter than ``min_seconds``.

    Args:
      wav_or_num_samples: ``[samples]`` waveform (the last axis counts) or a sample count.
      path: the file (or utterance name) the audio came from, for the message.
      min_seconds: the shortest acceptable duration (default :data:`MIN_SECONDS`); 0 accepts
        everything.
      sample_rate: the waveform's rate in Hz.

    Raises:
      AudioError: ``path: 0.02 s of audio is shorter than the minimum 0.5 s (...)``.
      ValueError: a negative or non-finite ``min_seconds``, a non-positive ``sample_rate`` or a
        negative sample count.
    """
    if not (math.isfinite(min_seconds) and min_seconds >= 0):
        raise ValueError(f"min_seconds={min_seconds!r}: expected a finite number >= 0")
    if not sample_rate > 0:
        raise ValueError(f"sample_rate={sample_rate!r}: expected a positive rate in Hz")
    if isinstance(wav_or_num_samples, (int, np.integer)):
        num_samples = int(wav_or_num_samples)
    else:
        shape = np.shape(wav_or_num_samples)
        num_samples = int(shape[-1]) if shape else 0
    if num_samples < 0:
        raise ValueError(f"{path}: num_samples={num_samples}: expected a count >= 0")
    needed = math.ceil(min_seconds * sample_rate - 1e-9)
    if num_samples < needed:
        raise AudioError(
            f"{path}: {num_samples / sample_rate:.2f} s of audio is shorter than the minimum "
            f"{min_seconds:g} s ({num_samples} samples at {sample_rate} Hz, {needed} needed); "
            "an embedding of so little speech is not meaningful -- use a longer recording "
            "or leave this one out"
        )


# Data-chunk sizes written by streaming writers that cannot seek back to fill in the real size
# (ffmpeg/libsndfile to a pipe: 0xFFFFFFFF; sox: 0x7FFFF000); libsndfile then reads to EOF.
_UNKNOWN_DATA_SIZES = frozenset({0xFFFFFFFF, 0x7FFFF000})


def check_wav_header(path: str | os.PathLike[str]) -> None:
    """Raises :class:`AudioError` if a RIFF/WAVE file declares more audio than it holds.

    Walks the RIFF chunks (stdlib ``struct``, no decoding) to the ``data`` chunk and compares
    its declared size with the bytes after its header. libsndfile silently returns only the
    frames present in a truncated file, so a half-copied corpus would otherwise train and score
    on clipped utterances. Files that are not little-endian RIFF/WAVE (FLAC, OGG, RF64, RIFX
    ...), headers that cannot be walked, and the "unknown length" sizes of streaming writers are
    left to the decoder.

    Raises:
      AudioError: ``path: truncated WAV: the header declares N bytes of audio data (F frames,
        S s) but the file holds only M bytes (...)``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            layout = _wav_layout(f, size)
    except (OSError, struct.error):
        return  # unreadable headers: the decoder reports those with its own message
    if layout is None:
        return
    data_start, declared, block_align, rate = layout
    held = size - data_start
    if declared in _UNKNOWN_DATA_SIZES or declared <= held:
        return

    def amount(num_bytes: int) -> str:
        if block_align <= 0 or rate <= 0:
            return f"{num_bytes} bytes"
        frames = num_bytes // block_align
        return f"{num_bytes} bytes ({frames} frames, {frames / rate:.2f} s)"

    raise AudioError(
        f"{path}: truncated WAV: the header declares {amount(declared)} of audio data but the "
        f"file holds only {amount(held)}; it was probably cut short while being copied or "
        "written -- copy or extract it again"
    )


def _wav_layout(f: Any, size: int) -> tuple[int, int, int, int] | None:
    """``(data offset, declared data bytes, block align, sample rate)`` of a RIFF/WAVE file.

    ``None`` when ``f`` is not little-endian RIFF/WAVE or has no ``data`` chunk header. Block
    align and rate are 0 when no ``fmt `` chunk precedes ``data``.
    """
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
        return None
    block_align = rate = 0
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        if chunk_id == b"data":
            return pos + 8, chunk_size, block_align, rate
        if chunk_id == b"fmt " and chunk_size >= 14:
            # WAVEFORMAT: format tag, channels (2 + 2 bytes), rate, bytes/s (4 + 4), block align.
            _, _, rate, _, block_align = struct.unpack("<HHIIH", f.read(14))
        pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    return None


def write_wav(
    path: str | os.PathLike[str], wav: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> None:
    """Atomically writes mono ``wav`` (float in [-1, 1]) as 16-bit PCM WAV."""
    wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    with io_utils.atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), wav, sample_rate, subtype="PCM_16", format="WAV")
