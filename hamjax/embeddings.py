r"""Embeddings of utterances: the container and the extraction protocols (length buckets).

Protocols (how an utterance becomes embeddings):

- ``full``: one embedding of the whole utterance. Utterances are batched by length: each length
  is rounded up to a geometric ladder of bucket lengths from 2 s up (ratio
  :data:`BUCKET_GROWTH`, so at most ~10% padding and one compilation per bucket) and padded with
  a sample mask; the frontend and encoders are mask-aware, so padding does not change an
  embedding.
- ``authors`` (the paper's, from the ECAPA-TDNN code the authors build on): the full-utterance
  embedding plus five embeddings of evenly spaced crops of :data:`AUTHORS_CROP_SAMPLES` samples
  (300 frames = 3 s + 240 samples), starting at ``linspace(0, L - crop, 5)``; an utterance
  shorter than a crop is first wrap-padded to the crop length (``numpy.pad(..., "wrap")``).

The functions here take any jitted ``embed(variables, waveforms [B, S], mask [B, S]) -> [B, E]``;
:class:`hamjax.inference.Verifier` is the one place that builds it from a trained model.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hamjax.constants import HOP_SAMPLES, SAMPLE_RATE, crop_samples

__all__ = [
    "AUTHORS_CROP_SAMPLES",
    "AUTHORS_NUM_CROPS",
    "PROTOCOLS",
    "Embeddings",
    "authors_crops",
    "bucket_length",
    "extract_embeddings",
    "extract_protocol",
]

PROTOCOLS = ("authors", "full")
#: The authors' evaluation crop: ``max_audio = 300 * 160 + 240`` samples (3 s at 16 kHz).
AUTHORS_CROP_SAMPLES = crop_samples(300)
AUTHORS_NUM_CROPS = 5
#: Bucket lengths grow by this factor (padding overhead <= 10%).
BUCKET_GROWTH = 1.1
#: Shortest bucket, in samples (2 s): shorter utterances are padded up to it (cheap, and it saves
#: compilations on corpora of short utterances; evaluation utterances are usually longer).
MIN_BUCKET = 2 * SAMPLE_RATE
#: Bucket lengths are multiples of the 10 ms hop.
BUCKET_QUANTUM = HOP_SAMPLES
#: Audio per device call by default: 64 s.
DEFAULT_BATCH_SAMPLES = 64 * SAMPLE_RATE


def check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    """Raises ``ValueError`` naming ``field`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{field}={value!r}: expected one of {', '.join(choices)}")


# ------------------------------------------------------------------------------ containers


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """Embeddings of a set of utterances under one protocol.

    Attributes:
      names: ``[U]`` utterance names (as the trial lists give them), the row order.
      full: ``[U, E]`` float32 full-utterance embeddings (raw encoder output).
      crops: ``[U, 5, E]`` float32 crop embeddings (``authors`` protocol) or None (``full``).
    """

    names: tuple[str, ...]
    full: np.ndarray
    crops: np.ndarray | None = None

    @property
    def protocol(self) -> str:
        return "full" if self.crops is None else "authors"

    def select(self, names: Sequence[str]) -> Embeddings:
        """The rows of ``names`` (all must be present), in that order."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"{len(missing)} utterance(s) not in these embeddings: {missing[:5]}")
        rows = np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
        crops = None if self.crops is None else self.crops[rows]
        return Embeddings(tuple(names), self.full[rows], crops)


# ------------------------------------------------------------------------------ extraction


def authors_crops(
    wav: np.ndarray,
    num_crops: int = AUTHORS_NUM_CROPS,
    crop_samples: int = AUTHORS_CROP_SAMPLES,
) -> np.ndarray:
    """The authors' evenly spaced evaluation crops of one utterance.

    Args:
      wav: ``[L]`` waveform.
      num_crops: number of crops (5).
      crop_samples: crop length (48240 = 300 frames).

    Returns:
      ``[num_crops, crop_samples]`` float32; crop ``i`` starts at
      ``int(linspace(0, L' - crop_samples, num_crops)[i])`` where ``L' = max(L, crop_samples)``
      after wrap-padding a short utterance (the authors pad with ``numpy.pad(.., "wrap")``).
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"authors_crops: expected a non-empty [samples] waveform, got {wav.shape}")
    if wav.size <= crop_samples:
        wav = np.pad(wav, (0, crop_samples - wav.size), mode="wrap")
    starts = np.linspace(0, wav.size - crop_samples, num=num_crops).astype(np.int64)
    return np.stack([wav[s : s + crop_samples] for s in starts])


def bucket_length(num_samples: int) -> int:
    """The padded length of a ``num_samples`` utterance: the smallest ladder length >= it.

    Ladder: ``MIN_BUCKET * BUCKET_GROWTH**k`` rounded up to a multiple of ``BUCKET_QUANTUM``.
    """
    if num_samples <= MIN_BUCKET:
        return MIN_BUCKET
    k = math.ceil(math.log(num_samples / MIN_BUCKET) / math.log(BUCKET_GROWTH) - 1e-9)
    length = MIN_BUCKET * BUCKET_GROWTH**k
    length = int(math.ceil(length / BUCKET_QUANTUM) * BUCKET_QUANTUM)
    while length < num_samples:  # float rounding in log/pow
        k += 1
        length = int(math.ceil(MIN_BUCKET * BUCKET_GROWTH**k / BUCKET_QUANTUM) * BUCKET_QUANTUM)
    return length


def extract_embeddings(
    embed: Callable[[Any, jax.Array, jax.Array | None], jax.Array],
    variables: Any,
    waveforms: Sequence[np.ndarray],
    *,
    batch_samples: int = DEFAULT_BATCH_SAMPLES,
    batch_multiple: int = 1,
) -> np.ndarray:
    """Embeds variable-length waveforms in length buckets with sample masks.

    Each waveform is zero-padded to :func:`bucket_length` of its length; a bucket's batch size
    is ``max(1, batch_samples // length)`` and a short last batch is filled with copies of its
    first row (discarded), so each bucket compiles ``embed`` once.

    Args:
      embed: ``embed(variables, waveforms [B, S], mask [B, S]) -> [B, E]``, typically
        ``jax.jit(models.make_embed_fn(...))``.
      variables: the model variables passed to ``embed``.
      waveforms: ``U`` float waveforms ``[L_u]``.
      batch_samples: samples per device call (bounds memory).
      batch_multiple: every batch size is rounded up to a multiple of this (the device count
        when ``embed`` splits its batch over several devices).

    Returns:
      ``[U, E]`` float32, in the order of ``waveforms``.
    """
    if batch_samples <= 0:
        raise ValueError(f"batch_samples={batch_samples}: expected a positive sample count")
    lengths = np.array([len(w) for w in waveforms], dtype=np.int64)
    if lengths.size and lengths.min() == 0:
        raise ValueError(f"waveform {int(np.argmin(lengths))} is empty; expected audio samples")
    buckets = np.array([bucket_length(int(n)) for n in lengths], dtype=np.int64)
    out: np.ndarray | None = None
    for length in np.unique(buckets):
        rows = np.flatnonzero(buckets == length)
        batch = max(1, int(batch_samples) // int(length))
        batch = -(-batch // batch_multiple) * batch_multiple  # splits evenly over devices
        for start in range(0, rows.size, batch):
            chunk = rows[start : start + batch]
            wav = np.zeros((batch, length), np.float32)
            mask = np.zeros((batch, length), bool)
            for j, r in enumerate(chunk):
                wav[j, : lengths[r]] = waveforms[r]
                mask[j, : lengths[r]] = True
            # Filler rows repeat the first real row: a fully masked row would have no frames.
            wav[len(chunk) :] = wav[0]
            mask[len(chunk) :] = mask[0]
            emb = np.asarray(jax.device_get(embed(variables, jnp.asarray(wav), jnp.asarray(mask))))
            if out is None:
                out = np.zeros((len(waveforms), emb.shape[-1]), np.float32)
            out[chunk] = emb[: len(chunk)]
    if out is None:
        raise ValueError("extract_embeddings: no waveforms given")
    return out


def _prefetched(
    load: Callable[[str], np.ndarray], names: Sequence[str], chunk: int, threads: int
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yields ``(start, waveforms)`` chunks while the next chunk loads in background threads."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        starts = list(range(0, len(names), chunk))
        pending = [pool.map(load, names[s : s + chunk]) for s in starts[:1]]
        for i, start in enumerate(starts):
            if i + 1 < len(starts):
                nxt = starts[i + 1]
                pending.append(pool.map(load, names[nxt : nxt + chunk]))
            yield start, list(pending[i])
            pending[i] = None  # type: ignore[call-overload]


def extract_protocol(
    embed: Callable[[Any, jax.Array, jax.Array | None], jax.Array],
    variables: Any,
    names: Sequence[str],
    load: Callable[[str], np.ndarray],
    *,
    protocol: str,
    batch_samples: int = DEFAULT_BATCH_SAMPLES,
    chunk_utterances: int = 256,
    threads: int = 4,
    progress: Callable[[int, int], None] | None = None,
    batch_multiple: int = 1,
) -> Embeddings:
    """Embeddings of every utterance in ``names`` under ``protocol``, streaming the audio.

    Audio is loaded ``chunk_utterances`` at a time by ``threads`` threads (the next chunk loads
    while the current one is embedded), so memory does not grow with the list size.

    Args:
      embed: ``embed(variables, waveforms [B, S], mask [B, S]) -> [B, E]`` (jitted).
      variables: model variables.
      names: utterance names, the output row order.
      load: ``name -> [L]`` float32 waveform (e.g. ``hamjax.data.audio.load_audio`` of its path).
      protocol: ``"authors"`` or ``"full"``.
      batch_samples: samples per device call.
      chunk_utterances: utterances loaded at a time.
      threads: audio-loading threads.
      progress: optional ``progress(done, total)`` callback.
      batch_multiple: see :func:`extract_embeddings`.

    Returns:
      :class:`Embeddings` (``crops`` set for ``authors``).
    """
    check_choice("protocol", protocol, PROTOCOLS)
    names = list(names)
    full: np.ndarray | None = None
    crops: np.ndarray | None = None
    for start, wavs in _prefetched(load, names, max(1, chunk_utterances), max(1, threads)):
        emb = extract_embeddings(
            embed, variables, wavs, batch_samples=batch_samples, batch_multiple=batch_multiple
        )
        if full is None:
            full = np.zeros((len(names), emb.shape[-1]), np.float32)
        full[start : start + len(wavs)] = emb
        if protocol == "authors":
            crop_wavs = [c for w in wavs for c in authors_crops(w)]
            cemb = extract_embeddings(
                embed,
                variables,
                crop_wavs,
                batch_samples=batch_samples,
                batch_multiple=batch_multiple,
            )
            if crops is None:
                crops = np.zeros((len(names), AUTHORS_NUM_CROPS, cemb.shape[-1]), np.float32)
            crops[start : start + len(wavs)] = cemb.reshape(len(wavs), AUTHORS_NUM_CROPS, -1)
        if progress is not None:
            progress(start + len(wavs), len(names))
    if full is None:
        raise ValueError("extract_protocol: no utterances given")
    return Embeddings(tuple(names), full, crops)
