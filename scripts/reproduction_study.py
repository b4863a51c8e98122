"""The reproduction study: every head of the paper, several seeds, on the MBROLA corpus.

Usage::

    python scripts/make_mbrola_corpus.py --root data/mbrola          # once (see its --install)
    python scripts/reproduction_study.py run --budget_minutes 90      # resumable; repeat
    python scripts/reproduction_study.py report                       # tables -> docs/
    python scripts/reproduction_study.py compare A.json B.json        # two studies, side by side

``run`` trains (``train.py --config configs/mbrola.py:<recipe>``), evaluates (``eval.py``) and,
for the first seed of each main head, analyses (``scripts/analyze.py``) every run of
:data:`PLAN` that is not finished yet. Runs of one recipe that differ only in sweepable fields
(seed, margin, curvature) form one :class:`Program`: a single ``train.py --zip --sweep ...``
process (:mod:`hamjax.sweep`) that trains them all in one jitted step, and one ``eval.py`` on
the sweep that embeds with all of them at once: the 54 runs (8 paper heads, 4 toolbox heads,
3 seeds; curvature and margin ablations) become 14 programs. ``--no-sweeps``
runs one process per run instead (the old layout, ``ROOT/<run name>``; ``--parallel 2
--threads 1`` pins two runs to a core each). Programs start in plan order, ``--parallel`` at a
time. It stops starting programs once ``--budget_minutes`` have passed; a program killed
mid-way resumes from its orbax checkpoint next time (train.py's exact resume, the stacked
state of a sweep included), a finished one is skipped (its runs' ``eval/<list>/report.json``
files exist).

``report`` reads every finished run's ``eval/<list>/scores.txt`` and ``analysis/report.json``
and writes ``docs/reproduction/results.json`` plus the tables between the ``study`` markers in
``docs/REPRODUCTION.md`` and ``README.md``: EER and minDCF(0.01) as the mean over seeds with a
95 % confidence interval from a speaker bootstrap (enrolment speakers resampled with
replacement, the same resample for every run, so that differences between heads are paired),
the paper's relative reductions (H vs Softmax, HAM vs AM) with their intervals, the ablations,
and the hierarchy metrics per head.

``compare`` puts two ``report`` JSONs side by side (e.g. the study run as one process per run
and through sweeps): every row's EER with its difference, flagged where it exceeds two standard
errors of seed noise, the paper's comparisons, and the summed time of each study's programs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TRIAL_LISTS = ("heldout_persons", "heldout_families", "within_family")
MARKERS = ("<!-- study:begin -->", "<!-- study:end -->")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the study."""

    name: str  # work directory name, e.g. "ham_softmax_s0"
    head: str  # the row it belongs to, e.g. "ham_softmax (clip)"
    recipe: str  # key of hamjax.config_lib.RECIPES
    seed: int
    group: str  # one of GROUPS
    overrides: tuple[tuple[str, Any], ...] = ()

    def flags(self) -> list[str]:
        return [f"--config.seed={self.seed}"] + [f"--config.{k}={v}" for k, v in self.overrides]


# In run order: the pairs of the paper's two claims first (H vs Softmax, HAM vs AM), so that a
# session cut short still completes them over every seed.
MAIN_HEADS: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = (
    ("softmax", "softmax", ()),
    ("h_softmax", "h_softmax", ()),
    ("am", "am_softmax", ()),
    ("ham_clip", "ham_softmax", ()),
    ("aam", "aam_softmax", ()),
    ("ram", "ram_softmax", ()),
    ("ham_expmap", "ham_softmax", (("head.mode", "expmap"),)),
    ("eh_am", "eh_am_softmax", ()),
)
#: Issue 16's heads (hamjax's hyperbolic toolbox): centres trained on the ball by Riemannian
#: Adam, a Poincaré MLR with and without a margin, and a feature map that lets the radius vary.
TOOLBOX_HEADS: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = (
    ("ham_ball", "ham_ball", ()),
    ("ham_feature_clip", "ham_feature_clip", ()),
    ("h_mlr", "h_mlr", ()),
    ("h_mlr_margin", "h_mlr_margin", ()),
)
#: Heads that are also scored by the Poincaré distance (``eval_poincare/``), beside cosine.
POINCARE_SCORED = ("ham_clip", *(h for h, _, _ in TOOLBOX_HEADS))
GROUPS = ("main", "curvature", "margin", "toolbox")
SEEDS = (0, 1, 2)
CURVATURES = (1.0, 5.0, 10.0)  # c = 3 is the main HAM row
MARGINS = (0.1, 0.3, 0.4)  # m = 0.2 is the main HAM row


def plan(seeds: Sequence[int] = SEEDS) -> list[Run]:
    """Every run of the study, in the order ``run`` starts them."""
    runs = []
    for seed in seeds:
        for head, recipe, ov in MAIN_HEADS:
            runs.append(Run(f"{head}_s{seed}", head, recipe, seed, "main", ov))
    for seed in seeds:
        for head, recipe, ov in TOOLBOX_HEADS:
            runs.append(Run(f"{head}_s{seed}", head, recipe, seed, "toolbox", ov))
    for seed in seeds:
        for c in CURVATURES:
            runs.append(
                Run(f"ham_c{c:g}_s{seed}", f"ham c={c:g}", "ham_softmax", seed, "curvature",
                    (("head.c", c),))
            )  # fmt: skip
        for m in MARGINS:
            runs.append(
                Run(f"ham_m{m:g}_s{seed}", f"ham m={m:g}", "ham_softmax", seed, "margin",
                    (("head.margin", m),))
            )  # fmt: skip
    return runs


PLAN = plan()


@dataclasses.dataclass(frozen=True)
class Program:
    """Runs of one recipe that differ only in sweepable fields: one ``train.py --sweep``.

    ``hamjax.sweep`` stacks the variants on a leading axis of one jitted step, so a program
    pays one start-up, one compilation and one input pipeline for all its runs. A program
    of one run is an ordinary ``train.py`` run in ``ROOT/<run name>`` (the old layout).
    """

    name: str  # its work directory under the study root
    recipe: str
    fixed: tuple[tuple[str, Any], ...]  # overrides every run shares (not sweepable)
    runs: tuple[Run, ...]

    def swept(self) -> list[str]:
        """The fields that vary across the runs: ``seed`` first, then the others sorted."""
        keys = {k for r in self.runs for k, _ in r.overrides} - {k for k, _ in self.fixed}
        return ["seed", *sorted(keys)]

    def overrides(self, run: Run) -> dict[str, Any]:
        """The run's value of every swept field (the recipe's default where it sets none)."""
        own = dict(run.overrides)
        return {k: run.seed if k == "seed" else own.get(k, _recipe_value(self.recipe, k))
                for k in self.swept()}  # fmt: skip

    def workdir(self, root: Path, run: Run) -> Path:
        if len(self.runs) == 1:
            return root / run.name
        from hamjax import sweep

        return root / self.name / sweep.VARIANTS_DIR / sweep.variant_name(self.overrides(run))

    def flags(self) -> list[str]:
        if len(self.runs) == 1:
            return self.runs[0].flags()
        fields = self.swept()
        values = {f: ",".join(str(self.overrides(r)[f]) for r in self.runs) for f in fields}
        # Each seed its own data order, as in its own run (the study's seeds vary both).
        order = (
            ["--config.sweep.shared_batches=False"] if len({r.seed for r in self.runs}) > 1 else []
        )
        return [f"--config.{k}={v}" for k, v in self.fixed] + order + [
            "--zip", *(f"--sweep={f}={values[f]}" for f in fields)
        ]  # fmt: skip


def _recipe_value(recipe: str, field: str) -> Any:
    spec = importlib.util.spec_from_file_location("mbrola_config", REPO / "configs" / "mbrola.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    node = module.get_config(recipe)
    for part in field.split("."):
        node = node[part]
    return node


def programs(runs: Sequence[Run], sweeps: bool = True) -> list[Program]:
    """``runs`` grouped into programs: one per (recipe, non-sweepable overrides, study group)
    with ``sweeps``, else one per run. The order follows each program's first run."""
    from hamjax import sweep

    if not sweeps:
        return [Program(r.name, r.recipe, (), (r,)) for r in runs]
    groups: dict[tuple[str, tuple[tuple[str, Any], ...], str], list[Run]] = {}
    for r in runs:
        fixed = tuple((k, v) for k, v in r.overrides if k not in sweep.SWEEPABLE)
        # Never across study groups: a program must hold the same variants whichever groups
        # a session selects (a resumed sweep needs the variants it was started with).
        groups.setdefault((r.recipe, fixed, r.group), []).append(r)
    out = []
    for (recipe, fixed, group), members in groups.items():
        suffix = [] if group in ("main", "toolbox") else [group]
        name = "-".join([recipe, *(f"{k.split('.')[-1]}{v}" for k, v in fixed), *suffix])
        if len(members) == 1:
            out.append(Program(members[0].name, recipe, (), tuple(members)))
        else:
            out.append(Program(name, recipe, fixed, tuple(members)))
    return out


def run_dirs(root: Path) -> dict[str, Path]:
    """``{run name: its work directory}`` for every run of :data:`PLAN`, in either layout:
    ``ROOT/<run name>`` (one process per run) or a sweep's ``ROOT/<program>/variants/...``."""
    out = {}
    for prog in programs(PLAN):
        for r in prog.runs:
            new = prog.workdir(root, r)
            out[r.name] = root / r.name if _finished(root / r.name) and not _finished(new) else new
    return out


# Child processes of the running steps: SIGTERM / Ctrl-C on the study is forwarded to them and
# waited for, so that train.py saves its checkpoint and no orphan keeps writing into a work
# directory that a restarted study would then share with it.
_CHILDREN: set[subprocess.Popen] = set()
_LOCK = threading.Lock()
_STOP = threading.Event()


def _stop(signum: int, frame: Any) -> None:
    _STOP.set()
    with _LOCK:
        for proc in _CHILDREN:
            proc.send_signal(signal.SIGTERM)


def _finished(workdir: Path, reports: str = "eval") -> bool:
    return all((workdir / reports / t / "report.json").is_file() for t in TRIAL_LISTS)


def _analysed(run: Run) -> bool:
    """Whether the run gets scripts/analyze.py's hierarchy report (seed 0 of each head)."""
    return run.group in ("main", "toolbox") and run.seed == 0


def _program_done(prog: Program, root: Path) -> bool:
    return all(
        _finished(prog.workdir(root, r))
        and (not _analysed(r)
             or (prog.workdir(root, r) / "analysis" / "report.json").is_file())
        and (r.head not in POINCARE_SCORED
             or _finished(prog.workdir(root, r), "eval_poincare"))
        for r in prog.runs
    )  # fmt: skip


def _run_program(
    prog: Program, root: Path, corpus: Path, tfds: Path, threads: int, cpus: set[int] | None = None
) -> dict[str, Any]:
    """Train + eval (+ analyze for seed-0 main runs) in subprocesses; returns timings.

    ``cpus``: pin the steps to these CPUs (XLA's CPU client keeps a few Eigen threads busy even
    with one intra-op thread; two unpinned runs on two cores spend a quarter of the time in the
    kernel switching between them).
    """
    single = len(prog.runs) == 1
    workdir = root / prog.name
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads > 0:
        # One XLA CPU thread per run: two runs side by side use the two cores better than
        # one run with two threads (small convolutions do not scale across threads).
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
            f" intra_op_parallelism_threads={threads}"
        ).strip()
    data_flags = [f"--config.data.root={corpus}", f"--config.data.data_dir={tfds}"]
    done = all(_finished(prog.workdir(root, r)) for r in prog.runs)
    steps = [] if done else [
        ("train", [sys.executable, str(REPO / "train.py"),
                   f"--config={REPO / 'configs' / 'mbrola.py'}:{prog.recipe}",
                   f"--workdir={workdir}", *data_flags, *prog.flags()]),
        # On a sweep, eval.py evaluates every variant (their weights stacked) into its own
        # directory and writes the sweep's table.
        ("eval", [sys.executable, str(REPO / "eval.py"), f"--workdir={workdir}",
                  "--nobaseline"]),
    ]  # fmt: skip
    if any(r.head in POINCARE_SCORED for r in prog.runs) and not all(
        _finished(prog.workdir(root, r), "eval_poincare") for r in prog.runs
    ):
        # The same embeddings (cached) scored by the Poincaré distance after the head's map.
        steps.append(
            ("eval", [sys.executable, str(REPO / "eval.py"), f"--workdir={workdir}",
                      "--nobaseline", "--score=poincare", "--reports_dir=eval_poincare"])
        )  # fmt: skip
    for r in prog.runs:
        rdir = prog.workdir(root, r)
        if _analysed(r) and not (rdir / "analysis/report.json").is_file():
            steps.append(
                (f"analyze {r.name}", [sys.executable, str(REPO / "scripts" / "analyze.py"),
                                       f"--workdir={rdir}", "--checkpoint=final",
                                       "--split=heldout", "--utterances_per_speaker=6"])
            )  # fmt: skip
    times = {}
    with open(workdir / "study.log", "a") as log:
        for what, cmd in steps:
            start = time.perf_counter()
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            if _STOP.is_set():
                raise RuntimeError(f"{prog.name}: stopped before {what}")
            if cpus:  # taskset rather than preexec_fn, which is unsafe in a threaded parent
                cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            with _LOCK:
                _CHILDREN.add(proc)
            try:
                returncode = proc.wait()
            finally:
                with _LOCK:
                    _CHILDREN.discard(proc)
            times[what.split()[0]] = round(times.get(what.split()[0], 0.0)
                                           + time.perf_counter() - start, 1)  # fmt: skip
            if returncode != 0:
                raise RuntimeError(f"{prog.name}: {what} failed (exit {returncode}); see "
                                   f"{workdir / 'study.log'}")  # fmt: skip
    from hamjax import io_utils

    for r in prog.runs:
        info_path = prog.workdir(root, r) / "study.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        info.update(dataclasses.asdict(r), program=prog.name, program_runs=len(prog.runs),
                    seconds={**info.get("seconds", {}), **times})  # fmt: skip
        io_utils.write_json(info_path, json.loads(json.dumps(info, default=str)))
    return {"seconds": times, "runs": len(prog.runs), "single": single}


def cmd_run(args: argparse.Namespace) -> int:
    root, corpus, tfds = Path(args.root), Path(args.corpus), Path(args.data_dir)
    if not (corpus / "metadata.json").is_file():
        print(f"error: {corpus}: no corpus (run scripts/make_mbrola_corpus.py --root {corpus})",
              file=sys.stderr)  # fmt: skip
        return 2
    # Programs are formed from the whole selection (not only its unfinished runs), so that a
    # resumed sweep has the variants it was started with.
    heads = {h for h in args.heads.split(",") if h} if args.heads else None
    unknown = sorted(heads - {r.head for r in PLAN}) if heads else []
    if unknown:
        print(f"error: --heads: unknown head(s) {unknown}; expected some of "
              f"{sorted({r.head for r in PLAN})}", file=sys.stderr)  # fmt: skip
        return 2
    selected = [
        r for r in PLAN if args.group in ("all", r.group) and (heads is None or r.head in heads)
    ]
    todo = [p for p in programs(selected, args.sweeps) if not _program_done(p, root)]
    if args.max_runs:
        todo = todo[: args.max_runs]
    print(f"{len(todo)} programs ({sum(len(p.runs) for p in todo)} runs) to do of "
          f"{len(selected)} runs; budget {args.budget_minutes} min")  # fmt: skip
    deadline = time.monotonic() + 60.0 * args.budget_minutes
    failures = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)

    def worker(prog: Program) -> None:
        if time.monotonic() > deadline or _STOP.is_set():
            return
        start = time.perf_counter()
        cpus = free_cpus.get() if pin else None
        try:
            info = _run_program(prog, root, corpus, tfds, args.threads, cpus)
        except RuntimeError as e:
            failures.append(str(e))
            print(f"FAILED {e}", flush=True)
            return
        finally:
            if pin:
                free_cpus.put(cpus)
        print(f"done {prog.name} ({len(prog.runs)} runs) in {time.perf_counter() - start:.0f} s "
              f"{info['seconds']}", flush=True)  # fmt: skip

    # One slice of the usable CPUs per parallel program (none when there are fewer CPUs).
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = (args.pin and args.parallel > 1 and len(usable) >= args.parallel
           and shutil.which("taskset") is not None)  # fmt: skip
    free_cpus: queue.Queue[set[int]] = queue.Queue()
    if pin:
        for k in range(args.parallel):
            free_cpus.put(set(usable[k :: args.parallel]))
    # The first program prepares the TFDS dataset when it is missing; the rest wait for it (no
    # concurrent preparation).
    first = 1 if todo and not (tfds / "mbrola").is_dir() else 0
    for prog in todo[:first]:
        worker(prog)
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(worker, todo[first:]))
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    if _STOP.is_set():
        print("stopped: running steps saved their checkpoints; run again to resume")
        return 1
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def _read_scores(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, scores, spk = [], [], []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        lab, enrol, _, score = line.split()
        labels.append(int(lab))
        scores.append(float(score))
        spk.append(enrol.split("/")[0])
    return np.array(labels, bool), np.array(scores), np.array(spk)


def _metrics(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from hamjax import metrics

    return metrics.eer(scores, labels)[0], metrics.min_dcf(scores, labels, 0.01)[0]


def _bootstrap_indices(speakers: np.ndarray, reps: int, seed: int) -> list[np.ndarray]:
    """Trial index sets of ``reps`` speaker-bootstrap resamples (enrolment speakers)."""
    names, inv = np.unique(speakers, return_inverse=True)
    by_spk = [np.flatnonzero(inv == i) for i in range(len(names))]
    rng = np.random.default_rng(seed)
    return [
        np.concatenate([by_spk[i] for i in rng.integers(len(names), size=len(names))])
        for _ in range(reps)
    ]


def _ci(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def collect(root: Path, reps: int, seed: int = 0, reports: str = "eval") -> dict[str, Any]:
    """Metrics of every finished run with paired speaker-bootstrap replicates.

    ``reports``: the runs' report folder (``eval``: cosine; ``eval_poincare``: the heads of
    :data:`POINCARE_SCORED` scored in their ball). The bootstrap resamples depend only on the
    trial list and ``seed``, so rows of two calls pair with each other.
    """
    dirs = run_dirs(root)
    runs = [r for r in PLAN if _finished(dirs[r.name], reports)]
    rows: dict[str, dict[str, Any]] = {}
    for t in TRIAL_LISTS:
        boot = None
        for r in runs:
            labels, scores, spk = _read_scores(dirs[r.name] / reports / t / "scores.txt")
            if boot is None:
                ref_spk = spk
                boot = _bootstrap_indices(spk, reps, seed)
            if not np.array_equal(spk, ref_spk):
                raise ValueError(f"{dirs[r.name]}: trial list {t} differs from the other runs'")
            eer, dcf = _metrics(scores, labels)
            reps_m = np.array([_metrics(scores[i], labels[i]) for i in boot])
            new = {"group": r.group, "recipe": r.recipe, "overrides": dict(r.overrides)}
            row = rows.setdefault(r.head, {**new, "lists": {}})
            entry = row["lists"].setdefault(t, {"seeds": {}, "boot": []})
            entry["seeds"][r.seed] = {"eer": eer, "min_dcf_0.01": dcf}
            entry["boot"].append(reps_m)
    for row in rows.values():
        for entry in row["lists"].values():
            seeds = entry["seeds"]
            eers = np.array([v["eer"] for v in seeds.values()])
            dcfs = np.array([v["min_dcf_0.01"] for v in seeds.values()])
            boot = np.mean(np.stack(entry.pop("boot")), axis=0)  # [reps, 2], mean over seeds
            entry.update(
                num_seeds=len(seeds),
                eer=float(eers.mean()),
                eer_seed_sd=float(eers.std(ddof=1)) if len(eers) > 1 else None,
                eer_ci=_ci(boot[:, 0]),
                min_dcf=float(dcfs.mean()),
                min_dcf_ci=_ci(boot[:, 1]),
                _boot=boot,
            )
    return rows


def _relative(rows: dict[str, Any], a: str, b: str, t: str) -> dict[str, Any] | None:
    """Relative EER reduction of head ``a`` against ``b`` on list ``t`` (paired bootstrap)."""
    if a not in rows or b not in rows or t not in rows[a]["lists"] or t not in rows[b]["lists"]:
        return None
    ea, eb = rows[a]["lists"][t], rows[b]["lists"][t]
    common = sorted(set(ea["seeds"]) & set(eb["seeds"]))
    if ea["num_seeds"] != len(common) or eb["num_seeds"] != len(common):
        return None  # compare only over the same seeds
    red = 1.0 - ea["_boot"][:, 0] / np.maximum(eb["_boot"][:, 0], 1e-12)
    return dict(
        reduction=1.0 - ea["eer"] / max(eb["eer"], 1e-12),
        ci=_ci(red),
        p_better=float(np.mean(red > 0)),
        seeds=len(common),
    )


def _fmt_reduction(r: dict[str, Any]) -> str:
    """``+14.1 % [+9.8, +18.1]``: a :func:`_relative` reduction with its 95 % interval."""
    return f"{100 * r['reduction']:+.1f} % [{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}]"


def _geometry_summary(rep: dict[str, Any]) -> dict[str, Any]:
    out = dict(
        delta=rep["delta"]["relative_delta"],
        diameter=rep["delta"]["diameter"],
        tree_spearman=(rep.get("tree_correlation") or {}).get("spearman"),
    )
    if "norms" in rep:
        out["norms"] = rep["norms"]
    if "hierarchy" in rep:
        out["relative"] = {k: v["relative"] for k, v in rep["hierarchy"]["levels"].items()}
        out["monotone"] = rep["hierarchy"]["monotone"]
    return out


def _hierarchy(root: Path, head: str) -> dict[str, Any] | None:
    """Seed-0 hierarchy metrics of ``head`` from ``scripts/analyze.py``'s report."""
    path = run_dirs(root).get(f"{head}_s0", root / f"{head}_s0") / "analysis" / "report.json"
    if not path.is_file():
        return None
    rep = json.loads(path.read_text())
    out: dict[str, Any] = {}
    for geom in ("cosine", "ball"):
        emb = rep.get("embeddings", {}).get(geom)
        if emb is not None:
            out[geom] = _geometry_summary(emb)
    # The class-centre table: the hyperbolic one when the head has a ball, else the first.
    tables = {k: v for k, v in rep.get("centres", {}).items() if isinstance(v, dict)}
    name = next((k for k, v in tables.items() if "ball" in v), next(iter(tables), None))
    if name is not None:
        t = tables[name]
        norms = t.get("ball_norms_by_family") or t.get("norms_by_family") or {}
        out["centres"] = dict(
            table=name,
            cosine=_geometry_summary(t["cosine"]),
            ball=_geometry_summary(t["ball"]) if "ball" in t else None,
            norm_by_family_kruskal_p=norms.get("kruskal_pvalue"),
            norm_metric="ball" if "ball_norms_by_family" in t else "euclidean",
        )
    return out


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _fmt_eer_ci(entry: dict[str, Any] | None) -> str:
    """``EER (CI low-high)`` in percent of one row's list entry, ``-`` when missing."""
    if entry is None:
        return "-"
    lo, hi = entry["eer_ci"]
    return f"{_fmt_pct(entry['eer'])} ({_fmt_pct(lo)}-{_fmt_pct(hi)})"


def tables(rows: dict[str, Any], root: Path) -> str:
    """The markdown results block."""
    lines = []
    main = [h for h, _, _ in MAIN_HEADS if h in rows]
    for t in TRIAL_LISTS:
        lines += [
            f"**{t}** (EER % and minDCF(0.01): mean over seeds [95 % speaker-bootstrap CI]; "
            "seed sd in EER points)",
            "",
            "| head | seeds | EER % | EER CI | seed sd | minDCF | minDCF CI |",
            "|---|---|---|---|---|---|---|",
        ]
        for h in main:
            e = rows[h]["lists"].get(t)
            if e is None:
                continue
            sd = "-" if e["eer_seed_sd"] is None else f"{100 * e['eer_seed_sd']:.2f}"
            lines.append(
                f"| {h} | {e['num_seeds']} | {_fmt_pct(e['eer'])} | "
                f"{_fmt_pct(e['eer_ci'][0])}-{_fmt_pct(e['eer_ci'][1])} | {sd} | "
                f"{e['min_dcf']:.3f} | {e['min_dcf_ci'][0]:.3f}-{e['min_dcf_ci'][1]:.3f} |"
            )
        lines.append("")
    lines += [
        "**Relative EER reductions claimed by the paper** (1 - EER_a / EER_b; positive = a "
        "better; CI from the paired speaker bootstrap; P = share of bootstrap replicates "
        "where a is better)",
        "",
        "| comparison | list | reduction | 95 % CI | P(a better) | paper |",
        "|---|---|---|---|---|---|",
    ]
    for a, b, paper in (("h_softmax", "softmax", "27.84 % lower"),
                        ("ham_clip", "am", "14.23 % lower"),
                        ("ham_expmap", "am", "-"),
                        ("ham_clip", "aam", "-"),
                        ("ham_clip", "softmax", "-")):  # fmt: skip
        for t in TRIAL_LISTS:
            r = _relative(rows, a, b, t)
            if r is None:
                continue
            lines.append(
                f"| {a} vs {b} | {t} | {100 * r['reduction']:+.1f} % | "
                f"{100 * r['ci'][0]:+.1f} to {100 * r['ci'][1]:+.1f} % | {r['p_better']:.2f} | "
                f"{paper} |"
            )
    lines.append("")
    for group, label in (("curvature", "Curvature ablation (HAM, m = 0.2)"),
                         ("margin", "Margin ablation (HAM, c = 3)")):  # fmt: skip
        heads = [h for h, r in rows.items() if r["group"] == group]
        if not heads:
            continue
        base = "ham_clip"
        first = TRIAL_LISTS[0]
        lines += [f"**{label}**, EER % [95 % CI] (seeds; the c = 3 / m = 0.2 row is ham_clip; "
                  f"the last columns are paired reductions on {first})", "",
                  "| setting | seeds | " + " | ".join(TRIAL_LISTS) + " | vs am | vs ham_clip |",
                  "|---|---|" + "---|" * (len(TRIAL_LISTS) + 2)]  # fmt: skip
        # Numeric order of the ablated value ("ham c=10" after "ham c=5").
        heads.sort(key=lambda h: float(h.rsplit("=", 1)[-1]) if "=" in h else 0.0)
        for h in ([base] if base in rows else []) + heads:
            cells = [_fmt_eer_ci(rows[h]["lists"].get(t)) for t in TRIAL_LISTS]
            for other in ("am", base):
                r = None if other == h else _relative(rows, h, other, first)
                cells.append("-" if r is None else _fmt_reduction(r))
            n = rows[h]["lists"][first]["num_seeds"]
            lines.append(f"| {h} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    hier = {h: _hierarchy(root, h) for h in main}
    if any(hier.values()):
        lines += [
            "**Hierarchy metrics** (seed 0, held-out speakers' utterance embeddings; cosine = "
            "angular distance, ball = the head's own Poincaré ball; delta = relative Gromov "
            "delta, lower = more tree-like, and in the ball it also falls as points move out (the "
            "diameter grows, delta is bounded), so compare it across heads only at similar "
            "diameters; rho = Spearman correlation of embedding distance "
            "with tree distance speaker < person < family)",
            "",
            "| head | delta (cos) | rho (cos) | delta (ball) [diameter] | rho (ball) | "
            "mean distance within speaker / person / family, relative to across families (cos) | "
            "centres: delta / rho (cos) | centres: delta / rho (ball) | centre norm ~ family "
            "(Kruskal-Wallis p) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for h, rep in hier.items():
            if not rep:
                continue
            cos, ball = rep.get("cosine", {}), rep.get("ball", {})

            def f(x: Any) -> str:
                return "-" if x is None else f"{x:.3f}"

            rel = cos.get("relative", {})
            levels = " / ".join(
                f(rel.get(k)) for k in ("within_speaker", "within_base", "within_family")
            )
            cen = rep.get("centres") or {}
            cc, cb = cen.get("cosine") or {}, cen.get("ball") or {}
            p = cen.get("norm_by_family_kruskal_p")
            lines.append(
                f"| {h} | {f(cos.get('delta'))} | {f(cos.get('tree_spearman'))} | "
                f"{f(ball.get('delta'))} [{f(ball.get('diameter'))}] | "
                f"{f(ball.get('tree_spearman'))} | {levels} | "
                f"{f(cc.get('delta'))} / {f(cc.get('tree_spearman'))} | "
                f"{f(cb.get('delta'))} / {f(cb.get('tree_spearman'))} | "
                f"{'-' if p is None else f'{p:.2g}'} ({cen.get('norm_metric', '-')}) |"
            )
        lines.append("")
    return "\n".join(lines)


def toolbox_tables(rows: dict[str, Any], poincare: dict[str, Any], root: Path) -> str:
    """Issue 16's section: the toolbox heads against ham_clip, cosine and Poincaré scoring,
    and whether their embeddings' radii spread and the ball keeps the tree better."""
    heads = ["ham_clip", *(h for h, _, _ in TOOLBOX_HEADS)]
    merged = {**rows, **{f"{h} (ball)": r for h, r in poincare.items()}}
    shown = [h for x in heads for h in (x, f"{x} (ball)") if h in merged]
    if len(shown) < 2:
        return ""
    lines = [
        "**Toolbox heads vs ham_clip** (EER % over seeds [95 % speaker-bootstrap CI]; "
        "`(ball)` = the same embeddings scored by minus the Poincaré distance after the head's "
        "map; last columns: paired EER reduction vs ham_clip (cosine) [CI], P(better))",
        "",
        "| head | seeds | " + " | ".join(TRIAL_LISTS)
        + " | " + " | ".join(f"vs ham_clip, {t}" for t in TRIAL_LISTS) + " |",
        "|---|---|" + "---|" * (2 * len(TRIAL_LISTS)),
    ]  # fmt: skip
    for h in shown:
        cells = [_fmt_eer_ci(merged[h]["lists"].get(t)) for t in TRIAL_LISTS]
        for t in TRIAL_LISTS:
            r = None if h == "ham_clip" else _relative(merged, h, "ham_clip", t)
            cells.append("-" if r is None else _fmt_reduction(r))
        n = merged[h]["lists"][TRIAL_LISTS[0]]["num_seeds"]
        lines.append(f"| {h} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Where the embeddings sit, and the tree** (seed 0, held-out speakers; radius = "
        "Euclidean norm of the ball point relative to the ball's radius 1/sqrt(c); spread = "
        "(max - min) / max; rho = Spearman correlation of distance with tree distance)",
        "",
        "| head | radius min / median / max | spread | rho (cosine) | rho (ball) | "
        "delta (cosine) | delta (ball) [diameter] |",
        "|---|---|---|---|---|---|---|",
    ]

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    for h in heads:
        rep = _hierarchy(root, h)
        if not rep:
            continue
        cos, ball = rep.get("cosine", {}), rep.get("ball", {})
        nm = ball.get("norms") or {}
        radius = nm.get("radius") or float("nan")
        where = " / ".join(f(nm.get(k, float("nan")) / radius) for k in ("min", "median", "max"))
        lines.append(
            f"| {h} | {where if nm else '-'} | {f(nm.get('relative_spread'))} | "
            f"{f(cos.get('tree_spearman'))} | {f(ball.get('tree_spearman'))} | "
            f"{f(cos.get('delta'))} | {f(ball.get('delta'))} [{f(ball.get('diameter'))}] |"
        )
    return "\n".join(lines) + "\n"


def headline(rows: dict[str, Any]) -> str:
    """The README's compact table: EER per main head and list, and the paper's two claims."""
    main = [h for h, _, _ in MAIN_HEADS if h in rows]
    lines = [
        "| head | seeds | " + " | ".join(f"{t} EER % [95 % CI]" for t in TRIAL_LISTS) + " |",
        "|---|---|" + "---|" * len(TRIAL_LISTS),
    ]
    for h in main:
        cells = []
        for t in TRIAL_LISTS:
            e = rows[h]["lists"].get(t)
            cells.append("-" if e is None else f"{_fmt_pct(e['eer'])} "
                         f"[{_fmt_pct(e['eer_ci'][0])}, {_fmt_pct(e['eer_ci'][1])}]")  # fmt: skip
        n = rows[h]["lists"][TRIAL_LISTS[0]]["num_seeds"]
        lines.append(f"| {h} | {n} | " + " | ".join(cells) + " |")
    claims = []
    for a, b, paper in (("h_softmax", "softmax", 27.84), ("ham_clip", "am", 14.23)):
        parts = []
        for t in TRIAL_LISTS:
            r = _relative(rows, a, b, t)
            if r is not None:
                parts.append(f"{t} {_fmt_reduction(r)}")
        if parts:
            claims.append(f"- EER reduction of {a} vs {b} (paper: {paper:+.2f} %): "
                          + "; ".join(parts))  # fmt: skip
    return "\n".join(lines + [""] + claims)


def _replace_block(path: Path, block: str) -> None:
    from hamjax import io_utils

    text = path.read_text() if path.is_file() else ""
    begin, end = MARKERS
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{block}\n{end}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{begin}\n{block}\n{end}\n"
    io_utils.write_text(path, text)


def cmd_report(args: argparse.Namespace) -> int:
    from hamjax import io_utils

    root = Path(args.root)
    rows = collect(root, args.bootstrap)
    if not rows:
        print(f"error: no finished runs under {root}", file=sys.stderr)
        return 2
    block = tables(rows, root)
    poincare = collect(root, args.bootstrap, reports="eval_poincare")
    toolbox = toolbox_tables(rows, poincare, root)
    if toolbox:
        block += "\n" + toolbox

    def public(rs: dict[str, Any]) -> dict[str, Any]:
        return {h: {**r, "lists": {t: {k: v for k, v in e.items() if not k.startswith("_")}
                                   for t, e in r["lists"].items()}}
                for h, r in rs.items()}  # fmt: skip

    out = public(rows)
    seconds, program_seconds = {}, {}
    dirs = run_dirs(root)
    for r in PLAN:
        p = dirs[r.name] / "study.json"
        if p.is_file():
            info = json.loads(p.read_text())
            seconds[r.name] = info.get("seconds", {})
            # A sweep's variants each record their program's time: count it once.
            program_seconds[info.get("program", r.name)] = sum(seconds[r.name].values())
    comparisons = {
        f"{a}_vs_{b}/{t}": _relative(rows, a, b, t)
        for a, b in (("h_softmax", "softmax"), ("ham_clip", "am"), ("ham_expmap", "am"),
                     ("ham_clip", "aam"), ("ham_clip", "softmax"))
        for t in TRIAL_LISTS
    }  # fmt: skip
    corpus = Path(args.corpus) / "metadata.json"
    baselines = {}
    if corpus.is_file():
        meta = json.loads(corpus.read_text())
        baselines = {k: meta["summary"][k] for k in ("pitch_only_eer", "cepstrum_eer")}
        block += ("\nNon-learned verifiers on the same lists (EER %): pitch only "
                  + ", ".join(f"{k} {100 * v:.1f}" for k, v in baselines["pitch_only_eer"].items())
                  + "; long-term cepstrum "
                  + ", ".join(f"{k} {100 * v:.1f}" for k, v in baselines["cepstrum_eer"].items())
                  + ".\n")  # fmt: skip
    io_utils.write_json(
        Path(args.out_json),
        dict(rows=out, rows_poincare=public(poincare), comparisons=comparisons,
             baselines=baselines, seconds=seconds, program_seconds=program_seconds,
             bootstrap_replicates=args.bootstrap),
    )  # fmt: skip
    _replace_block(Path(args.doc), block)
    if args.readme:
        _replace_block(Path(args.readme), headline(rows))
    print(block)
    return 0


# ------------------------------------------------------------------------------------------
# compare: the same study run two ways (separate processes vs sweeps)
# ------------------------------------------------------------------------------------------


def _pooled_seed_sd(rows: dict[str, Any], t: str) -> float:
    """Seed sd of EER on list ``t`` pooled over every row (root mean of the variances).

    One row's sd from 3 seeds is itself uncertain by about half its size; the rows share one
    recipe and corpus, so their seed noise is pooled to judge a difference of two means.
    """
    var = [r["lists"][t]["eer_seed_sd"] ** 2 for r in rows.values() if t in r["lists"]]
    return float(np.sqrt(np.mean(var))) if var else 0.0


def compare_tables(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str]) -> str:
    """Markdown: every row of both report JSONs (``report``'s ``--out_json``) side by side.

    A difference of seed means counts as seed noise when it is within 2 standard errors,
    ``2 * sd_pooled * sqrt(1/n_a + 1/n_b)``, with the seed sd pooled over both studies' rows
    (:func:`_pooled_seed_sd`). Also the paper's comparisons (relative reductions) of both.
    """
    rows_a, rows_b = a["rows"], b["rows"]
    common = [h for h in rows_a if h in rows_b]
    out = [f"**EER % per row: {labels[0]} (a) vs {labels[1]} (b)** (mean over seeds [95 % "
           "speaker-bootstrap CI]; b - a in EER points; noise = 2 standard errors of a "
           "difference of seed means, seed sd pooled over all rows of both; `*` = outside it)",
           "", "| row | list | a | b | b - a | noise |", "|---|---|---|---|---|---|"]  # fmt: skip
    diffs, outside = [], 0
    for t in TRIAL_LISTS:
        sd = float(np.sqrt((_pooled_seed_sd(rows_a, t) ** 2 + _pooled_seed_sd(rows_b, t) ** 2) / 2))
        for h in common:
            ea, eb = rows_a[h]["lists"].get(t), rows_b[h]["lists"].get(t)
            if ea is None or eb is None:
                continue
            diff = 100 * (eb["eer"] - ea["eer"])
            noise = 200 * sd * np.sqrt(1 / ea["num_seeds"] + 1 / eb["num_seeds"])
            flag = "" if abs(diff) <= noise else " *"
            outside += bool(flag)
            diffs.append(diff)
            out.append(f"| {h} | {t} | {_fmt_eer_ci(ea)} | {_fmt_eer_ci(eb)} | "
                       f"{diff:+.2f}{flag} | {noise:.2f} |")  # fmt: skip
    if diffs:
        d = np.array(diffs)
        out += ["", f"{len(d)} cells: {outside} outside the noise band; mean b - a "
                f"{d.mean():+.2f} points (sd {d.std(ddof=1) if len(d) > 1 else 0.0:.2f}), "
                f"mean |b - a| {np.abs(d).mean():.2f}."]  # fmt: skip
    comps = [k for k in a.get("comparisons", {}) if a["comparisons"][k]
             and b.get("comparisons", {}).get(k)]  # fmt: skip
    if comps:
        out += [
            "",
            "**The paper's comparisons** (relative EER reduction [95 % CI], P(better))",
            "",
            f"| comparison | list | {labels[0]} | {labels[1]} |",
            "|---|---|---|---|",
        ]
        for k in comps:
            name, t = k.split("/")
            ra, rb = a["comparisons"][k], b["comparisons"][k]
            out.append(
                f"| {name.replace('_vs_', ' vs ')} | {t} | {_fmt_reduction(ra)}, "
                f"{ra['p_better']:.2f} | {_fmt_reduction(rb)}, {rb['p_better']:.2f} |"
            )
    for label, result in zip(labels, (a, b), strict=True):
        if "program_seconds" in result:
            progs = result["program_seconds"]
            what = f"{len(progs)} programs"
        else:  # a report from before program times were recorded: one entry per run
            progs = {n: sum(v.values()) for n, v in result.get("seconds", {}).items()}
            what = f"{len(progs)} runs (no program times recorded; a sweep's counted per run)"
        out.append(f"\n{label}: {what}, {sum(progs.values()) / 3600:.2f} h of step time summed "
                   "(train + eval + analysis).")  # fmt: skip
    return "\n".join(out) + "\n"


def cmd_compare(args: argparse.Namespace) -> int:
    results = []
    for path in (args.a, args.b):
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            print(f"error: {path}: not a report JSON ({e})", file=sys.stderr)
            return 2
        if not isinstance(results[-1], dict) or not isinstance(results[-1].get("rows"), dict):
            print(f"error: {path}: no 'rows' (expected the --out_json of report)", file=sys.stderr)
            return 2
    text = compare_tables(*results, labels=(args.a_label, args.b_label))
    if args.out:
        from hamjax import io_utils

        io_utils.write_text(Path(args.out), text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "report"):
        p = sub.add_parser(name)
        p.add_argument("--root", default="runs/study", help="the study's work directories")
        p.add_argument("--corpus", default="data/mbrola", help="the MBROLA corpus root")
        if name == "run":
            p.add_argument("--data_dir", default="data/tfds", help="prepared TFDS datasets")
            p.add_argument("--budget_minutes", type=float, default=90.0)
            p.add_argument(
                "--sweeps",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="train the runs of one recipe that differ only in sweepable fields "
                "(seed, margin, curvature) as one train.py --sweep program",
            )
            p.add_argument("--parallel", type=int, default=1, help="programs at a time")
            p.add_argument("--threads", type=int, default=0,
                           help="XLA CPU threads per program (0 = XLA's default: all)")  # fmt: skip
            p.add_argument("--group", choices=("all", *GROUPS), default="all")
            p.add_argument("--max_runs", type=int, default=0, help="programs; 0 = no limit")
            p.add_argument("--heads", default="", help="only these rows, e.g. ham_clip,h_mlr")
            p.add_argument(
                "--pin",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="pin each parallel run to its own CPUs",
            )
        else:
            p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
            p.add_argument("--doc", default="docs/REPRODUCTION.md")
            p.add_argument("--out_json", default="docs/reproduction/results.json")
            p.add_argument("--readme", default="README.md", help="'' = leave the README alone")
    p = sub.add_parser("compare", help="two report JSONs side by side (e.g. processes vs sweeps)")
    p.add_argument("a", help="report --out_json of the first study")
    p.add_argument("b", help="report --out_json of the second study")
    p.add_argument("--a_label", default="separate processes")
    p.add_argument("--b_label", default="sweeps")
    p.add_argument("--out", default="", help="also write the tables here (markdown)")
    args = parser.parse_args(argv)
    return {"run": cmd_run, "report": cmd_report, "compare": cmd_compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
