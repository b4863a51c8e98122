"""Benchmark: hamjax.poincare.pairwise_dist vs the broadcast [B, C, D] formulation.

Forward + backward (gradients w.r.t. embeddings, centres and c) of ``sum(w * d(x_b, w_c))`` for
``x [256, 192]`` (a batch of ECAPA embeddings) against ``w [5994, 192]`` (VoxCeleb2's speakers),
float32, jitted. The broadcast variant is what the authors' and WeSpeaker's heads do (an
``[B, C, D]`` difference tensor) with the same arcosh formula, via ``poincare.dist`` broadcast.

Timing: compile and warm up each variant first, then interleave the variants round-robin and
report medians (the development machine is shared). Peak memory: XLA's compiled memory analysis
(temporaries + outputs of the jitted step; the inputs are the same for every variant).

Run: ``python bench/poincare.py [--repeats 7] [--no-write]``; writes its section of
``bench/RESULTS.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hamjax import poincare  # noqa: E402

B, C, D = 256, 5994, 192
CURVATURE = 3.0  # the HAM-Softmax recipe


def _loss_fns():
    def pairwise(x, w, c, g):
        return jnp.sum(g * poincare.pairwise_dist(x, w, c=c))

    def pairwise_plain(x, w, c, g):
        return jnp.sum(g * poincare.pairwise_dist(x, w, c=c, compensated=False))

    def broadcast(x, w, c, g):
        return jnp.sum(g * poincare.dist(x[:, None, :], w[None, :, :], c=c))

    return {
        "pairwise_dist (compensated, default)": pairwise,
        "pairwise_dist (compensated=False)": pairwise_plain,
        "broadcast [B, C, D]": broadcast,
    }


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    c = jnp.float32(CURVATURE)
    # Points as a head would see them: expmap0 of BatchNorm-scale embeddings / small centres.
    x = poincare.expmap0(jnp.asarray(rng.normal(size=(B, D)), jnp.float32) * 0.1, c=c)
    w = poincare.expmap0(jnp.asarray(rng.normal(size=(C, D)), jnp.float32) * 0.05, c=c)
    g = jnp.asarray(rng.normal(size=(B, C)), jnp.float32)  # upstream cotangent stand-in
    return x, w, c, g


def _near_coincident_error(fn, seed: int = 1, n: int = 64, radius: float = 0.9) -> float:
    """Max abs error vs a float64 numpy reference over exactly / nearly coincident pairs.

    ``n`` points at ``sqrt(c)|x| = radius`` against themselves and against copies perturbed by
    1e-6 and 1e-4 (relative to the ball radius); the same [n, 3n] distance matrix also holds
    distant pairs.
    """
    rng = np.random.default_rng(seed)
    c = CURVATURE
    u = rng.normal(size=(n, D))
    x = u / np.linalg.norm(u, axis=-1, keepdims=True) * radius / np.sqrt(c)
    ys = [x + rng.normal(size=x.shape) * s / np.sqrt(c * D) for s in (0.0, 1e-6, 1e-4)]
    x32 = jnp.asarray(x, jnp.float32)
    y32 = poincare.project(jnp.asarray(np.concatenate(ys), jnp.float32), c=c)
    g = jnp.ones((n, 3 * n), jnp.float32)
    d32 = jax.grad(lambda gg: fn(x32, y32, jnp.float32(c), gg))(g)  # d(sum g * d)/dg = d
    x64, y64 = np.asarray(x32, np.float64), np.asarray(y32, np.float64)
    d2 = ((x64[:, None] - y64[None]) ** 2).sum(-1)
    den = (1 - c * (x64**2).sum(-1))[:, None] * (1 - c * (y64**2).sum(-1))[None]
    ref = np.arccosh(1 + 2 * c * d2 / den) / np.sqrt(c)
    return float(np.max(np.abs(np.asarray(d32, np.float64) - ref)))


def _step(fn):
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))


def _xla_memory(fn, args) -> int:
    """Bytes XLA allocates for temporaries + outputs of the compiled fwd+bwd step."""
    mem = _step(fn).lower(*args).compile().memory_analysis()
    return int(mem.temp_size_in_bytes + mem.output_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per variant")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    fns = _loss_fns()
    inputs = _inputs()
    steps = {name: _step(fn) for name, fn in fns.items()}

    # Same maths: the variants agree (value and gradients) before anything is timed.
    outs = {name: jax.block_until_ready(step(*inputs)) for name, step in steps.items()}  # warm-up
    ref_val, ref_grads = outs["broadcast [B, C, D]"]
    for name, (val, grads) in outs.items():
        rel = abs(float(val) - float(ref_val)) / abs(float(ref_val))
        assert rel < 1e-4, f"{name}: loss differs from broadcast by {rel:.2e} relative"
        for gi, gr in zip(grads, ref_grads, strict=True):
            scale = float(jnp.max(jnp.abs(gr)))
            assert float(jnp.max(jnp.abs(gi - gr))) <= 1e-3 * scale, f"{name}: gradients differ"

    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():  # interleaved round-robin
            t0 = time.perf_counter()
            jax.block_until_ready(step(*inputs))
            times[name].append(time.perf_counter() - t0)

    xla = {name: _xla_memory(fn, inputs) for name, fn in fns.items()}
    err = {name: _near_coincident_error(fn) for name, fn in fns.items()}

    base = "broadcast [B, C, D]"
    t_base = statistics.median(times[base])
    rows = []
    for name in fns:
        t = statistics.median(times[name])
        rows.append(
            f"| {name} | {t * 1e3:.1f} | {min(times[name]) * 1e3:.1f} | {t_base / t:.1f}x | "
            f"{xla[name] / 2**20:.1f} | {xla[base] / xla[name]:.1f}x | {err[name]:.1e} |"
        )
    try:
        from _results import machine_description

        machine = machine_description()
    except ImportError:
        machine = f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
    load = os.getloadavg()
    md = "\n".join(
        [
            "## poincare: pairwise_dist vs broadcast [B, C, D]",
            "",
            f"Forward + backward (grads w.r.t. x, centres and c) of `sum(g * d(x_b, w_c))`, "
            f"x [{B}, {D}], w [{C}, {D}], c = {CURVATURE}, float32, jitted. Median of "
            f"{args.repeats} interleaved rounds after compile + warm-up. Peak memory: XLA "
            f"compiled memory analysis (temp + output bytes of the compiled step). Error: "
            f"max abs difference from a float64 reference over 64 points at sqrt(c)|x| = 0.9 "
            f"against themselves, 1e-6- and 1e-4-perturbed copies (and each other).",
            "",
            "| variant | median ms | min ms | speed-up (median) | XLA peak MiB | memory ratio "
            "| float32 max abs error |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Machine: {machine}; **shared** with other jobs during the run (load average "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}), so absolute times are noisy; the "
            f"interleaved medians are comparable with each other. Command: "
            f"`python bench/poincare.py --repeats {args.repeats}`.",
        ]
    )
    print(md)
    if not args.no_write:
        from _results import update_section

        update_section("poincare", md)


if __name__ == "__main__":
    main()
