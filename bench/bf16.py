"""bfloat16 vs float32 training on the quickstart recipe: same EER within seed noise?

For each seed N (``--config.seed=N``: initialisation, input order, crops, SpecAugment and the
synthetic corpus itself, which ``train_lib.synthetic_kwargs`` seeds with ``config.seed``), the
README's quickstart is run twice in fresh processes, once in float32 and once with
``--config.model.dtype=bfloat16``, on the same corpus::

    python3 train.py --config configs/quickstart.py --workdir RUNS/s{N}_{dtype} \
        --config.seed=N --config.model.dtype={dtype} [--config.data.root=... per seed]
    python3 eval.py --workdir RUNS/s{N}_{dtype} --nobaseline

Runs are sequential (float32 then bfloat16 for each seed, so load changes on a shared machine
hit both alike). The table gives each run's EER per trial list, the per-list mean / sd over
seeds and the paired bf16 - fp32 difference. Loss scaling: the trainer stops on a non-finite
loss; this script also parses every logged ``grad_norm`` (``train.log_every_steps``) and
reports whether all were finite, plus the smallest and largest.

Usage::

    python bench/bf16.py --runs runs/bf16_study --seeds 0 1 2      # -> section "bf16"
    python bench/bf16.py --runs /tmp/x --seeds 0 --repo /tmp/snapshot --no-write

``--repo`` runs train.py / eval.py from another checkout (e.g. a ``git archive`` snapshot, so
that edits in progress in this working tree cannot change a run midway).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _results import load_average, machine_description, update_section  # noqa: E402

DTYPES = ("float32", "bfloat16")
_GRAD = re.compile(r"\bgrad_norm=([^\s,]+)")


def data_flags(data: Path, seed: int) -> list[str]:
    """The corpus and dataset of seed ``seed`` (seed 0 = the quickstart's own location)."""
    root = data / "synthetic" / ("quickstart" if seed == 0 else f"quickstart_seed{seed}")
    return [f"--config.data.root={root}", f"--config.data.data_dir={data / 'tfds'}"]


def run_one(repo: Path, workdir: Path, data: Path, seed: int, dtype: str) -> dict:
    """Trains and evaluates one quickstart run; returns EERs, grad norms and wall times."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f"{workdir.name}.log"
    train = [
        sys.executable, str(repo / "train.py"), "--config", str(repo / "configs/quickstart.py"),
        "--workdir", str(workdir), f"--config.seed={seed}", f"--config.model.dtype={dtype}",
        "--config.train.progress_bar=False", *data_flags(data, seed),
    ]  # fmt: skip
    evaluate = [sys.executable, str(repo / "eval.py"), "--workdir", str(workdir), "--nobaseline"]
    out: dict = {"seed": seed, "dtype": dtype, "load_before": load_average()}
    with open(log, "w") as f:
        t0 = time.perf_counter()
        subprocess.run(train, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=repo)
        out["train_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        subprocess.run(evaluate, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=repo)
        out["eval_s"] = time.perf_counter() - t1
    grads = [float(g) for g in _GRAD.findall(log.read_text())]
    out["grad_norms"] = len(grads)
    out["grads_finite"] = bool(grads) and all(math.isfinite(g) for g in grads)
    out["grad_min"] = min(grads) if grads else float("nan")
    out["grad_max"] = max(grads) if grads else float("nan")
    out["eer"] = {
        p.parent.name: float(json.loads(p.read_text())["eer_percent"])
        for p in sorted((workdir / "eval").glob("*/report.json"))
    }
    out["load_after"] = load_average()
    print(json.dumps(out), flush=True)
    return out


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(results: list[dict]) -> list[str]:
    """Markdown: one row per run, then mean ± sd per dtype and the paired difference."""
    lists = sorted({k for r in results for k in r["eer"]})
    lines = [
        "| seed | dtype | " + " | ".join(f"EER {n} %" for n in lists)
        + " | grad norms logged | all finite | min / max grad norm | train s | eval s |",
        "|---|---|" + "---|" * len(lists) + "---|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        eers = " | ".join(f"{r['eer'].get(n, float('nan')):.2f}" for n in lists)
        lines.append(
            f"| {r['seed']} | {r['dtype']} | {eers} | {r['grad_norms']} | "
            f"{'yes' if r['grads_finite'] else 'NO'} | {r['grad_min']:.3g} / {r['grad_max']:.3g} "
            f"| {r['train_s']:.0f} | {r['eval_s']:.0f} |"
        )
    for dtype in DTYPES:
        cells = [_mean_sd([r["eer"][n] for r in results if r["dtype"] == dtype]) for n in lists]
        lines.append(f"| mean ± sd | {dtype} | " + " | ".join(cells) + " | | | | | |")
    diffs = []
    for n in lists:
        by_seed = {(r["seed"], r["dtype"]): r["eer"][n] for r in results}
        d = [by_seed[(s, "bfloat16")] - by_seed[(s, "float32")]
             for s in sorted({r["seed"] for r in results})
             if (s, "bfloat16") in by_seed and (s, "float32") in by_seed]  # fmt: skip
        diffs.append(_mean_sd(d) if d else "-")
    lines.append("| paired bf16 - fp32 | | " + " | ".join(diffs) + " | | | | | |")
    return lines


def within_seed_noise(results: list[dict]) -> str:
    """Per trial list: is the paired bf16 - fp32 EER difference inside the float32 seed noise?

    The criterion: |mean paired difference| <= 2 x the float32 seed standard deviation (with
    one seed there is no noise estimate and the answer says so).
    """
    lists = sorted({k for r in results for k in r["eer"]})
    seeds = sorted({r["seed"] for r in results})
    by = {(r["seed"], r["dtype"], n): r["eer"][n] for r in results for n in r["eer"]}
    parts = []
    for n in lists:
        fp32 = [by[(s, "float32", n)] for s in seeds if (s, "float32", n) in by]
        diffs = [by[(s, "bfloat16", n)] - by[(s, "float32", n)] for s in seeds
                 if (s, "bfloat16", n) in by and (s, "float32", n) in by]  # fmt: skip
        if len(fp32) < 2 or not diffs:
            parts.append(f"`{n}`: not enough seeds to estimate the noise")
            continue
        mean_diff, noise = statistics.mean(diffs), 2 * statistics.stdev(fp32)
        inside = abs(mean_diff) <= noise
        parts.append(
            f"`{n}`: bf16 - fp32 = {mean_diff:+.2f} points, "
            f"{'inside' if inside else '**outside**'} 2 x the fp32 seed sd ({noise:.2f})"
        )
    return "; ".join(parts) + "."


def grad_check(seed: int = 0, batch: int = 32) -> dict:
    """One batch's parameter gradients of the quickstart model in float32 and in bfloat16.

    Same initial parameters and batch (features computed once); loss = the training step's
    ``mean(HAM-Softmax loss)``. Reports whether every gradient entry is finite, the fraction of
    exact zeros (underflow would show as extra zeros in bfloat16) and the smallest nonzero
    magnitude, and how well the bfloat16 gradient matches the float32 one (global cosine and
    norm ratio, worst per-tensor cosine).
    """
    import importlib.util

    import jax
    import jax.numpy as jnp
    import numpy as np

    from hamjax import frontend, heads, model_builder

    spec = importlib.util.spec_from_file_location("qs", ROOT / "configs" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(seed)
    wave = (0.1 * rng.standard_normal((batch, 16_240))).astype(np.float32)
    labels = jnp.asarray(rng.integers(0, 90, batch), jnp.int32)
    config = module.get_config()
    feats, fmask = frontend.compute_features(wave, None, **model_builder.feature_kwargs(config))
    out: dict = {"batch": batch}
    grads = {}
    for dtype in DTYPES:
        config = module.get_config()
        config.model.dtype = dtype
        encoder, head = model_builder.build_modules(config, 90)
        variables = model_builder.init_variables(config, encoder, head, jax.random.key(seed))
        stats = variables["batch_stats"]["encoder"]

        def loss(params, encoder=encoder, head=head, stats=stats):
            emb, _ = encoder.apply(
                {"params": params["encoder"], "batch_stats": stats},
                feats, fmask, train=True, mutable=["batch_stats"],
            )  # fmt: skip
            o = head.apply({"params": params["head"]}, emb, labels, margin_scale=1.0)
            return heads.head_loss(o, labels).mean()

        grads[dtype] = jax.jit(jax.grad(loss))(variables["params"])
    leaves = {d: [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(g)]
              for d, g in grads.items()}  # fmt: skip
    for d, ls in leaves.items():
        flat = np.concatenate(ls)
        nz = np.abs(flat[flat != 0])
        out[d] = {
            "finite": bool(np.isfinite(flat).all()),
            "zero_fraction": float(np.mean(flat == 0)),
            "min_nonzero": float(nz.min()) if nz.size else 0.0,
            "norm": float(np.linalg.norm(flat)),
        }
    a, b = (np.concatenate(leaves[d]) for d in DTYPES)
    out["cosine"] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    out["worst_tensor_cosine"] = float(min(
        x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30)
        for x, y in zip(leaves["float32"], leaves["bfloat16"], strict=True)
        if np.linalg.norm(x) > 1e-3 * np.linalg.norm(a) / np.sqrt(len(leaves["float32"]))
    ))  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


def grad_lines(g: dict) -> list[str]:
    f, b = g["float32"], g["bfloat16"]
    return [
        f"Gradient check (`grad_check`: one batch of {g['batch']} 1-s crops, the quickstart "
        "model, the same parameters, features and labels; gradients of the HAM-Softmax loss "
        "w.r.t. every parameter):",
        "",
        "| dtype | all finite | exact zeros | smallest nonzero | global norm |",
        "|---|---|---|---|---|",
        *(f"| {d} | {'yes' if r['finite'] else 'NO'} | {100 * r['zero_fraction']:.3f} % | "
          f"{r['min_nonzero']:.2e} | {r['norm']:.4g} |" for d, r in (("float32", f),
                                                                       ("bfloat16", b))),
        "",
        f"bfloat16 vs float32 gradient: cosine {g['cosine']:.5f} over all parameters, worst "
        f"single tensor {g['worst_tensor_cosine']:.4f}; norm ratio {b['norm'] / f['norm']:.4f}.",
    ]  # fmt: skip


def mbrola_section(fp32: Path, bf16: Path) -> str:
    """The MBROLA comparison from two seed sweeps of ``configs/mbrola.py:ham_softmax`` (one in
    float32, one with ``model.dtype=bfloat16``), each evaluated by ``eval.py`` on the sweep."""
    runs = {}
    for dtype, root in (("float32", fp32), ("bfloat16", bf16)):
        table = json.loads((root / "eval" / "sweep_results.json").read_text())["variants"]
        runs[dtype] = {
            int(v["overrides"]["seed"]): {t: r["eer_percent"] for t, r in v["lists"].items()}
            for v in table.values()
        }
    results = [
        {"seed": seed, "dtype": dtype, "eer": eers}
        for dtype in DTYPES
        for seed, eers in sorted(runs[dtype].items())
    ]
    lists = sorted({t for r in results for t in r["eer"]})
    lines = [
        "## bf16_mbrola: bfloat16 vs float32 on the MBROLA corpus (ham_clip, CPU)",
        "",
        "`configs/mbrola.py:ham_softmax` (the study's ham_clip), 3 seeds as one sweep program per "
        "dtype (each seed its own data order), evaluated by `eval.py` on the sweep (cosine, "
        "full utterances). EER %:",
        "",
        "| seed | dtype | " + " | ".join(lists) + " |",
        "|---|---|" + "---|" * len(lists),
        *(f"| {r['seed']} | {r['dtype']} | " + " | ".join(f"{r['eer'][t]:.2f}" for t in lists)
          + " |" for r in results),
        "",
        "Accuracy: " + within_seed_noise(results),
        "",
        f"Runs: `python train.py --config configs/mbrola.py:ham_softmax --workdir {bf16} "
        "--config.model.dtype=bfloat16 --config.sweep.shared_batches=False --zip --sweep "
        f"seed=0,1,2` then `python eval.py --workdir {bf16} --nobaseline`; float32: "
        f"`{fp32}` (the same without the dtype, from `scripts/reproduction_study.py run`). "
        f"Section: `python bench/bf16.py --mbrola {fp32} {bf16}`.",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bf16_study")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument(
        "--from-results", action="store_true", help="re-render RUNS/results.json, train nothing"
    )
    parser.add_argument(
        "--mbrola", nargs=2, type=Path, metavar=("FP32_SWEEP", "BF16_SWEEP"),
        help="only write the MBROLA section from two evaluated seed sweeps",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.mbrola:
        md = mbrola_section(*args.mbrola)
        print(md)
        if args.write:
            update_section("bf16_mbrola", md)
        return
    command = "python bench/bf16.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs, data, repo = args.runs.absolute(), args.data.absolute(), args.repo.absolute()
    if args.from_results:
        results = json.loads((runs / "results.json").read_text())
        command = results[0].get("command", command) if results else command
    else:
        results = []
        for seed in args.seeds:
            for dtype in DTYPES:
                results.append(run_one(repo, runs / f"s{seed}_{dtype}", data, seed, dtype))
                results[-1]["command"] = command
                (runs / "results.json").write_text(json.dumps(results, indent=1))
    grads = grad_check()
    finite = all(r["grads_finite"] for r in results) and all(grads[d]["finite"] for d in DTYPES)
    verdict = within_seed_noise(results)
    md = "\n".join(
        [
            "## bf16: bfloat16 vs float32 accuracy (quickstart recipe, CPU)",
            "",
            f"Machine: {machine_description()}; **shared** with other engineers' jobs (wall "
            "times are inflated and noisy). Each seed: `configs/quickstart.py` trained and "
            "evaluated (`eval.py --nobaseline`, protocol full, cosine) in float32 and in "
            "`--config.model.dtype=bfloat16` (parameters, optimiser, BatchNorm statistics, "
            "features, pooling statistics and the head in float32; convolutions and "
            "activations in bfloat16). The seed also draws the synthetic corpus, so seeds "
            "differ in data too; both dtypes of a seed share it.",
            "",
            *table(results),
            "",
            "Train s includes generating and preparing the seed's corpus in its float32 run "
            "(the bfloat16 run reuses it); eval s varies with the machine's load.",
            "",
            *grad_lines(grads),
            "",
            "Loss scaling: "
            + (
                "not needed. Every logged gradient norm of every run was finite, the "
                "bfloat16 gradients have no more exact zeros than the float32 ones and their "
                "smallest magnitudes are far above bfloat16's smallest normal (1.2e-38: the "
                "same 8-bit exponent as float32, so nothing that is representable in float32 "
                "underflows). (float16, with its 5-bit exponent, would need it; "
                "`model.dtype` refuses it.)"
                if finite
                else "**non-finite gradients were seen; see the table.**"
            ),
            "",
            "Accuracy: " + verdict,
            "",
            f"Command: `{command.strip()}` (runs), `python bench/bf16.py --from-results` "
            "(gradient check and this section).",
        ]
    )
    print(md)
    if args.write:
        update_section("bf16", md)


if __name__ == "__main__":
    main()
