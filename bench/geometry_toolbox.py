"""Benchmark: the geometry toolbox (hamjax.lorentz, hamjax.optim).

Three measurements, float32, jitted, on whatever JAX backend is present:

1. Optimiser step: ``riemannian_adam`` against ``optax.adam`` on the same parameters, a head's
   worth: centres ``[5994, 192]`` (VoxCeleb2's speakers; on the ball, or ``[5994, 193]`` on the
   hyperboloid) and a Euclidean ``[1536, 192]`` matrix. One step = ``tx.update`` +
   ``optax.apply_updates`` with donated buffers; gradients are fixed inputs.
2. Distance cost: ``poincare.dist`` against ``lorentz.dist`` (and the textbook
   ``arcosh(-c<x, y>_L)``) on 65,536 pairs in ``D = 192``, forward and forward + backward.
3. float32 precision against the distance ``r`` from the origin (``c = 1``; in "ball units"
   every curvature gives the same table): 256 pairs at each ``r``, built in float64 from their
   exact description and rounded to float32 coordinates in each model, so the error includes
   what storing a point in float32 costs (that is what a float32 parameter is). The reference
   is the exact distance (hyperbolic law of cosines in float64). Pairs: both points at ``r``
   and 1 apart ("tangential"), at ``r - 1`` and ``r`` on one ray ("radial"), and at ``r`` and
   ``1e-3`` apart (relative error). The ball points are rounded as they are (no projection);
   once ``|x|`` rounds to the radius they are all the same point.

Timing: compile and warm up first, then interleave the variants round-robin and report medians
(the development machine is shared). Writes the ``geometry_toolbox`` section of
``bench/RESULTS.md`` and the precision table of ``docs/GEOMETRY.md``.

Run: ``python bench/geometry_toolbox.py [--repeats 7] [--no-write]`` (about 1-2 minutes on 2
cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from hamjax import lorentz, optim, poincare  # noqa: E402

GEOMETRY_MD = Path(__file__).resolve().parent.parent / "docs" / "GEOMETRY.md"
C_HEAD, N_CLASSES, D = 3.0, 5994, 192
RADII = (0.5, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30, 40)


def _median_times(fns: dict, args: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn (interleaved rounds after one warm-up call each)."""
    for name, fn in fns.items():
        jax.block_until_ready(fn(*args[name]()))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            a = args[name]()  # fresh (donatable) inputs, outside the timed region
            jax.block_until_ready(a)
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


# ----------------------------------------------------------------------------------------------
# 1. Optimiser step
# ----------------------------------------------------------------------------------------------


def _optimiser_rows(repeats: int) -> list[str]:
    rng = np.random.default_rng(0)
    ball = poincare.expmap0(jnp.asarray(rng.normal(size=(N_CLASSES, D)) * 0.05, jnp.float32), c=3.0)
    hyp = lorentz.from_poincare(ball, c=C_HEAD)
    w = jnp.asarray(rng.normal(size=(8 * D, D)) * 0.05, jnp.float32)
    ball_params = {"centres": ball, "w": w}
    hyp_params = {"centres": hyp, "w": w}
    noise = lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype)
    grads = {
        "ball": jax.tree_util.tree_map(noise, ball_params),
        "hyp": jax.tree_util.tree_map(noise, hyp_params),
    }
    m_ball = {"centres": optim.PoincareBall(C_HEAD), "w": "euclidean"}
    m_hyp = {"centres": optim.Lorentz(C_HEAD), "w": "euclidean"}
    variants = {
        "optax.adam (baseline)": (optax.adam(1e-3), "ball"),
        "riemannian_adam, ball, expmap": (optim.riemannian_adam(1e-3, m_ball), "ball"),
        "riemannian_adam, ball, retraction": (
            optim.riemannian_adam(1e-3, m_ball, retraction=True),
            "ball",
        ),
        "riemannian_adam, hyperboloid, expmap": (optim.riemannian_adam(1e-3, m_hyp), "hyp"),
        "optax.sgd momentum (baseline)": (optax.sgd(1e-3, momentum=0.9), "ball"),
        "riemannian_sgd momentum, ball": (
            optim.riemannian_sgd(1e-3, m_ball, momentum=0.9),
            "ball",
        ),
    }
    fns, args = {}, {}
    for name, (tx, which) in variants.items():
        params = ball_params if which == "ball" else hyp_params
        g = grads[which]

        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        fns[name] = jax.jit(step, donate_argnums=(0, 1))
        state = jax.jit(tx.init)(params)
        args[name] = lambda params=params, state=state, g=g: (
            jax.tree_util.tree_map(jnp.copy, params),
            jax.tree_util.tree_map(jnp.copy, state),
            g,
        )
    t = _median_times(fns, args, repeats)
    rows = []
    for name in variants:
        base = "optax.adam (baseline)" if "adam" in name else "optax.sgd momentum (baseline)"
        rows.append(f"| {name} | {t[name] * 1e3:.2f} | {t[name] / t[base]:.2f}x |")
    return rows


# ----------------------------------------------------------------------------------------------
# 2. Distance cost
# ----------------------------------------------------------------------------------------------


def _distance_rows(repeats: int) -> list[str]:
    n, c = 65_536, 1.0
    rng = np.random.default_rng(1)
    bx = poincare.expmap0(jnp.asarray(rng.normal(size=(n, D)) * 0.1, jnp.float32), c=c)
    by = poincare.expmap0(jnp.asarray(rng.normal(size=(n, D)) * 0.1, jnp.float32), c=c)
    lx, ly = lorentz.from_poincare(bx, c=c), lorentz.from_poincare(by, c=c)

    def textbook(x, y):
        return jnp.arccosh(jnp.maximum(-c * lorentz.inner(x, y), 1.0)) / jnp.sqrt(c)

    dists = {
        "poincare.dist": (lambda x, y: poincare.dist(x, y, c=c), (bx, by)),
        "lorentz.dist (cancellation-free)": (lambda x, y: lorentz.dist(x, y, c=c), (lx, ly)),
        "textbook arcosh(-c<x, y>_L)": (textbook, (lx, ly)),
    }
    fns, args = {}, {}
    for name, (f, xy) in dists.items():
        fns[name + " fwd"] = jax.jit(lambda x, y, f=f: jnp.sum(f(x, y)))
        fns[name + " fwd+bwd"] = jax.jit(jax.grad(lambda x, y, f=f: jnp.sum(f(x, y)), (0, 1)))
        args[name + " fwd"] = args[name + " fwd+bwd"] = lambda xy=xy: xy
    t = _median_times(fns, args, repeats)
    base = "poincare.dist"
    rows = []
    for name in dists:
        f, b = t[name + " fwd"], t[name + " fwd+bwd"]
        rows.append(
            f"| {name} | {f * 1e3:.2f} | {f / t[base + ' fwd']:.2f}x | {b * 1e3:.2f} | "
            f"{b / t[base + ' fwd+bwd']:.2f}x |"
        )
    return rows


# ----------------------------------------------------------------------------------------------
# 3. float32 precision against the distance from the origin
# ----------------------------------------------------------------------------------------------


def _pair_points(r_x, r_y, phi, n, dim, rng):
    """float64 direction pairs: unit u, and v at angle phi from u; radii r_x, r_y."""
    u = rng.normal(size=(n, dim))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    w = rng.normal(size=(n, dim))
    w -= np.sum(w * u, -1, keepdims=True) * u
    w /= np.linalg.norm(w, axis=-1, keepdims=True)
    v = np.cos(phi) * u + np.sin(phi) * w
    return (r_x, u), (r_y, v)


def _ball(r, u):
    return np.tanh(r / 2.0) * u  # c = 1: d(0, x) = 2 artanh |x|


def _hyp(r, u):
    return np.concatenate([np.full(u.shape[:-1] + (1,), np.cosh(r)), np.sinh(r) * u], -1)


def _true_dist(rx, ry, phi):
    # Hyperbolic law of cosines, cancellation-free: cosh d = cosh(rx - ry) + sinh rx sinh ry
    # (1 - cos phi), i.e. t = cosh d - 1 = 2 sinh^2((rx - ry)/2) + 2 sinh rx sinh ry sin^2(phi/2).
    t = 2 * np.sinh((rx - ry) / 2) ** 2 + 2 * np.sinh(rx) * np.sinh(ry) * np.sin(phi / 2) ** 2
    return np.log1p(t + np.sqrt(t * (t + 2)))


def _precision_table(n: int = 256, dim: int = D) -> tuple[list[str], dict]:
    """Errors of float32 (and float64) distances against the exact ones, per radius."""
    jax.config.update("jax_enable_x64", True)  # for the float64 columns; inputs are typed
    pd = jax.jit(lambda x, y: poincare.dist(x, y, c=1.0))
    ld = jax.jit(lambda x, y: lorentz.dist(x, y, c=1.0))
    naive = jax.jit(lambda x, y: jnp.arccosh(jnp.maximum(-lorentz.inner(x, y), 1.0)))
    rows, raw = [], {}
    rng = np.random.default_rng(2)
    for r in RADII:
        out = {}
        cases = {
            # both at r, 1 apart: sin(phi/2) = sinh(1/2) / sinh(r)
            "tangential": (r, r, 2 * np.arcsin(min(1.0, np.sinh(0.5) / np.sinh(r)))),
            "radial": (max(r - 1.0, 0.0), r, 0.0),
            "near": (r, r, 2 * np.arcsin(min(1.0, np.sinh(0.5e-3) / np.sinh(r)))),
        }
        for case, (rx, ry, phi) in cases.items():
            (rx, u), (ry, v) = _pair_points(rx, ry, phi, n, dim, rng)
            truth = _true_dist(rx, ry, phi)
            scale = truth if case == "near" else 1.0  # relative error for the near pairs
            err = lambda d, truth=truth, scale=scale: float(
                np.max(np.abs(np.asarray(d, np.float64) - truth) / scale)
            )
            for dtype, tag in ((jnp.float32, ""), (jnp.float64, "64")):
                bxy = [jnp.asarray(_ball(rr, uu), dtype) for rr, uu in ((rx, u), (ry, v))]
                hxy = [jnp.asarray(_hyp(rr, uu), dtype) for rr, uu in ((rx, u), (ry, v))]
                out[case + tag] = {"poincare": err(pd(*bxy)), "lorentz": err(ld(*hxy))}
                if case == "near" and not tag:
                    out[case]["textbook"] = err(naive(*hxy))
        # Ball saturation: the fraction of float32 ball points at r that round onto |x| >= 1.
        bx = np.asarray(jnp.asarray(_ball(r, u), jnp.float32), np.float64)
        out["ball_saturated"] = float(np.mean(np.linalg.norm(bx, axis=-1) >= 1.0))
        raw[r] = out
        rows.append(
            f"| {r:g} | {out['tangential']['poincare']:.1e} | {out['tangential']['lorentz']:.1e} "
            f"| {out['radial']['poincare']:.1e} | {out['radial']['lorentz']:.1e} "
            f"| {out['near']['poincare']:.1e} | {out['near']['lorentz']:.1e} "
            f"| {out['near']['textbook']:.1e} | {out['ball_saturated']:.0%} "
            f"| {out['tangential64']['poincare']:.1e} | {out['tangential64']['lorentz']:.1e} |"
        )
    jax.config.update("jax_enable_x64", False)
    return rows, raw


def _first_radius(raw: dict, case: str, model: str, threshold: float) -> str:
    for r in RADII:
        if raw[r][case][model] > threshold:
            return f"{r:g}"
    return f"> {RADII[-1]:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per variant")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    opt_rows = _optimiser_rows(args.repeats)
    dist_rows = _distance_rows(args.repeats)
    prec_rows, raw = _precision_table()
    load1 = os.getloadavg()
    try:
        from _results import machine_description

        machine = machine_description()
    except ImportError:
        machine = f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
    first = lambda case, model, th: _first_radius(raw, case, model, th)
    switch = (
        f"First radius where the error exceeds 1e-3: float32 tangential r = "
        f"{first('tangential', 'poincare', 1e-3)} (ball) / {first('tangential', 'lorentz', 1e-3)} "
        f"(hyperboloid); float32 radial r = {first('radial', 'poincare', 1e-3)} / "
        f"{first('radial', 'lorentz', 1e-3)}; float32 near pairs (relative) r = "
        f"{first('near', 'poincare', 1e-3)} / {first('near', 'lorentz', 1e-3)}; float64 "
        f"tangential r = {first('tangential64', 'poincare', 1e-3)} / "
        f"{first('tangential64', 'lorentz', 1e-3)}."
    )
    prec_header = [
        "| r | ball f32 tangential | hyperboloid f32 tangential | ball f32 radial "
        "| hyperboloid f32 radial | ball f32 near (rel.) | hyperboloid f32 near (rel.) "
        "| textbook arcosh f32 near (rel.) | f32 ball points on the boundary "
        "| ball f64 tangential | hyperboloid f64 tangential |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    prec_caption = (
        f"Max error of `poincare.dist` / `lorentz.dist` against the exact distance, 256 random "
        f"pairs per row in D = {D}, the points built exactly and rounded to float32 (f32) or "
        f"float64 (f64) coordinates in each model, so the error includes what storing a point "
        f"costs. r = sqrt(c) d(o, x). Tangential: both points at r, 1 apart (max abs error). "
        f"Radial: at r - 1 and r on one ray (max abs). Near: both at r, 1e-3 apart (max "
        f"relative error); the textbook column is `arcosh(-c<x, y>_L)` on the same float32 "
        f"hyperboloid points. Distances in units of 1/sqrt(c) (c = 1 here; the table is the "
        f"same for every c in these units). The ball points are not projected: the last "
        f"f32 column is the fraction that rounded onto (or past) the boundary."
    )
    md = "\n".join(
        [
            "## geometry_toolbox: Riemannian optimisers, Lorentz vs Poincaré cost and precision",
            "",
            f"Machine: {machine}; **shared** with other jobs (load average {load0[0]:.1f} before, "
            f"{load1[0]:.1f} after), so absolute times are noisy; variants were interleaved "
            f"round by round ({args.repeats} rounds) and the tables give medians. No GPU. "
            f"Command: `python bench/geometry_toolbox.py --repeats {args.repeats}` "
            f"({time.perf_counter() - t_start:.0f} s).",
            "",
            f"### Optimiser step (update + apply_updates, jitted, donated): centres [{N_CLASSES}, "
            f"{D}] on the ball (c = {C_HEAD}) or [{N_CLASSES}, {D + 1}] on the hyperboloid, plus "
            f"a Euclidean [{8 * D}, {D}] matrix, float32",
            "",
            "| optimiser | median ms / step | vs its optax baseline |",
            "|---|---|---|",
            *opt_rows,
            "",
            f"### Distance of 65,536 pairs, D = {D}, float32 (forward: sum of distances; "
            f"fwd+bwd: gradients w.r.t. both point sets)",
            "",
            "| distance | fwd ms | vs poincare | fwd+bwd ms | vs poincare |",
            "|---|---|---|---|---|",
            *dist_rows,
            "",
            "### float32 error against the distance from the origin",
            "",
            prec_caption,
            "",
            *prec_header,
            *prec_rows,
            "",
            switch,
        ]
    )
    print(md)
    if not args.no_write:
        from _results import update_section

        update_section("geometry_toolbox", md)
        if GEOMETRY_MD.exists():
            table = "\n".join(
                [
                    prec_caption,
                    "",
                    *prec_header,
                    *prec_rows,
                    "",
                    switch,
                    "",
                    f"Written by `python bench/geometry_toolbox.py` ({machine}).",
                ]
            )
            update_section("precision", table, path=GEOMETRY_MD)


if __name__ == "__main__":
    main()
