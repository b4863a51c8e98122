"""Every figure hamjax draws: DET curves and score histograms (evaluation), the Poincaré-disk
picture and centre-norm plots (hierarchy analysis).

Figures are drawn on a ``matplotlib.figure.Figure`` (no pyplot: no global backend state) and
written atomically as PNG by :func:`savefig`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from hamjax import io_utils, metrics

__all__ = ["plot_centre_norms", "plot_det", "plot_histogram", "plot_poincare_disk", "savefig"]


def savefig(fig: Any, path: str | os.PathLike[str]) -> None:
    """Writes ``fig`` to ``path`` as a 120-dpi PNG, atomically."""
    with io_utils.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def plot_det(
    path: str | os.PathLike[str],
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, metrics.VerificationMetrics]],
    title: str,
) -> None:
    """Writes a DET plot (miss vs false-alarm probability on normal-deviate axes).

    Args:
      path: the PNG to write.
      curves: ``{label: (p_miss, p_fa, metrics)}``; each curve gets its EER point marked.
      title: the plot title.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)
    from scipy.stats import norm

    # Up to 80%: poor systems (EER near or above 50%, e.g. an untrained model) stay visible.
    # No 0.2 %: on normal-deviate axes its label would overlap 0.1 %'s.
    ticks = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    lo, hi = norm.ppf(0.0005), norm.ppf(0.85)
    fig = Figure(figsize=(5.5, 6.2))
    ax = fig.add_subplot()
    for label, (p_miss, p_fa, m) in curves.items():
        # Rates of 0 or 1 map to -inf/+inf; clip into the plotted range.
        x = norm.ppf(np.clip(p_fa, 1e-6, 1 - 1e-6))
        y = norm.ppf(np.clip(p_miss, 1e-6, 1 - 1e-6))
        line = ax.plot(x, y, label=f"{label} (EER {100 * m.eer:.2f}%)")[0]
        e = norm.ppf(np.clip(m.eer, 1e-6, 1 - 1e-6))
        ax.plot([e], [e], "o", color=line.get_color())
    ax.plot([lo, hi], [lo, hi], ":", color="grey", linewidth=0.8)
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("false-alarm probability (%)")
    ax.set_ylabel("miss probability (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, linewidth=0.4)
    # Below the axes: inside, it would cover the top of a poor system's curve.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    fig.tight_layout()
    savefig(fig, path)


def plot_histogram(
    path: str | os.PathLike[str],
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    title: str,
) -> None:
    """Writes target / non-target score histograms (densities) with the EER threshold."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(scores, bins=min(100, max(10, int(np.sqrt(scores.size)))))
    ax.hist(scores[labels == 0], bins=bins, density=True, alpha=0.6, label="non-target")
    ax.hist(scores[labels == 1], bins=bins, density=True, alpha=0.6, label="target")
    if math.isfinite(threshold):
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="EER threshold")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    savefig(fig, path)


def plot_poincare_disk(
    points2d: ArrayLike,
    groups: ArrayLike,
    path: str | os.PathLike[str],
    title: str,
    *,
    max_legend: int = 20,
) -> None:
    """Writes a PNG scatter of unit-disk points coloured by group (e.g. family).

    Args:
      points2d: ``[N, 2]`` points inside the unit disk (:func:`poincare_disk_projection`).
      groups: ``[N]`` group ids.
      path: the PNG to write (atomically).
      title: the plot title.
      max_legend: show a legend only for at most this many groups.

    Raises:
      ValueError: shapes, or points outside the unit disk.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    p = np.asarray(points2d, dtype=np.float64)
    g = np.asarray(groups)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points2d: expected [N, 2], got shape {p.shape}")
    if g.shape != (p.shape[0],):
        raise ValueError(f"groups: expected shape ({p.shape[0]},), got {g.shape}")
    if not np.all(np.isfinite(p)) or np.any(np.sum(p * p, axis=1) >= 1.0):
        raise ValueError("points2d: expected finite points inside the unit disk")
    uniq, inv = np.unique(g, return_inverse=True)
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    theta = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(theta), np.sin(theta), color="k", linewidth=0.8)
    if uniq.size <= 20:  # qualitative palettes while they have enough distinct colours
        palette = matplotlib.colormaps["tab10" if uniq.size <= 10 else "tab20"]
        colours = np.asarray(palette.colors)[: uniq.size]
    else:
        colours = matplotlib.colormaps["hsv"](np.linspace(0, 1, uniq.size, endpoint=False))
    for k, name in enumerate(uniq):  # one scatter per group (few), for the legend
        sel = inv == k
        ax.scatter(p[sel, 0], p[sel, 1], s=6, color=colours[k], label=str(name), alpha=0.8)
    ax.set_xlim(-1.02, 1.02)
    ax.set_ylim(-1.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if uniq.size <= max_legend:
        ax.legend(fontsize=7, markerscale=2, loc="upper right", framealpha=0.6)
    fig.tight_layout()
    savefig(fig, path)


def plot_centre_norms(
    norms: ArrayLike,
    groups: ArrayLike,
    path: str | os.PathLike[str],
    title: str,
    *,
    ylabel: str = "centre norm",
    seed: int = 0,
) -> None:
    """Writes a PNG of centre norm (or distance to the origin) against speaker group.

    Box plots per group with the individual centres overlaid (horizontal jitter from ``seed``).

    Args:
      norms: ``[C]`` values (``centre_norms_by_group(...)["norms"]`` or ``["dist0"]``).
      groups: ``[C]`` group ids.
      path: the PNG to write (atomically).
      title: the plot title.
      ylabel: the y-axis label.
      seed: seed of the jitter.

    Raises:
      ValueError: shapes or non-finite values.
    """
    from matplotlib.figure import Figure

    v = np.asarray(norms, dtype=np.float64)
    g = np.asarray(groups)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"norms: expected a non-empty finite [C] array, got shape {v.shape}")
    if g.shape != v.shape:
        raise ValueError(f"groups: expected shape {v.shape}, got {g.shape}")
    uniq, inv = np.unique(g, return_inverse=True)
    fig = Figure(figsize=(max(6.0, 0.45 * uniq.size + 2.0), 4.5))
    ax = fig.add_subplot()
    # Outliers are drawn once, by the scatter of every centre below.
    ax.boxplot(
        [v[inv == k] for k in range(uniq.size)], positions=np.arange(uniq.size), showfliers=False
    )
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, size=v.size)
    ax.scatter(inv + jitter, v, s=8, alpha=0.6, color="tab:blue")
    ax.set_xticks(np.arange(uniq.size), [str(u) for u in uniq], rotation=45, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", linewidth=0.4)
    fig.tight_layout()
    savefig(fig, path)
