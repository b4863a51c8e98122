"""Evaluation of a sweep (:mod:`hamjax.sweep`): every variant, extracted together, one table.

``eval.py --workdir WORKDIR`` on a sweep's work directory (one with ``sweep.json``) runs::

    read the lists once  ->  embed every trial utterance with all V variants in one program
      (weights stacked [V, ...], audio read once: hamjax.inference.embed_stacked)
      ->  per variant: AS-norm, scores, WORKDIR/variants/<name>/eval/<list>/ (as eval.py)
      ->  WORKDIR/eval/sweep_table.md and sweep_results.json: one row per variant

Each variant's results are exactly what ``eval.py --workdir WORKDIR/variants/<name>`` writes
(same files, same embedding cache, so either command reuses the other's embeddings); only
the extraction is shared. The non-learned baseline is computed once, in ``WORKDIR/eval/cache``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hamjax import checkpointing, compile_cache, embedding_cache, eval_lib, io_utils, sweep
from hamjax.constants import seconds_to_samples
from hamjax.embeddings import Embeddings
from hamjax.eval_settings import EvalSettings, expand, resolve_settings
from hamjax.inference import Verifier, embed_stacked

__all__ = ["TABLE_FILE", "RESULTS_FILE", "evaluate_sweep", "is_sweep", "sweep_table"]

log = logging.getLogger(__name__)

#: ``WORKDIR/eval/sweep_table.md``: the one table of a sweep's evaluation.
TABLE_FILE = "sweep_table.md"
#: ``WORKDIR/eval/sweep_results.json``: the same figures, machine-readable.
RESULTS_FILE = "sweep_results.json"
# Settings that must agree across variants for one shared extraction.
_SHARED = ("trials", "wav_root", "wav_scp", "protocol", "batch_seconds", "checkpoint")


def is_sweep(workdir: str | os.PathLike[str]) -> bool:
    """Whether ``workdir`` is a sweep's work directory (it has ``sweep.json``)."""
    return sweep.read_manifest(expand(workdir)) is not None


def _variants(workdir: Path) -> dict[str, Path]:
    """``{name: variant work directory}`` from ``sweep.json``, each checked to exist."""
    manifest = sweep.read_manifest(workdir)
    dirs = {v["name"]: workdir / v["workdir"] for v in manifest["variants"]}
    missing = [n for n, d in dirs.items() if not (d / checkpointing.CONFIG_FILE).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{workdir / sweep.SWEEP_FILE}: variant(s) {', '.join(missing)} have no "
            f"{checkpointing.CONFIG_FILE} under {workdir / sweep.VARIANTS_DIR}: the sweep has "
            "not finished (train.py writes the variant directories at its end); resume it with "
            "the same train.py command"
        )
    return dirs


def _check_shared(settings: Mapping[str, EvalSettings]) -> EvalSettings:
    """The first variant's settings, after checking every variant agrees on the extraction."""
    names = list(settings)
    first = settings[names[0]]
    for name in names[1:]:
        for field in _SHARED:
            a, b = getattr(first, field), getattr(settings[name], field)
            if a != b:
                raise ValueError(
                    f"sweep variants {names[0]} and {name} have different eval.{field} "
                    f"({a!r} vs {b!r}); evaluate them one at a time with "
                    "eval.py --workdir WORKDIR/variants/<name>"
                )
    return first


def extract_variants(
    verifiers: Mapping[str, Verifier],
    settings: Mapping[str, EvalSettings],
    trial_set: eval_lib.TrialSet,
    dirs: Mapping[str, Path],
) -> dict[str, Embeddings]:
    """Every variant's trial embeddings: from its cache where it has them, the rest extracted
    in one stacked pass (:func:`hamjax.inference.embed_stacked`) and cached per variant."""
    names, paths = trial_set.utterances, trial_set.paths
    protocol = next(iter(settings.values())).protocol
    stats = embedding_cache.file_stats([paths[n] for n in names])
    keys = {v: eval_lib.trial_cache_key(verifiers[v], settings[v]) for v in verifiers}
    caches = {v: dirs[v] / "eval" / eval_lib.CACHE_DIR for v in verifiers}
    out: dict[str, Embeddings | None] = {
        v: embedding_cache.find_cached(caches[v], keys[v], names, protocol, stats=stats)
        for v in verifiers
    }
    todo = [v for v, e in out.items() if e is None]
    if len(todo) < len(out):
        log.info("trial embeddings of %d variant(s) from their caches", len(out) - len(todo))
    if todo:
        log.info(
            "trial embeddings: extracting %d utterances with %d variants stacked (%s)",
            len(names),
            len(todo),
            protocol,
        )
        loader = verifiers[todo[0]]
        stacked = embed_stacked(
            [verifiers[v] for v in todo],
            names,
            lambda n: loader.load(paths[n]),
            protocol=protocol,
            progress=eval_lib.progress_logger("trial"),
        )
        for v, emb in zip(todo, stacked, strict=True):
            eval_lib.store_embeddings(
                caches[v], keys[v], names, emb, protocol=protocol, stats=stats
            )
            out[v] = emb
    return out  # type: ignore[return-value]


def sweep_table(
    manifest: Mapping[str, Any], results: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> str:
    """Markdown: one row per variant (its swept values), EER % and minDCF(0.01) per list."""
    axes = [a.split("=", 1)[0].removeprefix("config.") for a in manifest["axes"]]
    lists = list(next(iter(results.values())))
    head = ["variant", *axes] + [f"{t} {m}" for t in lists for m in ("EER %", "minDCF(0.01)")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in manifest["variants"]:
        reps = results[entry["name"]]
        cells = [entry["name"], *(str(entry["overrides"].get(a, "")) for a in axes)]
        for t in lists:
            cells += [f"{reps[t]['eer_percent']:.2f}", f"{reps[t]['min_dcf']['0.01']['value']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_sweep(
    workdir: str | os.PathLike[str],
    *,
    print_fn: Callable[[str], None] | None = print,
    reports_dir: str = eval_lib.REPORTS_DIR,
    **overrides: Any,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluates every variant of a sweep and writes the sweep's table.

    Args:
      workdir: a sweep's ``train.py --workdir`` (holding ``sweep.json`` and ``variants/``).
      print_fn: receives each variant's summary lines and the table (None = silent).
      reports_dir: each variant's report folder and the table's (default ``eval``).
      **overrides: :class:`hamjax.eval_settings.EvalSettings` fields, as for
        :func:`hamjax.eval_lib.evaluate`, applied to every variant.

    Returns:
      ``{variant name: {list name: report dict}}``.

    Raises:
      FileNotFoundError: not a sweep, or its variant directories are not written yet.
      ValueError: variants disagree on an extraction setting (evaluate them one by one).
    """
    workdir = expand(workdir).absolute()
    eval_lib.check_reports_dir(reports_dir)
    manifest = sweep.read_manifest(workdir)
    if manifest is None:
        raise FileNotFoundError(f"{workdir}: no {sweep.SWEEP_FILE}; not a sweep's work directory")
    dirs = _variants(workdir)
    configs = {n: checkpointing.load_config(d) for n, d in dirs.items()}
    compile_cache.enable_from_config(next(iter(configs.values())))
    settings = {n: resolve_settings(dirs[n], configs[n], **overrides) for n in dirs}
    first = _check_shared(settings)
    trial_set = eval_lib.read_trial_lists(first)
    verifiers = {
        n: Verifier.from_workdir(
            dirs[n],
            s.checkpoint,
            protocol=s.protocol,
            scoring_kind=s.score,
            batch_samples=seconds_to_samples(s.batch_seconds),
        )
        for n, s in settings.items()
    }
    for n, s in settings.items():
        if s.score == "poincare":
            verifiers[n].geometry  # noqa: B018 -- a Euclidean head fails before any extraction
    embs = extract_variants(verifiers, settings, trial_set, dirs)
    cache = workdir / "eval" / eval_lib.CACHE_DIR
    baseline = eval_lib.extract_baseline(trial_set, first, cache) if first.baseline else None
    results = {}
    for n in dirs:
        if print_fn is not None:
            print_fn(f"[{n}]")
        results[n] = eval_lib.score_and_report(
            dirs[n], verifiers[n], settings[n], trial_set, embs[n], baseline, print_fn,
            reports_dir,
        )  # fmt: skip
    table = sweep_table(manifest, results)
    io_utils.write_text(workdir / reports_dir / TABLE_FILE, table)
    io_utils.write_json(
        workdir / reports_dir / RESULTS_FILE,
        {
            "axes": manifest["axes"],
            "variants": {
                e["name"]: {
                    "overrides": e["overrides"],
                    "workdir": e["workdir"],
                    "lists": {
                        t: {"eer_percent": r["eer_percent"], "min_dcf": r["min_dcf"]}
                        for t, r in results[e["name"]].items()
                    },
                }
                for e in manifest["variants"]
            },
        },
    )
    if print_fn is not None:
        print_fn(table)
    return results
