"""The evaluation job behind ``eval.py``, as WeSpeaker-style stages.

For a work directory trained by ``train.py`` and one or more trial lists::

    reports = eval_lib.evaluate("runs/quickstart")      # settings from runs/quickstart/config.json

runs, each stage a function of the previous one's output:

1. :func:`read_trial_lists` -- the lists and the audio file of every utterance they name;
2. :func:`extract` -- embeddings of those utterances through the model's
   :class:`hamjax.inference.Verifier` (cached on disk, :mod:`hamjax.embedding_cache`);
3. :func:`score` -- raw trial scores (cosine or Poincaré, :mod:`hamjax.scoring`);
4. :func:`asnorm_stage` / :func:`normalise` -- AS-norm with a cohort of training speakers
   (:mod:`hamjax.asnorm`), when asked for;
5. :func:`report` -- EER and minDCF (:mod:`hamjax.metrics`) and the files of
   ``WORKDIR/eval/<list name>/``: ``report.json``, ``scores.txt`` (``label enroll test score``
   in the list's order), ``det.png`` and ``score_hist.png`` (:mod:`hamjax.plots`) and
   ``calibration.json`` (scores -> log-likelihood ratios, :mod:`hamjax.calibration`; the
   report adds Cllr and actual DCF), each written atomically, beside the non-learned baseline
   (:mod:`hamjax.reports`).

:func:`hamjax.validation.validation_eer` is the trainer's cheap periodic version.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamjax import (
    asnorm,
    calibration,
    checkpointing,
    compile_cache,
    embedding_cache,
    io_utils,
    metrics,
    plots,
    reports,
)
from hamjax import trials as trials_lib
from hamjax.constants import seconds_to_samples
from hamjax.data import audio
from hamjax.embeddings import (
    AUTHORS_CROP_SAMPLES,
    AUTHORS_NUM_CROPS,
    Embeddings,
    extract_protocol,
)
from hamjax.eval_settings import EvalSettings, expand, resolve_settings
from hamjax.inference import Verifier

__all__ = [
    "CACHE_DIR",
    "TrialSet",
    "asnorm_stage",
    "evaluate",
    "extract",
    "normalise",
    "read_trial_lists",
    "report",
    "score",
    "score_and_report",
]

log = logging.getLogger(__name__)

#: Embedding cache folder, ``WORKDIR/eval/cache``.
CACHE_DIR = "cache"
#: Where the reports go by default, ``WORKDIR/eval/<list>/``.
REPORTS_DIR = "eval"
#: Each list's score calibration, ``WORKDIR/eval/<list>/calibration.json``.
CALIBRATION_FILE = "calibration.json"
P_TARGETS = (0.01, 0.05)
PROTOCOL_DESCRIPTIONS = {
    "authors": (
        "mean of the full-utterance score and the mean of the 5x5 scores between five evenly "
        f"spaced crops of {AUTHORS_CROP_SAMPLES} samples (3 s); cosine on L2-normalised "
        "embeddings"
    ),
    "full": "one embedding per full utterance (length buckets with masks)",
}


# ------------------------------------------------------------------------------ 1. trial lists


@dataclasses.dataclass(frozen=True)
class TrialSet:
    """The trial lists of one evaluation and the audio they name.

    Attributes:
      lists: the parsed lists (names unique: each is an output folder).
      utterances: every utterance named by any list, sorted.
      paths: ``utterance -> audio file``.
    """

    lists: list[trials_lib.TrialList]
    utterances: list[str]
    paths: dict[str, Path]


def read_trial_lists(settings: EvalSettings) -> TrialSet:
    """Stage 1: reads the lists and resolves every utterance to a file.

    Raises:
      hamjax.trials.TrialListError: a malformed list or missing audio (the list is named).
      ValueError: two lists share a name, or a list is named like the cache folder.
    """
    lists = [trials_lib.read_trials(p) for p in settings.trials]
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
    wav_scp = trials_lib.read_wav_scp(settings.wav_scp) if settings.wav_scp else None
    paths: dict[str, Path] = {}
    for tl in lists:  # one error per list, naming it
        paths.update(
            trials_lib.resolve_audio(
                tl.utterances(), settings.wav_root, wav_scp, source=str(tl.path)
            )
        )
    return TrialSet(lists, sorted({u for tl in lists for u in tl.utterances()}), paths)


# ------------------------------------------------------------------------------ 2. extraction


def _model_key(verifier: Verifier, settings: EvalSettings) -> dict[str, Any]:
    """What embeddings depend on besides the audio: checkpoint, weights, settings."""
    return {
        "checkpoint": str(settings.checkpoint) if settings.checkpoint == "final" else "step",
        "step": int(verifier.step),
        "params": embedding_cache.fingerprint(verifier.encoder_variables)[:32],
        "features": verifier.config.features.to_dict(),
        "model": verifier.config.model.to_dict(),
        "crop": [AUTHORS_NUM_CROPS, AUTHORS_CROP_SAMPLES],
    }


def trial_cache_key(verifier: Verifier, settings: EvalSettings) -> dict[str, Any]:
    """The cache key of the trial utterances' embeddings: the model's key and the audio's
    location (utterance names are only meaningful with the files they resolved to)."""
    return {
        **_model_key(verifier, settings),
        "audio": str(settings.wav_root),
        "wav_scp": str(settings.wav_scp),
    }


def progress_logger(what: str) -> Callable[[int, int], None]:
    logged = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - logged[0] >= max(1, total // 10):  # ~every 10%
            log.info("%s embeddings: %d / %d", what, done, total)
            logged[0] = done

    return progress


def cached_embeddings(
    cache_dir: Path,
    key: Mapping[str, Any],
    names: Sequence[str],
    compute: Callable[[Callable[[int, int], None]], Embeddings],
    *,
    protocol: str,
    what: str,
    stats: np.ndarray | None = None,
) -> Embeddings:
    """``names``' embeddings from the cache under ``key`` (and audio ``stats``), else computed.

    Args:
      cache_dir: ``WORKDIR/eval/cache``.
      key: what the embeddings depend on besides the utterances.
      names: the utterances, the row order.
      compute: ``compute(progress) -> Embeddings`` when nothing cached fits.
      protocol: ``"full"`` or ``"authors"``.
      what: for the log lines ("trial", "cohort", "baseline").
      stats: :func:`hamjax.embedding_cache.file_stats` of the audio (None: not file-backed).
    """
    emb = embedding_cache.find_cached(cache_dir, key, names, protocol, stats=stats)
    if emb is not None:
        log.info("%s embeddings: %d utterances from the cache", what, len(names))
        return emb
    log.info("%s embeddings: extracting %d utterances (%s)", what, len(names), protocol)
    emb = compute(progress_logger(what))
    store_embeddings(cache_dir, key, names, emb, protocol=protocol, stats=stats)
    return emb


def store_embeddings(
    cache_dir: Path,
    key: Mapping[str, Any],
    names: Sequence[str],
    emb: Embeddings,
    *,
    protocol: str,
    stats: np.ndarray | None = None,
) -> None:
    """Writes ``emb`` to the cache under ``key`` where :func:`cached_embeddings` finds it."""
    path = embedding_cache.cache_path(cache_dir, key, names, protocol)
    meta = {"key": json.loads(json.dumps(dict(key), default=str))}
    embedding_cache.save_embeddings(path, emb, meta, stats=stats)


def extract(
    verifier: Verifier, trial_set: TrialSet, settings: EvalSettings, cache_dir: Path
) -> Embeddings:
    """Stage 2: embeddings of every trial utterance under ``settings.protocol`` (cached).

    Raises:
      hamjax.data.audio.AudioError: unreadable audio, or audio shorter than the verifier's
        ``min_seconds`` (the file is named).
    """
    names = trial_set.utterances
    key = trial_cache_key(verifier, settings)
    paths = trial_set.paths
    return cached_embeddings(
        cache_dir,
        key,
        names,
        lambda progress: verifier.embed_protocol(
            names, lambda n: verifier.load(paths[n]), progress=progress
        ),
        protocol=settings.protocol,
        what="trial",
        stats=embedding_cache.file_stats([paths[n] for n in names]),
    )


def extract_baseline(trial_set: TrialSet, settings: EvalSettings, cache_dir: Path) -> Embeddings:
    """The non-learned baseline's per-utterance statistics (cached like the model's)."""

    names, paths = trial_set.utterances, trial_set.paths
    key = {
        "baseline": reports.BASELINE_DESCRIPTION,
        "audio": str(settings.wav_root),
        "wav_scp": str(settings.wav_scp),
    }
    embed = _baseline_fn()
    return cached_embeddings(
        cache_dir,
        key,
        names,
        lambda progress: extract_protocol(
            embed,
            None,
            names,
            lambda n: audio.load_audio(paths[n]),
            protocol="full",
            batch_samples=seconds_to_samples(settings.batch_seconds),
            progress=progress,
        ),
        protocol="full",
        what="baseline",
        stats=embedding_cache.file_stats([paths[n] for n in names]),
    )


@functools.lru_cache(maxsize=1)
def _baseline_fn() -> Callable[..., Any]:
    import jax

    return jax.jit(reports.baseline_embed_fn())


# ------------------------------------------------------------------------------ 3. scoring


def score(verifier: Verifier, emb: Embeddings, tl: trials_lib.TrialList) -> np.ndarray:
    """Stage 3: raw ``[N]`` scores of ``tl``'s trials with the verifier's scoring."""
    return verifier.score_embeddings(emb, *tl.indices(emb.names))


# ------------------------------------------------------------------------------ 4. AS-norm


@dataclasses.dataclass(frozen=True)
class Normaliser:
    """AS-norm statistics of every trial utterance against the cohort.

    Attributes:
      names: utterance names, the rows of ``mean`` / ``std``.
      mean, std: ``[U]`` top-k cohort score mean and standard deviation.
      info: what the report records about the cohort.
    """

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    info: dict[str, Any]


def asnorm_stage(
    verifier: Verifier,
    emb: Embeddings,
    settings: EvalSettings,
    cache_dir: Path,
) -> Normaliser:
    """Stage 4a: the cohort of training speakers and each utterance's top-k statistics."""
    cohort = asnorm.training_cohort(
        verifier.config.data,
        data_dir=settings.data_dir,
        cohort_size=settings.cohort_size,
        utterances_per_speaker=settings.cohort_utterances,
        seed=settings.seed,
    )
    key = {**_model_key(verifier, settings), "cohort": cohort.fingerprint[:32]}
    c_emb = cached_embeddings(
        cache_dir,
        key,
        cohort.ids,
        lambda progress: verifier.embed_protocol(
            cohort.ids, cohort.load, protocol="full", progress=progress
        ),
        protocol="full",
        what="cohort",
    ).select(cohort.ids)
    geometry = verifier.geometry if settings.score == "poincare" else None
    means, speakers = asnorm.speaker_means(c_emb.full, cohort.speakers, score=settings.score)
    c_scores = asnorm.cohort_scores(emb, means, score=settings.score, geometry=geometry)
    mean, std = asnorm.cohort_stats(c_scores, settings.top_k)
    info = {
        "kind": "asnorm",
        "top_k": min(settings.top_k, len(speakers)),
        "cohort_speakers": len(speakers),
        "cohort_utterances": len(cohort.ids),
        "cohort_source": cohort.source,
        "cohort_embedding": "per-speaker mean of full-utterance embeddings",
    }
    return Normaliser(emb.names, mean, std, info)


def normalise(
    raw: np.ndarray, tl: trials_lib.TrialList, normaliser: Normaliser | None
) -> np.ndarray:
    """Stage 4b: AS-norm of ``tl``'s raw scores (unchanged without a normaliser)."""
    if normaliser is None:
        return raw
    return asnorm.as_norm(raw, *tl.indices(normaliser.names), normaliser.mean, normaliser.std)


# ------------------------------------------------------------------------------ 5. report


def _baseline_part(
    base: Embeddings, tl: trials_lib.TrialList, m: metrics.VerificationMetrics
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, metrics.VerificationMetrics]]:
    # Centred over this list's utterances only, so each list's baseline is its own.
    b_emb = base.select(tl.utterances())
    bscores = reports.baseline_scores(b_emb.full, *tl.indices(b_emb.names))
    bm = metrics.compute_metrics(bscores, tl.labels, P_TARGETS)
    part = {
        "baseline": {"description": reports.BASELINE_DESCRIPTION, **reports.metrics_dict(bm)},
        "baseline_eer_ratio": bm.eer / m.eer if m.eer > 0 else None,
    }
    p_miss, p_fa, _ = metrics.det_curve(bscores, tl.labels)
    return part, (p_miss, p_fa, bm)


def _calibration_part(
    out_dir: Path, tl: trials_lib.TrialList, scores: np.ndarray, m: metrics.VerificationMetrics
) -> dict[str, Any]:
    """Fits the list's score -> LLR calibration, writes ``calibration.json``, and returns the
    report fields: the calibration, Cllr and actual DCF beside minDCF."""
    cal = calibration.fit(
        scores, tl.labels, eer_threshold=reports.finite_or_none(m.eer_threshold), source=tl.name
    )
    io_utils.write_json(out_dir / CALIBRATION_FILE, cal.to_dict())
    llr = cal.llr(scores)
    act = calibration.act_dcf(llr, tl.labels, P_TARGETS)
    return {
        "calibration": {
            **cal.to_dict(),
            "file": CALIBRATION_FILE,
            "fitted_on": "this list's own scores (self-calibration)",
        },
        "cllr": calibration.cllr(llr, tl.labels),
        "act_dcf": {f"{p:g}": v for p, v in act.items()},
    }


def report(
    out_dir: Path,
    tl: trials_lib.TrialList,
    scores: np.ndarray,
    *,
    verifier: Verifier,
    settings: EvalSettings,
    norm_info: Mapping[str, Any],
    baseline: Embeddings | None,
    workdir: Path,
) -> dict[str, Any]:
    """Stage 5: metrics of ``scores`` and the list's files in ``out_dir``; returns the report."""
    from hamjax import __version__

    config = verifier.config
    m = metrics.compute_metrics(scores, tl.labels, P_TARGETS)
    rep: dict[str, Any] = {
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
        "checkpoint": {
            "workdir": str(workdir),
            "which": str(settings.checkpoint),
            "step": verifier.step,
        },
        "model": {"encoder": config.model.name, "head": config.head.name},
        "protocol": settings.protocol,
        "protocol_description": PROTOCOL_DESCRIPTIONS[settings.protocol],
        "scoring": settings.score,
        "normalisation": dict(norm_info),
        **reports.metrics_dict(m),
        "files": {
            "scores": "scores.txt",
            "det": "det.png",
            "histogram": "score_hist.png",
            "calibration": CALIBRATION_FILE,
        },
        "hamjax_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if settings.score == "poincare":
        g = verifier.geometry
        rep["geometry"] = {
            "c": g.c,
            "mode": g.mode,
            "feature_clip": g.feature_clip,
            "feature_scale": g.feature_scale,
        }
    rep.update(_calibration_part(out_dir, tl, scores, m))
    p_miss, p_fa, _ = metrics.det_curve(scores, tl.labels)
    label = f"{config.head.name} ({settings.protocol}/{settings.score}/{settings.norm})"
    curves = {label: (p_miss, p_fa, m)}
    if baseline is not None:
        part, curves["log-mel baseline"] = _baseline_part(baseline, tl, m)
        rep.update(part)
    title = f"{tl.name}: {config.head.name}, step {verifier.step}"
    header = (
        f"trial list {tl.name} sha256 {tl.sha256}; checkpoint {settings.checkpoint} step "
        f"{verifier.step}; protocol {settings.protocol}; scoring {settings.score}; "
        f"norm {settings.norm}"
    )
    reports.write_scores(out_dir / "scores.txt", tl, scores, header)
    plots.plot_det(out_dir / "det.png", curves, title)
    plots.plot_histogram(out_dir / "score_hist.png", scores, tl.labels, m.eer_threshold, title)
    reports.write_report(out_dir / "report.json", rep)
    return rep


# ------------------------------------------------------------------------------ the job


def check_reports_dir(reports_dir: str) -> None:
    """Refuses a reports folder that is not one plain name inside the work directory."""
    if not reports_dir or Path(reports_dir).name != reports_dir or reports_dir in (".", ".."):
        raise ValueError(
            f"reports_dir={reports_dir!r}: expected one folder name inside the work directory "
            "(e.g. eval or eval_poincare)"
        )


def evaluate(
    workdir: str | os.PathLike[str],
    *,
    print_fn: Callable[[str], None] | None = print,
    reports_dir: str = REPORTS_DIR,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluates a trained work directory on its trial lists and writes the reports.

    Args:
      workdir: a ``train.py --workdir`` directory (holding ``config.json`` and checkpoints).
      print_fn: receives one summary line per trial list (None = silent).
      reports_dir: the folder of ``workdir`` that receives ``<list>/`` (default ``eval``; e.g.
        ``eval_poincare`` to keep a second scoring beside the first). Embeddings are cached
        in ``workdir/eval/cache`` whatever it is.
      **overrides: :class:`hamjax.eval_settings.EvalSettings` fields overriding the config's
        ``eval`` section (``trials``, ``checkpoint``, ``protocol``, ``score``, ``norm``,
        ``wav_root``, ``data_dir``, ``top_k``, ``cohort_size`` ...); None = use the config.

    Returns:
      ``{list name: report dict}`` (the content of each ``report.json``).

    Raises:
      FileNotFoundError: no config or checkpoint in ``workdir``.
      hamjax.trials.TrialListError: a malformed trial list or missing audio.
      ValueError: bad settings, or ``score='poincare'`` with a Euclidean head.
    """
    workdir = expand(workdir).absolute()
    check_reports_dir(reports_dir)
    config = checkpointing.load_config(workdir)
    compile_cache.enable_from_config(config)  # a repeated evaluation starts in seconds
    settings = resolve_settings(workdir, config, **overrides)
    trial_set = read_trial_lists(settings)
    verifier = Verifier.from_workdir(
        workdir,
        settings.checkpoint,
        protocol=settings.protocol,
        scoring_kind=settings.score,
        batch_samples=seconds_to_samples(settings.batch_seconds),
    )
    if settings.score == "poincare":
        verifier.geometry  # noqa: B018 -- a Euclidean head fails here, before any extraction
    cache_dir = workdir / "eval" / CACHE_DIR
    emb = extract(verifier, trial_set, settings, cache_dir)
    baseline = extract_baseline(trial_set, settings, cache_dir) if settings.baseline else None
    return score_and_report(
        workdir, verifier, settings, trial_set, emb, baseline, print_fn, reports_dir
    )


def score_and_report(
    workdir: Path,
    verifier: Verifier,
    settings: EvalSettings,
    trial_set: TrialSet,
    emb: Embeddings,
    baseline: Embeddings | None,
    print_fn: Callable[[str], None] | None = print,
    reports_dir: str = REPORTS_DIR,
) -> dict[str, dict[str, Any]]:
    """Stages 3-5 for every list of ``trial_set``, given the extracted embeddings ``emb``
    (and the baseline's): AS-norm when asked for, scores, and ``WORKDIR/eval/<list>/``."""
    cache_dir = workdir / "eval" / CACHE_DIR
    normaliser = (
        asnorm_stage(verifier, emb, settings, cache_dir) if settings.norm == "asnorm" else None
    )
    out: dict[str, dict[str, Any]] = {}
    for tl in trial_set.lists:
        scores = normalise(score(verifier, emb, tl), tl, normaliser)
        out[tl.name] = report(
            workdir / reports_dir / tl.name,
            tl,
            scores,
            verifier=verifier,
            settings=settings,
            norm_info=normaliser.info if normaliser else {"kind": "none"},
            baseline=baseline,
            workdir=workdir,
        )
        if print_fn is not None:
            print_fn(reports.summary_line(out[tl.name]))
    return out
