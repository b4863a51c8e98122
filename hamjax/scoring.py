r"""Embedding extraction protocols, trial scoring (cosine / Poincaré), AS-norm, embedding cache.

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

Scores between an enrolment utterance ``e`` and a test utterance ``t``:

- ``cosine`` on L2-normalised embeddings:

  .. math::
     s_{full} = \hat f_e \cdot \hat f_t, \qquad
     s_{authors} = \tfrac12\Big(\hat f_e\cdot\hat f_t + \tfrac1{25}\sum_{i,j=1}^{5}
         \hat c_{e,i}\cdot\hat c_{t,j}\Big)
         = \tfrac12\big(\hat f_e\cdot\hat f_t + \bar c_e\cdot\bar c_t\big),

  with :math:`\bar c = \frac15\sum_i \hat c_i` (the 5x5 mean of dot products is the dot product
  of the means, so no ``[N, 5, 5]`` tensor is built).
- ``poincare``: the negative distance in the trained hyperbolic head's geometry, i.e. after the
  head's own map into the ball (``clip``: rescale to radius ``(1 - 1e-5)/sqrt(c)`` and the
  authors' unit-curvature distance with their clamps; ``expmap``: ``expmap0_c`` and ``d_c``),
  computed by :func:`hamjax.losses.hyperbolic_logits` with ``scale = 1``, ``margin = 0``;
  ``authors`` averages the full-utterance score and the mean of the 25 crop-pair scores.

AS-norm (adaptive symmetric score normalisation, Matejka et al., Interspeech 2017): with a cohort
of per-speaker mean embeddings, ``mu_u, sigma_u`` are the mean and standard deviation of the
``top_k`` highest scores of utterance ``u`` against the cohort, and

.. math::
   s' = \tfrac12\Big(\frac{s - \mu_e}{\sigma_e} + \frac{s - \mu_t}{\sigma_t}\Big).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hamjax import io_utils

__all__ = [
    "AUTHORS_CROP_SAMPLES",
    "AUTHORS_NUM_CROPS",
    "PROTOCOLS",
    "SCORES",
    "BallGeometry",
    "Embeddings",
    "as_norm",
    "authors_crops",
    "ball_geometry",
    "bucket_length",
    "cohort_scores",
    "cohort_stats",
    "extract_embeddings",
    "extract_protocol",
    "fingerprint",
    "l2_normalise",
    "load_embeddings",
    "save_embeddings",
    "score_trials",
    "speaker_means",
]

PROTOCOLS = ("authors", "full")
SCORES = ("cosine", "poincare")
#: The authors' evaluation crop: ``max_audio = 300 * 160 + 240`` samples (3 s at 16 kHz).
AUTHORS_CROP_SAMPLES = 300 * 160 + 240
AUTHORS_NUM_CROPS = 5
#: Bucket lengths grow by this factor (padding overhead <= 10%).
BUCKET_GROWTH = 1.1
#: Shortest bucket, in samples (2 s): shorter utterances are padded up to it (cheap, and it saves
#: compilations on corpora of short utterances; evaluation utterances are usually longer).
MIN_BUCKET = 32_000
#: Bucket lengths are multiples of the 10 ms hop.
BUCKET_QUANTUM = 160
#: Trials scored per device call (fixed, so one compilation serves every chunk).
TRIAL_CHUNK = 8192


def _check_choice(field: str, value: str, choices: Sequence[str]) -> None:
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


@dataclasses.dataclass(frozen=True)
class BallGeometry:
    """A hyperbolic head's map into the ball and distance (see :func:`ball_geometry`).

    Attributes:
      c: the head's curvature (learnt value when ``learn_c``).
      mode: ``"clip"`` or ``"expmap"`` (see :func:`hamjax.losses.to_ball`).
      head_name: the config's head name, for messages and reports.
    """

    c: float
    mode: str
    head_name: str = ""

    def pairwise_dist(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """``[N, E] x [M, E] -> [N, M]`` distances between raw embeddings in the head's ball."""
        from hamjax import losses

        return -losses.hyperbolic_logits(x, y, None, c=self.c, scale=1.0, mode=self.mode)


def ball_geometry(head: Any, head_params: Any, head_name: str = "") -> BallGeometry:
    """The geometry of a trained hyperbolic head (curvature, mode) for ``poincare`` scoring.

    Args:
      head: the head module (``Inference.head``).
      head_params: its parameters (``variables["params"]["head"]``).
      head_name: the config's head name (for the error message).

    Returns:
      A :class:`BallGeometry`.

    Raises:
      ValueError: the head has no ball (a Euclidean head such as ``softmax``, ``am``, ``aam``).
    """
    if not (hasattr(head, "ball_embed") and hasattr(head, "curvature")):
        raise ValueError(
            f"score='poincare' needs a hyperbolic head (h_softmax, ham_softmax or combined); "
            f"this model's head is {head_name or type(head).__name__!r}, which has no Poincaré "
            "ball. Use score='cosine'."
        )
    c = float(head.apply({"params": head_params}, method="curvature"))
    return BallGeometry(c=c, mode=str(head.mode), head_name=head_name)


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
    batch_samples: int = 64 * 16_000,
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
    batch_samples: int = 64 * 16_000,
    chunk_utterances: int = 256,
    threads: int = 4,
    progress: Callable[[int, int], None] | None = None,
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

    Returns:
      :class:`Embeddings` (``crops`` set for ``authors``).
    """
    _check_choice("protocol", protocol, PROTOCOLS)
    names = list(names)
    full: np.ndarray | None = None
    crops: np.ndarray | None = None
    for start, wavs in _prefetched(load, names, max(1, chunk_utterances), max(1, threads)):
        emb = extract_embeddings(embed, variables, wavs, batch_samples=batch_samples)
        if full is None:
            full = np.zeros((len(names), emb.shape[-1]), np.float32)
        full[start : start + len(wavs)] = emb
        if protocol == "authors":
            crop_wavs = [c for w in wavs for c in authors_crops(w)]
            cemb = extract_embeddings(embed, variables, crop_wavs, batch_samples=batch_samples)
            if crops is None:
                crops = np.zeros((len(names), AUTHORS_NUM_CROPS, cemb.shape[-1]), np.float32)
            crops[start : start + len(wavs)] = cemb.reshape(len(wavs), AUTHORS_NUM_CROPS, -1)
        if progress is not None:
            progress(start + len(wavs), len(names))
    if full is None:
        raise ValueError("extract_protocol: no utterances given")
    return Embeddings(tuple(names), full, crops)


# ------------------------------------------------------------------------------ scoring


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / |x|`` along ``axis`` (a zero vector stays zero), float64 for scoring."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, np.finfo(np.float64).tiny)


def _cosine_vectors(emb: Embeddings) -> np.ndarray:
    """Per-utterance vectors whose dot products are the cosine protocol scores, ``[U, E or 2E]``.

    ``full``: ``f^``; ``authors``: ``[f^, c_bar] / sqrt(2)`` so that the dot product is
    ``(f^_e.f^_t + c_bar_e.c_bar_t) / 2``.
    """
    full = l2_normalise(emb.full)
    if emb.crops is None:
        return full
    crop_mean = l2_normalise(emb.crops).mean(axis=1)
    return np.concatenate([full, crop_mean], axis=-1) / np.sqrt(2.0)


@functools.lru_cache(maxsize=8)
def _pairwise_fn(geometry: BallGeometry) -> Callable[[jax.Array, jax.Array], jax.Array]:
    return jax.jit(geometry.pairwise_dist)


@functools.lru_cache(maxsize=8)
def _poincare_pair_fn(geometry: BallGeometry, authors: bool) -> Callable[..., jax.Array]:
    """Jitted ``(full_e, full_t[, crops_e, crops_t]) -> [chunk]`` negative distances."""

    def one(fe, ft, ce=None, ct=None):
        s = -geometry.pairwise_dist(fe[None], ft[None])[0, 0]
        if authors:
            s = 0.5 * (s - jnp.mean(geometry.pairwise_dist(ce, ct)))
        return s

    return jax.jit(jax.vmap(one))


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def score_trials(
    emb: Embeddings,
    enroll_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    score: str = "cosine",
    geometry: BallGeometry | None = None,
) -> np.ndarray:
    """Scores trials ``(emb[enroll_idx[n]], emb[test_idx[n]])`` (see the module docstring).

    Args:
      emb: the utterances' embeddings (its protocol decides full vs. authors scoring).
      enroll_idx: ``[N]`` row of each trial's enrolment utterance.
      test_idx: ``[N]`` row of each trial's test utterance.
      score: ``"cosine"`` or ``"poincare"``.
      geometry: the head's ball (:func:`ball_geometry`), required for ``poincare``.

    Returns:
      ``[N]`` float64 scores, higher = more likely the same speaker.
    """
    _check_choice("score", score, SCORES)
    enroll_idx = np.asarray(enroll_idx, dtype=np.int64)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    if enroll_idx.shape != test_idx.shape or enroll_idx.ndim != 1:
        raise ValueError(
            f"enroll_idx {enroll_idx.shape} and test_idx {test_idx.shape}: expected two [N] arrays"
        )
    n = enroll_idx.size
    out = np.empty(n, np.float64)
    if score == "cosine":
        vec = _cosine_vectors(emb)
        # float64 on the host: the dot products are cheap and exact ties stay ties.
        for a, b in _chunks(n, 65536):
            out[a:b] = np.einsum("nd,nd->n", vec[enroll_idx[a:b]], vec[test_idx[a:b]])
        return out
    if geometry is None:
        raise ValueError("score='poincare' needs geometry=ball_geometry(head, head_params)")
    authors = emb.crops is not None
    fn = _poincare_pair_fn(geometry, authors)
    # Every chunk is padded to the same size so that one compilation serves them all.
    size = min(TRIAL_CHUNK, 1 << max(0, n - 1).bit_length())
    for a, b in _chunks(n, size):
        e = np.zeros(size, np.int64)
        t = np.zeros(size, np.int64)
        e[: b - a], t[: b - a] = enroll_idx[a:b], test_idx[a:b]
        args = [emb.full[e], emb.full[t]]
        if authors:
            args += [emb.crops[e], emb.crops[t]]  # type: ignore[index]
        out[a:b] = np.asarray(fn(*args), np.float64)[: b - a]
    return out


# ------------------------------------------------------------------------------ AS-norm


def speaker_means(
    emb: np.ndarray, speakers: Sequence[str], *, score: str = "cosine"
) -> tuple[np.ndarray, list[str]]:
    """Per-speaker mean embeddings, the AS-norm cohort.

    ``cosine``: mean of L2-normalised embeddings, re-normalised. ``poincare``: mean of the raw
    embeddings (the head maps it into the ball when scoring, as it does any embedding).

    Args:
      emb: ``[U, E]`` full-utterance embeddings of training utterances.
      speakers: ``[U]`` their speakers.
      score: the scoring the cohort is for.

    Returns:
      ``(means [K, E] float64, speaker names [K])``, speakers sorted.
    """
    _check_choice("score", score, SCORES)
    emb = np.asarray(emb, np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(speakers):
        raise ValueError(
            f"speaker_means: expected emb [U, E] with one speaker per row, got {emb.shape} and "
            f"{len(speakers)} speakers"
        )
    names, inverse = np.unique(np.asarray(speakers, dtype=object), return_inverse=True)
    vec = l2_normalise(emb) if score == "cosine" else emb
    sums = np.zeros((len(names), emb.shape[1]))
    np.add.at(sums, inverse, vec)
    means = sums / np.bincount(inverse, minlength=len(names))[:, None]
    if score == "cosine":
        means = l2_normalise(means)
    return means, [str(n) for n in names]


def cohort_scores(
    emb: Embeddings,
    cohort: np.ndarray,
    *,
    score: str = "cosine",
    geometry: BallGeometry | None = None,
) -> np.ndarray:
    """Scores of every utterance against every cohort speaker, ``[U, K]``.

    A cohort speaker is a single vector, so under ``authors`` its "crops" are that vector: the
    score is ``(s(f_u, m_k) + mean_i s(c_ui, m_k)) / 2``, consistent with the trial score.

    Args:
      emb: utterance embeddings (protocol as for the trials).
      cohort: ``[K, E]`` per-speaker means (:func:`speaker_means` with the same ``score``).
      score: ``"cosine"`` or ``"poincare"``.
      geometry: required for ``poincare``.

    Returns:
      ``[U, K]`` float64.
    """
    _check_choice("score", score, SCORES)
    cohort = np.asarray(cohort, np.float64)
    if score == "cosine":
        full = l2_normalise(emb.full)
        if emb.crops is not None:
            full = 0.5 * (full + l2_normalise(emb.crops).mean(axis=1))
        return full @ l2_normalise(cohort).T
    if geometry is None:
        raise ValueError("score='poincare' needs geometry=ball_geometry(head, head_params)")
    coh = jnp.asarray(cohort, jnp.float32)
    out = np.empty((emb.full.shape[0], cohort.shape[0]), np.float64)
    dist = _pairwise_fn(geometry)
    per_utt = 1 if emb.crops is None else 1 + AUTHORS_NUM_CROPS
    for a, b in _chunks(emb.full.shape[0], 1024):
        # Full and crop embeddings in one call: [b * (1 + 5), E] x [K, E] -> one compilation.
        x = emb.full[a:b, None]
        if emb.crops is not None:
            x = np.concatenate([x, emb.crops[a:b]], axis=1)
        d = np.asarray(dist(jnp.asarray(x.reshape(-1, x.shape[-1])), coh), np.float64)
        d = d.reshape(b - a, per_utt, -1)
        s = -d[:, 0]
        if emb.crops is not None:
            s = 0.5 * (s - d[:, 1:].mean(axis=1))
        out[a:b] = s
    return out


def cohort_stats(scores: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row's ``top_k`` highest cohort scores.

    Args:
      scores: ``[U, K]`` utterance-vs-cohort scores.
      top_k: how many of the highest scores to keep (clipped to ``K``).

    Returns:
      ``(mean [U], std [U])``; ``std`` is floored at a tiny positive value.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"cohort scores: expected [U, K] with K >= 1, got {scores.shape}")
    if top_k < 1:
        raise ValueError(f"asnorm top_k={top_k}: expected a positive number of cohort scores")
    k = min(int(top_k), scores.shape[1])
    top = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k :]
    mean = top.mean(axis=1)
    std = np.maximum(top.std(axis=1), 1e-12)
    return mean, std


def as_norm(
    raw: np.ndarray,
    enroll_idx: np.ndarray,
    test_idx: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
) -> np.ndarray:
    r"""Symmetric adaptive s-norm of trial scores.

    .. math:: s' = \tfrac12\Big(\frac{s - \mu_e}{\sigma_e} + \frac{s - \mu_t}{\sigma_t}\Big)

    Args:
      raw: ``[N]`` raw trial scores.
      enroll_idx: ``[N]`` rows of the enrolment utterances in ``mean``/``std``.
      test_idx: ``[N]`` rows of the test utterances.
      mean: ``[U]`` per-utterance top-k cohort score means (:func:`cohort_stats`).
      std: ``[U]`` per-utterance top-k cohort score standard deviations.

    Returns:
      ``[N]`` normalised scores.
    """
    raw = np.asarray(raw, np.float64)
    return 0.5 * (
        (raw - mean[enroll_idx]) / std[enroll_idx] + (raw - mean[test_idx]) / std[test_idx]
    )


# ------------------------------------------------------------------------------ cache


def fingerprint(obj: Any) -> str:
    """sha256 hex digest of a JSON-able description or of a pytree of arrays.

    Arrays are hashed by path, dtype, shape and bytes, so any change of any weight changes it.
    """
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(obj)[0]
    for path, leaf in leaves:
        h.update(jax.tree_util.keystr(path).encode())
        if isinstance(leaf, (np.ndarray, jax.Array)):
            arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(json.dumps(leaf, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_embeddings(path: str | os.PathLike[str], emb: Embeddings, meta: Mapping[str, Any]) -> None:
    """Atomically writes ``emb`` and a JSON ``meta`` description to ``path`` (``.npz``).

    For :func:`find_cached`, ``meta["key"]`` must be the cache key the file was made under.
    """
    arrays: dict[str, np.ndarray] = {
        "names": np.asarray(emb.names, dtype=str),
        "full": emb.full,
        "meta": np.asarray(json.dumps(dict(meta), sort_keys=True, default=str)),
    }
    if emb.crops is not None:
        arrays["crops"] = emb.crops
    with io_utils.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)


def load_embeddings(path: str | os.PathLike[str]) -> tuple[Embeddings, dict[str, Any]]:
    """Reads a file written by :func:`save_embeddings`: ``(embeddings, meta)``.

    Raises:
      ValueError: the file is not a hamjax embedding cache (named in the message).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(n) for n in z["names"])
            full = z["full"]
            crops = z["crops"] if "crops" in z.files else None
            meta = json.loads(str(z["meta"]))
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a readable hamjax embedding cache ({err})") from err
    return Embeddings(names, full, crops), meta


def find_cached(
    cache_dir: str | os.PathLike[str],
    key: Mapping[str, Any],
    names: Sequence[str],
    protocol: str,
) -> Embeddings | None:
    """A cached :class:`Embeddings` with the same ``key`` that covers ``names``, or None.

    Files are ``<cache_dir>/<sha of key>-*.npz``; any of them holding every name is used (e.g.
    the Vox1-E cache serves Vox1-O, whose utterances it contains), and an ``authors`` file also
    serves ``full`` (its full-utterance part). Unreadable files are ignored.

    Args:
      cache_dir: the cache folder.
      key: what the embeddings depend on besides the utterances (model, features ...).
      names: the utterances wanted, the row order of the result.
      protocol: ``"authors"`` or ``"full"``.
    """
    _check_choice("protocol", protocol, PROTOCOLS)
    cache_dir = Path(cache_dir)
    prefix = fingerprint(dict(key))[:16]
    wanted = set(names)
    canonical = json.loads(json.dumps(dict(key), default=str))
    for path in sorted(cache_dir.glob(f"{prefix}-*.npz")):
        try:
            # Names and key first: the (large) arrays are read only from a matching file.
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("key") != canonical or not wanted <= {str(n) for n in z["names"]}:
                    continue
            emb, meta = load_embeddings(path)
        except (OSError, KeyError, ValueError):
            continue
        if emb.protocol == protocol:
            return emb.select(list(names))
        if protocol == "full":
            return dataclasses.replace(emb, crops=None).select(list(names))
    return None


def cache_path(
    cache_dir: str | os.PathLike[str], key: Mapping[str, Any], names: Sequence[str], protocol: str
) -> Path:
    """Where :func:`save_embeddings` should write ``names`` under ``key`` and ``protocol``."""
    _check_choice("protocol", protocol, PROTOCOLS)
    names_fp = fingerprint(sorted(names))[:16]
    return Path(cache_dir) / f"{fingerprint(dict(key))[:16]}-{names_fp}-{protocol}.npz"
