"""The evaluation job behind ``eval.py``: restore, embed, score, normalise, report, plot.

For a work directory trained by ``train.py`` and one or more trial lists::

    reports = eval_lib.evaluate("runs/quickstart")      # settings from runs/quickstart/config.json

restores the model (:func:`hamjax.checkpointing.load_inference`), embeds every utterance of the
trial lists under the chosen protocol (cached on disk, see :mod:`hamjax.scoring`), scores the
trials (cosine or Poincaré), optionally applies AS-norm with a cohort of per-speaker means of
training utterances, computes EER and minDCF (:mod:`hamjax.metrics`) and writes into
``WORKDIR/eval/<list name>/``:

- ``report.json``: the metrics, their thresholds, the trial counts, the list's name, path and
  sha256, the checkpoint (kind and step), protocol, scoring, normalisation, and the
  non-learned baseline's metrics on the same list;
- ``scores.txt``: ``label enroll test score`` per trial (the list's order);
- ``det.png``: DET curves (model and baseline) on normal-deviate axes, EER and minDCF points;
- ``score_hist.png``: target / non-target score histograms with the EER threshold.

The non-learned baseline scores a trial by the cosine of per-utterance log-mel statistics
(the mean and standard deviation over time of the authors' 80-band log-mel features *without*
mean subtraction, centred by their average over the list's utterances): it tells how much of
the task a model-free spectral average already solves. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hamjax import io_utils, metrics, scoring
from hamjax import trials as trials_lib

__all__ = [
    "EvalSettings",
    "baseline_embed_fn",
    "evaluate",
    "plot_det",
    "plot_histogram",
    "resolve_settings",
    "training_cohort",
    "validation_eer",
    "write_report",
    "write_scores",
]

log = logging.getLogger(__name__)

NORMS = ("none", "asnorm")
#: Embedding cache folder, ``WORKDIR/eval/cache``.
CACHE_DIR = "cache"
P_TARGETS = (0.01, 0.05)
BASELINE_DESCRIPTION = (
    "cosine of per-utterance [mean, std] over time of 80-band log-mel features (authors' "
    "frontend, no mean subtraction), centred by their mean over the list's utterances"
)
PROTOCOL_DESCRIPTIONS = {
    "authors": (
        "mean of the full-utterance score and the mean of the 5x5 scores between five evenly "
        f"spaced crops of {scoring.AUTHORS_CROP_SAMPLES} samples (3 s); cosine on L2-normalised "
        "embeddings"
    ),
    "full": "one embedding per full utterance (length buckets with masks)",
}


# ------------------------------------------------------------------------------ settings


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Everything that decides an evaluation's numbers (recorded in every report).

    Attributes:
      trials: trial-list files.
      checkpoint: ``"latest"``, ``"final"`` or a step.
      protocol: ``"authors"`` or ``"full"``.
      score: ``"cosine"`` or ``"poincare"``.
      norm: ``"none"`` or ``"asnorm"``.
      wav_root: directory the trial lists' paths are relative to.
      wav_scp: optional Kaldi ``wav.scp`` mapping utterance ids to files.
      data_dir: TFDS data directory of the training set (AS-norm cohort listing).
      top_k: AS-norm top-k cohort scores.
      cohort_size: AS-norm cohort speakers (0 = every training speaker).
      cohort_utterances: training utterances averaged per cohort speaker (0 = all).
      seed: seeds the cohort's speaker / utterance choice.
      baseline: also score the non-learned log-mel baseline.
      batch_seconds: audio seconds per device call.
    """

    trials: tuple[Path, ...]
    checkpoint: str | int = "final"
    protocol: str = "authors"
    score: str = "cosine"
    norm: str = "none"
    wav_root: Path | None = None
    wav_scp: Path | None = None
    data_dir: Path | None = None
    top_k: int = 300
    cohort_size: int = 0
    cohort_utterances: int = 10
    seed: int = 0
    baseline: bool = True
    batch_seconds: float = 64.0


def _expand(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.expandvars(str(path))).expanduser()


def _resolve_trial_path(spec: str, data_root: Path | None) -> Path:
    """A trial list named in flags / config: as given, else under ``data.root`` (and trials/)."""
    direct = _expand(spec)
    candidates = [direct]
    if not direct.is_absolute() and data_root is not None:
        for base in (data_root, data_root / "trials"):
            candidates += [base / spec, base / f"{spec}.txt"]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise trials_lib.TrialListError(
        f"trial list {spec!r} not found (looked at {', '.join(str(c) for c in candidates)})"
    )


def _parse_checkpoint(value: Any) -> str | int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text in ("latest", "final"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"checkpoint={value!r}: expected 'latest', 'final' or a step number")


def resolve_settings(
    workdir: str | os.PathLike[str], config: Any, **overrides: Any
) -> EvalSettings:
    """Evaluation settings: explicit ``overrides`` (None = unset) over the config's ``eval``.

    Args:
      workdir: the training work directory.
      config: its resolved config (``checkpointing.load_config``).
      **overrides: any :class:`EvalSettings` field; ``trials`` may be a comma-separated string.

    Returns:
      :class:`EvalSettings` with every path resolved.

    Raises:
      ValueError: an unknown choice (the field, value and valid choices are named), no trial
        lists, or a trial list that cannot be found.
    """
    ev = config.get("eval", {}) if hasattr(config, "get") else {}
    asn = ev.get("asnorm", {}) if ev else {}
    data = config.get("data", {}) if hasattr(config, "get") else {}
    o = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(o) - {f.name for f in dataclasses.fields(EvalSettings)})
    if unknown:
        raise ValueError(f"resolve_settings: unknown setting(s) {unknown}")

    data_root = _expand(data["root"]) if data.get("root") else None
    spec = o.get("trials", ev.get("trials", ()))
    if isinstance(spec, str):
        spec = [s for s in (p.strip() for p in spec.split(",")) if s]
    if not spec:
        raise ValueError(
            "no trial lists: pass --trials FILE[,FILE...] or set eval.trials in the config"
        )
    trial_paths = tuple(_resolve_trial_path(str(s), data_root) for s in spec)

    which = o.get("checkpoint", ev.get("checkpoint", "final"))
    which = _parse_checkpoint(which)
    if which == "final" and "checkpoint" not in o and not (Path(workdir) / "final").exists():
        which = "latest"  # the config default means "final if it exists, else latest"

    protocol = o.get("protocol", ev.get("protocol", "authors"))
    score = o.get("score", ev.get("score", "cosine"))
    norm = o.get("norm", ev.get("norm", "none"))
    for field, value, choices in (
        ("protocol", protocol, scoring.PROTOCOLS),
        ("score", score, scoring.SCORES),
        ("norm", norm, NORMS),
    ):
        if value not in choices:
            raise ValueError(f"{field}={value!r}: expected one of {', '.join(choices)}")

    wav_root = o.get("wav_root", ev.get("wav_root", "") or None)
    if wav_root is None and data_root is not None:
        wav_root = data_root / "wav" if (data_root / "wav").is_dir() else data_root
    wav_scp = o.get("wav_scp", ev.get("wav_scp", "") or None)
    data_dir = o.get("data_dir", data.get("data_dir") or None)
    settings = EvalSettings(
        trials=trial_paths,
        checkpoint=which,
        protocol=str(protocol),
        score=str(score),
        norm=str(norm),
        wav_root=_expand(wav_root) if wav_root else None,
        wav_scp=_expand(wav_scp) if wav_scp else None,
        data_dir=_expand(data_dir) if data_dir else None,
        top_k=int(o.get("top_k", asn.get("top_k", 300))),
        cohort_size=int(o.get("cohort_size", asn.get("cohort_size", 0))),
        cohort_utterances=int(o.get("cohort_utterances", asn.get("utterances_per_speaker", 10))),
        seed=int(o.get("seed", config.get("seed", 0) if hasattr(config, "get") else 0)),
        baseline=bool(o.get("baseline", True)),
        batch_seconds=float(o.get("batch_seconds", ev.get("batch_seconds", 64.0))),
    )
    if settings.top_k < 1:
        raise ValueError(f"asnorm top_k={settings.top_k}: expected >= 1")
    if settings.cohort_size < 0 or settings.cohort_utterances < 0:
        raise ValueError(
            f"asnorm cohort_size={settings.cohort_size}, cohort_utterances="
            f"{settings.cohort_utterances}: expected >= 0 (0 = all)"
        )
    if settings.batch_seconds <= 0:
        raise ValueError(f"batch_seconds={settings.batch_seconds}: expected > 0")
    return settings


# ------------------------------------------------------------------------------ baseline


def baseline_embed_fn() -> Callable[[Any, jax.Array, jax.Array | None], jax.Array]:
    """``embed(_, waveforms [B, S], mask [B, S]) -> [B, 160]``: log-mel mean and std over time.

    .. math:: v = \\big[\\tfrac1T\\sum_t x_t,\\ \\sqrt{\\tfrac1T\\sum_t (x_t - \\bar x)^2}\\big]

    over the valid frames of the authors' log-mel features computed without mean subtraction
    (with it the mean would be 0). The first argument (model variables) is ignored so that the
    function fits :func:`hamjax.scoring.extract_embeddings`.
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


def _baseline_scores(stats: np.ndarray, enroll_idx: np.ndarray, test_idx: np.ndarray) -> np.ndarray:
    centred = stats - stats.mean(axis=0, keepdims=True)
    emb = scoring.Embeddings(tuple(str(i) for i in range(len(stats))), centred.astype(np.float32))
    return scoring.score_trials(emb, enroll_idx, test_idx, score="cosine")


# ------------------------------------------------------------------------------ cohort


def training_cohort(
    config: Any,
    *,
    data_dir: Path | None,
    cohort_size: int,
    utterances_per_speaker: int,
    seed: int,
) -> tuple[list[str], list[Path], list[str], str]:
    """Training utterances for the AS-norm cohort, chosen per speaker with ``seed``.

    The training set is listed from the prepared TFDS dataset's recorded source (its corpus
    root / list file / Kaldi files, minus skipped files) when ``data_dir/data.name`` exists,
    else from the config's ``data`` section (``root/train_list.txt`` when present).

    Returns:
      ``(utterance ids, paths, speakers, description of the source)``.

    Raises:
      ValueError: the training corpus cannot be listed (the message says what was tried).
    """
    from hamjax.data import corpus as corpus_lib

    data = config.data
    name = data.get("name", "")
    utts = None
    source = ""
    if data_dir is not None and name:
        try:
            from hamjax.data import tfds_builder

            # data.config (recorded by the trainer) picks the exact prepared variant.
            info = tfds_builder.load_dataset_info(data_dir, name, config=data.get("config") or None)
        except (FileNotFoundError, ValueError) as err:
            log.info("AS-norm cohort: no prepared dataset (%s); listing data.root", err)
        else:
            src = dict(info.source)
            skipped = {s[0] for s in info.skipped}
            if src.get("source") == "kaldi":
                utts = corpus_lib.list_kaldi(src["wav_scp"], src.get("utt2spk"))
            else:
                root = Path(src["root"])
                list_file = src.get("list_file")
                if src.get("source") == "synthetic":
                    list_file = root / "train_list.txt"
                utts = corpus_lib.list_voxceleb(root, list_file=list_file)
            utts = [u for u in utts if u.utterance_id not in skipped]
            source = f"TFDS dataset {name} ({info.builder_dir})"
    if utts is None:
        root = _expand(data.root)
        kind = data.get("source", "voxceleb")
        if kind == "kaldi":
            utts = corpus_lib.list_kaldi(root, None)
        else:
            lst = root / "train_list.txt"
            utts = corpus_lib.list_voxceleb(root, list_file=lst if lst.is_file() else None)
            source = f"{lst if lst.is_file() else root}"
    if not utts:
        raise ValueError(f"AS-norm cohort: the training set ({source}) lists no utterances")

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    by_speaker: dict[str, list[Any]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    speakers = sorted(by_speaker)
    if 0 < cohort_size < len(speakers):
        speakers = sorted(rng.choice(speakers, size=cohort_size, replace=False).tolist())
    ids, paths, spk = [], [], []
    for s in speakers:
        group = sorted(by_speaker[s], key=lambda u: u.utterance_id)
        if 0 < utterances_per_speaker < len(group):
            pick = np.sort(rng.choice(len(group), size=utterances_per_speaker, replace=False))
            group = [group[i] for i in pick]
        for u in group:
            ids.append(f"{u.utterance_id}")
            paths.append(Path(u.path))
            spk.append(s)
    return ids, paths, spk, source


# ------------------------------------------------------------------------------ outputs


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _metrics_dict(m: metrics.VerificationMetrics) -> dict[str, Any]:
    return {
        "eer": m.eer,
        "eer_percent": 100.0 * m.eer,
        "eer_threshold": _finite_or_none(m.eer_threshold),
        "min_dcf": {
            f"{p:g}": {"value": v, "threshold": _finite_or_none(t), "c_miss": 1.0, "c_fa": 1.0}
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


def _savefig(fig: Any, path: str | os.PathLike[str]) -> None:
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
    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    lo, hi = norm.ppf(0.0005), norm.ppf(0.85)
    fig = Figure(figsize=(5.5, 5.5))
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
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)


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
    ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)


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


# ------------------------------------------------------------------------------ validation


def encoder_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder's ``{"params", "batch_stats"}`` out of the model's
    ``{"params": {"encoder", "head"}, "batch_stats": {"encoder"}}`` (the checkpoint layout)."""
    try:
        return {
            "params": variables["params"]["encoder"],
            "batch_stats": variables.get("batch_stats", {}).get("encoder", {}),
        }
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            "model variables: expected {'params': {'encoder', 'head'}, 'batch_stats': "
            f"{{'encoder'}}}}, got keys {list(variables)} ({err})"
        ) from err


_EMBED_FNS: dict[str, Callable[..., jax.Array]] = {}


def _jitted_embed(encoder: Any, feature_kwargs: Mapping[str, Any]) -> Callable[..., jax.Array]:
    """One jitted ``embed`` per (encoder, features), so repeated evaluations reuse compilations."""
    from hamjax import models

    key = f"{encoder!r}|{json.dumps(dict(feature_kwargs), sort_keys=True, default=str)}"
    if key not in _EMBED_FNS:
        _EMBED_FNS[key] = jax.jit(models.make_embed_fn(encoder, feature_kwargs))
    return _EMBED_FNS[key]


@functools.lru_cache(maxsize=4096)
def _cached_audio(path: Path) -> np.ndarray:
    # Validation re-reads the same lists every few epochs: keep their (small) audio in memory.
    from hamjax.data.audio import load_audio

    wav = load_audio(path)
    wav.setflags(write=False)
    return wav


def validation_eer(
    config: Any,
    encoder: Any,
    variables: Any,
    *,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, float]:
    """EER (%) of the current weights on ``config.eval.trials``, for the trainer's validation.

    Uses the ``full`` protocol with cosine scoring and no normalisation (cheap and
    weight-independent settings; the trainer logs the values as ``val/<list>_eer``). Nothing is
    written or cached on disk.

    Args:
      config: the (resolved) training config.
      encoder: the encoder module.
      variables: ``{"params": {"encoder"}, "batch_stats": {"encoder"}}`` host arrays.
      workdir: unused (accepted for the trainer's call signature).

    Returns:
      ``{"<list name>_eer": eer_percent}``.
    """
    del workdir
    from hamjax import train_lib

    variables = encoder_variables(variables)
    st = resolve_settings(
        ".", config, protocol="full", score="cosine", norm="none", checkpoint="latest"
    )
    embed = _jitted_embed(encoder, train_lib.feature_kwargs(config))
    out: dict[str, float] = {}
    for path in st.trials:
        tl = trials_lib.read_trials(path)
        utts = tl.utterances()
        resolved = trials_lib.resolve_audio(utts, st.wav_root, source=str(tl.path))
        emb = scoring.extract_protocol(
            embed,
            variables,
            utts,
            lambda name, r=resolved: _cached_audio(r[name]),
            protocol="full",
            batch_samples=int(st.batch_seconds * 16_000),
        )
        scores = scoring.score_trials(emb, *tl.indices(emb.names), score="cosine")
        out[f"{tl.name}_eer"] = 100.0 * metrics.eer(scores, tl.labels)[0]
    return out


# ------------------------------------------------------------------------------ the job


def _load_fn(resolved: Mapping[str, Path]) -> Callable[[str], np.ndarray]:
    from hamjax.data.audio import load_audio

    return lambda name: load_audio(resolved[name])


def evaluate(
    workdir: str | os.PathLike[str],
    *,
    print_fn: Callable[[str], None] | None = print,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluates a trained work directory on its trial lists and writes the reports.

    Args:
      workdir: a ``train.py --workdir`` directory (holding ``config.json`` and checkpoints).
      print_fn: receives one summary line per trial list (None = silent).
      **overrides: :class:`EvalSettings` fields overriding the config's ``eval`` section
        (``trials``, ``checkpoint``, ``protocol``, ``score``, ``norm``, ``wav_root``,
        ``data_dir``, ``top_k``, ``cohort_size`` ...); None means "use the config".

    Returns:
      ``{list name: report dict}`` (the content of each ``report.json``).

    Raises:
      FileNotFoundError: no config or checkpoint in ``workdir``.
      hamjax.trials.TrialListError: a malformed trial list or missing audio.
      ValueError: bad settings, or ``score='poincare'`` with a Euclidean head.
    """
    from hamjax import checkpointing, train_lib

    workdir = _expand(workdir).absolute()
    config = checkpointing.load_config(workdir)
    st = resolve_settings(workdir, config, **overrides)

    lists = [trials_lib.read_trials(p) for p in st.trials]
    names = [tl.name for tl in lists]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(
            f"trial lists share the name(s) {dupes} (the output folder eval/<name>); rename one"
        )
    if CACHE_DIR in names:
        raise ValueError(
            f"a trial list is named {CACHE_DIR!r}, the embedding cache's folder eval/{CACHE_DIR}; "
            "rename the file"
        )
    wav_scp = trials_lib.read_wav_scp(st.wav_scp) if st.wav_scp else None
    utterances = sorted({u for tl in lists for u in tl.utterances()})
    resolved: dict[str, Path] = {}
    for tl in lists:  # one error per list, naming it
        resolved.update(
            trials_lib.resolve_audio(tl.utterances(), st.wav_root, wav_scp, source=str(tl.path))
        )

    inf = checkpointing.load_inference(workdir, st.checkpoint)
    variables = encoder_variables(inf.variables)
    geometry = None
    if st.score == "poincare":
        geometry = scoring.ball_geometry(
            inf.head, inf.variables["params"]["head"], config.head.name
        )
    embed = _jitted_embed(inf.encoder, train_lib.feature_kwargs(config))
    batch_samples = int(st.batch_seconds * 16_000)
    cache_dir = workdir / "eval" / CACHE_DIR
    model_key = {
        "checkpoint": str(st.checkpoint) if st.checkpoint == "final" else "step",
        "step": int(inf.step),
        "params": scoring.fingerprint(variables)[:32],
        "features": config.features.to_dict(),
        "model": config.model.to_dict(),
        "crop": [scoring.AUTHORS_NUM_CROPS, scoring.AUTHORS_CROP_SAMPLES],
    }
    # Utterance names are only meaningful with the files they resolved to.
    utt_key = {**model_key, "audio": str(st.wav_root), "wav_scp": str(st.wav_scp)}

    def cached_extract(key: dict[str, Any], utts: list[str], load, protocol: str, fn, what: str):
        emb = scoring.find_cached(cache_dir, key, utts, protocol)
        if emb is not None:
            log.info("%s embeddings: %d utterances from the cache", what, len(utts))
            return emb
        log.info("%s embeddings: extracting %d utterances (%s)", what, len(utts), protocol)
        logged = [0]

        def progress(done: int, total: int) -> None:
            if done == total or done - logged[0] >= max(1, total // 10):  # ~every 10%
                log.info("%s embeddings: %d / %d", what, done, total)
                logged[0] = done

        emb = scoring.extract_protocol(
            fn,
            variables,
            utts,
            load,
            protocol=protocol,
            batch_samples=batch_samples,
            progress=progress,
        )
        path = scoring.cache_path(cache_dir, key, utts, protocol)
        scoring.save_embeddings(path, emb, {"key": json.loads(json.dumps(key, default=str))})
        return emb

    emb_all = cached_extract(utt_key, utterances, _load_fn(resolved), st.protocol, embed, "trial")

    norm_info: dict[str, Any] = {"kind": st.norm}
    cohort_mean = cohort_std = None
    if st.norm == "asnorm":
        c_ids, c_paths, c_spk, c_source = training_cohort(
            config,
            data_dir=st.data_dir,
            cohort_size=st.cohort_size,
            utterances_per_speaker=st.cohort_utterances,
            seed=st.seed,
        )
        c_resolved = dict(zip(c_ids, c_paths, strict=True))
        c_key = {**model_key, "cohort": scoring.fingerprint([str(p) for p in c_paths])[:32]}
        c_emb = cached_extract(c_key, c_ids, _load_fn(c_resolved), "full", embed, "cohort")
        c_emb = c_emb.select(c_ids)
        cohort, c_names = scoring.speaker_means(c_emb.full, c_spk, score=st.score)
        c_scores = scoring.cohort_scores(emb_all, cohort, score=st.score, geometry=geometry)
        cohort_mean, cohort_std = scoring.cohort_stats(c_scores, st.top_k)
        norm_info.update(
            top_k=min(st.top_k, len(c_names)),
            cohort_speakers=len(c_names),
            cohort_utterances=len(c_ids),
            cohort_source=c_source,
            cohort_embedding="per-speaker mean of full-utterance embeddings",
        )

    base_all = None
    if st.baseline:
        base_key = {"baseline": BASELINE_DESCRIPTION, "audio": str(st.wav_root)}
        base_key["wav_scp"] = str(st.wav_scp)
        base_all = cached_extract(
            base_key, utterances, _load_fn(resolved), "full", baseline_embed_fn(), "baseline"
        )

    reports: dict[str, dict[str, Any]] = {}
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    from hamjax import __version__

    for tl in lists:
        e_idx, t_idx = tl.indices(emb_all.names)
        raw = scoring.score_trials(emb_all, e_idx, t_idx, score=st.score, geometry=geometry)
        scores = raw
        if cohort_mean is not None:
            scores = scoring.as_norm(raw, e_idx, t_idx, cohort_mean, cohort_std)
        m = metrics.compute_metrics(scores, tl.labels, P_TARGETS)
        report: dict[str, Any] = {
            "trial_list": {
                "name": tl.name,
                "path": str(tl.path.absolute()),
                "sha256": tl.sha256,
                "format": tl.format,
                "num_trials": len(tl),
                "num_target": tl.num_target,
                "num_nontarget": tl.num_nontarget,
                "num_utterances": len(tl.utterances()),
            },
            "checkpoint": {"workdir": str(workdir), "which": str(st.checkpoint), "step": inf.step},
            "model": {"encoder": config.model.name, "head": config.head.name},
            "protocol": st.protocol,
            "protocol_description": PROTOCOL_DESCRIPTIONS[st.protocol],
            "scoring": st.score,
            "normalisation": norm_info,
            **_metrics_dict(m),
            "files": {"scores": "scores.txt", "det": "det.png", "histogram": "score_hist.png"},
            "hamjax_version": __version__,
            "created": created,
        }
        if geometry is not None:
            report["geometry"] = {"c": geometry.c, "mode": geometry.mode}
        out_dir = workdir / "eval" / tl.name
        p_miss, p_fa, _ = metrics.det_curve(scores, tl.labels)
        label = f"{config.head.name} ({st.protocol}/{st.score}/{st.norm})"
        curves = {label: (p_miss, p_fa, m)}
        if base_all is not None:
            # Centred over this list's utterances only, so each list's baseline is its own.
            b_emb = base_all.select(tl.utterances())
            bscores = _baseline_scores(b_emb.full, *tl.indices(b_emb.names))
            bm = metrics.compute_metrics(bscores, tl.labels, P_TARGETS)
            report["baseline"] = {"description": BASELINE_DESCRIPTION, **_metrics_dict(bm)}
            report["baseline_eer_ratio"] = bm.eer / m.eer if m.eer > 0 else None
            bp_miss, bp_fa, _ = metrics.det_curve(bscores, tl.labels)
            curves["log-mel baseline"] = (bp_miss, bp_fa, bm)
        title = f"{tl.name}: {config.head.name}, step {inf.step}"
        header = (
            f"trial list {tl.name} sha256 {tl.sha256}; checkpoint {st.checkpoint} step "
            f"{inf.step}; protocol {st.protocol}; scoring {st.score}; norm {st.norm}"
        )
        write_scores(out_dir / "scores.txt", tl, scores, header)
        plot_det(out_dir / "det.png", curves, title)
        plot_histogram(out_dir / "score_hist.png", scores, tl.labels, m.eer_threshold, title)
        write_report(out_dir / "report.json", report)
        reports[tl.name] = report
        if print_fn is not None:
            print_fn(summary_line(report))
    return reports
