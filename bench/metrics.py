"""Benchmarks evaluation: metrics on a Vox1-H-sized trial list, embedding extraction throughput.

    python bench/metrics.py [--trials 550000] [--repeats 7] [--batch 4] [--batches 3]

1. EER + minDCF(0.01) + minDCF(0.05) for 550,000 trials (Vox1-H has 552,536): three separate
   calls (three sorts) and :func:`hamjax.metrics.compute_metrics` (one sort), against
   scikit-learn's ``roc_curve`` + ``brentq`` EER alone, interleaved, median of ``--repeats``.
2. Embedding extraction throughput (utterances/s) for 8-s utterances with the jitted
   ``models.make_embed_fn`` (features inside) for ECAPA-TDNN C=512 and C=1024, randomly
   initialised (throughput does not depend on the weights), interleaved, median over rounds.

Writes its section of bench/RESULTS.md (``update_section("metrics", ...)``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_description, update_section  # noqa: E402


def bench_metrics(num_trials: int, repeats: int) -> dict[str, list[float]]:
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    from hamjax import metrics

    rng = np.random.default_rng(0)
    labels = (rng.random(num_trials) < 0.5).astype(np.int64)
    # float32 scores rounded to 4 decimals, as in score files: many ties, like real lists.
    scores = np.round(rng.normal(size=num_trials) + 2.0 * labels, 4).astype(np.float32)

    def separate():
        metrics.eer(scores, labels)
        metrics.min_dcf(scores, labels, 0.01)
        metrics.min_dcf(scores, labels, 0.05)

    def combined():
        metrics.compute_metrics(scores, labels, (0.01, 0.05))

    def sklearn_eer():
        fpr, tpr, _ = roc_curve(labels, scores)
        brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)

    variants = {
        "eer + 2 min_dcf (3 calls)": separate,
        "compute_metrics (1 sort)": combined,
        "sklearn roc_curve + brentq (EER only)": sklearn_eer,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up (imports, page faults)
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():  # interleaved: load changes hit every variant alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    # Same numbers both ways.
    m = metrics.compute_metrics(scores, labels)
    assert m.eer == metrics.eer(scores, labels)[0]
    return times


def bench_extraction(batch: int, batches: int, rounds: int) -> dict[str, list[float]]:
    import jax
    import jax.numpy as jnp

    from hamjax import models

    samples = 8 * 16_000
    rng = np.random.default_rng(0)
    wav = jnp.asarray(rng.uniform(-0.5, 0.5, (batch, samples)).astype(np.float32))
    mask = jnp.ones((batch, samples), bool)
    fns = {}
    for name in ("ecapa_tdnn_c512", "ecapa_tdnn_c1024"):
        enc = models.create_encoder(name)
        variables = enc.init(jax.random.key(0), jnp.zeros((2, 200, 80)))
        embed = jax.jit(models.make_embed_fn(enc, {"kind": "logmel"}))
        embed(variables, wav, mask).block_until_ready()  # compile
        fns[name] = (embed, variables)
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, (embed, variables) in fns.items():
            t0 = time.perf_counter()
            for _ in range(batches):
                embed(variables, wav, mask).block_until_ready()
            rates[name].append(batch * batches / (time.perf_counter() - t0))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=550_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4, help="utterances per extraction call")
    parser.add_argument("--batches", type=int, default=3, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved extraction rounds")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    mt = bench_metrics(args.trials, args.repeats)
    ex = bench_extraction(args.batch, args.batches, args.rounds)
    load_after = os.getloadavg()[0]

    import jax

    cmd = "python bench/metrics.py" + "".join(
        f" --{k} {v}"
        for k, v in (
            ("trials", args.trials),
            ("repeats", args.repeats),
            ("batch", args.batch),
            ("batches", args.batches),
            ("rounds", args.rounds),
        )
    )
    lines = [
        "## metrics: EER / minDCF and embedding extraction",
        "",
        f"Command: `{cmd}`. Machine: {machine_description()}; JAX backend "
        f"{jax.default_backend()}. **The machine was shared** with other engineers' jobs "
        f"(1-min load average {load_before:.1f} before, {load_after:.1f} after, on "
        f"{os.cpu_count()} cores): variants are interleaved and medians reported, but absolute "
        "times are pessimistic.",
        "",
        f"### {args.trials:,} trials (Vox1-H size), median of {args.repeats}",
        "",
        "| variant | median s | min s |",
        "|---|---|---|",
    ]
    for name, ts in mt.items():
        lines.append(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} |")
    lines += [
        "",
        "Target: EER + both minDCFs under 1 s on CPU.",
        "",
        f"### Extraction of 8-s utterances (batch {args.batch}, jitted features + encoder, "
        f"float32), median of {args.rounds} rounds of {args.batches} calls",
        "",
        "| encoder | utterances/s (median) | best |",
        "|---|---|---|",
    ]
    for name, rs in ex.items():
        lines.append(f"| {name} | {statistics.median(rs):.2f} | {max(rs):.2f} |")
    lines += ["", "No GPU was lent to this task; GPU throughput is not measured here."]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        update_section("metrics", md)


if __name__ == "__main__":
    main()
