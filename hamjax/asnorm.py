r"""AS-norm: adaptive symmetric score normalisation (Matejka et al., Interspeech 2017).

With a cohort of per-speaker mean embeddings of training utterances, ``mu_u, sigma_u`` are the
mean and standard deviation of the ``top_k`` highest scores of utterance ``u`` against the
cohort, and

.. math::
   s' = \tfrac12\Big(\frac{s - \mu_e}{\sigma_e} + \frac{s - \mu_t}{\sigma_t}\Big).

The cohort's utterances are listed by :func:`training_cohort` from the prepared training set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from hamjax.embeddings import AUTHORS_NUM_CROPS, Embeddings, check_choice
from hamjax.scoring import SCORES, BallGeometry, chunk_ranges, l2_normalise, pairwise_fn

__all__ = [
    "Cohort",
    "as_norm",
    "cohort_scores",
    "cohort_stats",
    "speaker_means",
    "training_cohort",
]


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
    check_choice("score", score, SCORES)
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
    check_choice("score", score, SCORES)
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
    dist = pairwise_fn(geometry)
    per_utt = 1 if emb.crops is None else 1 + AUTHORS_NUM_CROPS
    for a, b in chunk_ranges(emb.full.shape[0], 1024):
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


# ------------------------------------------------------------------------------ the cohort


@dataclasses.dataclass(frozen=True)
class Cohort:
    """Training utterances chosen for the AS-norm cohort.

    Attributes:
      ids: ``[U]`` utterance ids (the prepared dataset's ``utterance_id``).
      speakers: ``[U]`` their speakers.
      load: ``utterance id -> float32 [S]`` waveform, read from the prepared dataset.
      source: where they come from (for reports).
      fingerprint: identifies the dataset and the choice (for the embedding cache).
    """

    ids: list[str]
    speakers: list[str]
    load: Callable[[str], np.ndarray]
    source: str
    fingerprint: str


def _record_index(data_source: Any) -> list[tuple[str, str]]:
    """``(utterance_id, speaker_name)`` of every record of a prepared split, in record order."""
    from tqdm import tqdm

    out = []
    for i in tqdm(range(len(data_source)), desc="AS-norm cohort: indexing", unit="utt",
                  leave=False, disable=len(data_source) < 5000):  # fmt: skip
        rec = data_source[i]
        out.append((_text(rec["utterance_id"]), _text(rec["speaker_name"])))
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _choose(
    index: Sequence[tuple[str, str]], cohort_size: int, utterances_per_speaker: int, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded choice of ``cohort_size`` speakers and ``utterances_per_speaker`` of each."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    by_speaker: dict[str, list[str]] = {}
    for utt, spk in index:
        by_speaker.setdefault(spk, []).append(utt)
    speakers = sorted(by_speaker)
    if 0 < cohort_size < len(speakers):
        speakers = sorted(rng.choice(speakers, size=cohort_size, replace=False).tolist())
    ids, spk_out = [], []
    for s in speakers:
        group = sorted(by_speaker[s])
        if 0 < utterances_per_speaker < len(group):
            pick = np.sort(rng.choice(len(group), size=utterances_per_speaker, replace=False))
            group = [group[i] for i in pick]
        ids += group
        spk_out += [s] * len(group)
    return ids, spk_out


def training_cohort(
    data: ml_collections.ConfigDict,
    *,
    data_dir: Path | None,
    cohort_size: int,
    utterances_per_speaker: int,
    seed: int,
) -> Cohort:
    """The AS-norm cohort: training utterances of the prepared dataset, chosen with ``seed``.

    Reads the TFDS dataset the model was trained on (``data.name`` / ``data.config`` under
    ``data_dir``): its records carry the utterance ids, speakers and audio, so the cohort is
    exactly the training set, whatever corpus format it was prepared from (files skipped at
    preparation are absent).

    Args:
      data: the work directory's ``data`` config section.
      data_dir: the TFDS data directory.
      cohort_size: speakers (0 = all).
      utterances_per_speaker: utterances per speaker (0 = all).
      seed: seeds both choices.

    Raises:
      FileNotFoundError: no prepared dataset there (the message says what to pass).
      ValueError: the dataset holds no utterances.
    """
    from hamjax.data import tfds_builder

    if data_dir is None:
        raise FileNotFoundError(
            "AS-norm cohort: no data_dir; pass --data_dir (the TFDS data directory the model was "
            "trained from)"
        )
    info = tfds_builder.load_dataset_info(data_dir, data.name, config=data.get("config") or None)
    records = tfds_builder.open_data_source(info)
    index = _record_index(records)
    if not index:
        raise ValueError(f"AS-norm cohort: the dataset {info.builder_dir} holds no utterances")
    row = {utt: i for i, (utt, _) in enumerate(index)}
    ids, speakers = _choose(index, cohort_size, utterances_per_speaker, seed)

    def load(utt: str) -> np.ndarray:
        # The dataset stores 16-bit PCM; /32768 is what soundfile returns for the same file.
        return np.asarray(records[row[utt]]["audio"], np.float32) / 32768.0

    return Cohort(
        ids=ids,
        speakers=speakers,
        load=load,
        source=f"TFDS dataset {data.name} ({info.builder_dir})",
        fingerprint=hashlib.sha256(json.dumps([str(info.config), ids]).encode()).hexdigest(),
    )
