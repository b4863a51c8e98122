"""Evaluation outputs: the report fields, ``scores.txt``, ``report.json``, the summary line, and
the non-learned baseline every report is compared with.

The baseline scores a trial by the cosine of per-utterance log-mel statistics (the mean and
standard deviation over time of the authors' 80-band log-mel features *without* mean
subtraction, centred by their average over the list's utterances): it tells how much of the
task a model-free spectral average already solves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hamjax import io_utils, metrics, scoring
from hamjax import trials as trials_lib
from hamjax.embeddings import Embeddings

__all__ = [
    "BASELINE_DESCRIPTION",
    "baseline_embed_fn",
    "baseline_scores",
    "metrics_dict",
    "summary_line",
    "write_report",
    "write_scores",
]

BASELINE_DESCRIPTION = (
    "cosine of per-utterance [mean, std] over time of 80-band log-mel features (authors' "
    "frontend, no mean subtraction), centred by their mean over the list's utterances"
)


def baseline_embed_fn() -> Callable[[Any, jax.Array, jax.Array | None], jax.Array]:
    """``embed(_, waveforms [B, S], mask [B, S]) -> [B, 160]``: log-mel mean and std over time.

    .. math:: v = \\big[\\tfrac1T\\sum_t x_t,\\ \\sqrt{\\tfrac1T\\sum_t (x_t - \\bar x)^2}\\big]

    over the valid frames of the authors' log-mel features computed without mean subtraction
    (with it the mean would be 0). The first argument (model variables) is ignored so that the
    function fits :func:`hamjax.embeddings.extract_embeddings`.
    """
    from hamjax import frontend

    def embed(_: Any, waveforms: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        feats, fmask = frontend.logmel(waveforms, mask, mean_norm=False)
        w = fmask[..., None].astype(feats.dtype)
        count = jnp.maximum(jnp.sum(w, axis=1), 1.0)
        mean = jnp.sum(feats * w, axis=1) / count
        var = jnp.sum(jnp.square(feats - mean[:, None]) * w, axis=1) / count
        return jnp.concatenate([mean, jnp.sqrt(var)], axis=-1)

    return embed


def baseline_scores(stats: np.ndarray, enroll_idx: np.ndarray, test_idx: np.ndarray) -> np.ndarray:
    """Cosine scores of the baseline's statistics ``[U, 160]``, centred over the ``U`` rows."""
    centred = stats - stats.mean(axis=0, keepdims=True)
    emb = Embeddings(tuple(str(i) for i in range(len(stats))), centred.astype(np.float32))
    return scoring.score_trials(emb, enroll_idx, test_idx, score="cosine")


def finite_or_none(x: float) -> float | None:
    """``x``, or None where it is not finite (JSON has no infinities)."""
    return float(x) if math.isfinite(x) else None


def metrics_dict(m: metrics.VerificationMetrics) -> dict[str, Any]:
    """The report fields of ``m``: EER (fraction, percent, threshold) and each minDCF."""
    return {
        "eer": m.eer,
        "eer_percent": 100.0 * m.eer,
        "eer_threshold": finite_or_none(m.eer_threshold),
        "min_dcf": {
            f"{p:g}": {"value": v, "threshold": finite_or_none(t), "c_miss": 1.0, "c_fa": 1.0}
            for p, (v, t) in m.min_dcf.items()
        },
    }


def write_scores(
    path: str | os.PathLike[str], tl: trials_lib.TrialList, scores: np.ndarray, header: str
) -> None:
    """Writes ``label enroll test score`` lines (the list's order) atomically."""
    lines = [f"# {header}", "# label enroll test score"]
    lines += [
        f"{lab} {e} {t} {s:.6f}"
        for lab, e, t, s in zip(
            tl.labels.tolist(), tl.enroll, tl.test, scores.tolist(), strict=True
        )
    ]
    io_utils.write_text(path, "\n".join(lines) + "\n")


def write_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Writes ``report`` as JSON atomically (non-finite floats must already be None)."""
    io_utils.write_text(
        path, json.dumps(report, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
    )


def summary_line(report: Mapping[str, Any]) -> str:
    """The one-line stdout summary of a report."""
    d = report["min_dcf"]
    line = (
        f"{report['trial_list']['name']}: EER {report['eer_percent']:.3f}% "
        f"minDCF(0.01) {d['0.01']['value']:.4f} minDCF(0.05) {d['0.05']['value']:.4f} | "
        f"{report['trial_list']['num_trials']} trials ({report['trial_list']['num_target']} "
        f"target) | {report['checkpoint']['which']} step {report['checkpoint']['step']} "
        f"{report['protocol']}/{report['scoring']}/{report['normalisation']['kind']}"
    )
    if report.get("baseline"):
        line += f" | log-mel baseline EER {report['baseline']['eer_percent']:.2f}%"
    return line
