"""HAM-Softmax loss, forward + backward: hamjax's matmul form against the [B, C, D] form.

Usage::

    python bench/heads.py                      # B=256, D=192, C in 1211 5994 20000 100000
    python bench/heads.py --classes 1211 5994 --repeats 3 --no-write

Both variants compute the authors' ``clip`` HAM loss (c=3, s=30, m=0.2) and its gradient with
respect to the embeddings and the class centres, jitted:

* ``matmul``: :func:`hamjax.losses.hyperbolic_logits` (one ``[B, C]`` matmul, no ``[B, C, D]``).
* ``bcd``: a JAX transcription of the authors' / WeSpeaker's head, which builds the
  ``[B, C, D]`` difference tensor ``x[:, None] - w[None]``.

Time is the median of interleaved repeats after compilation (variants alternate within each
repeat, so load changes on a shared machine hit both alike). Memory is XLA's compiled
``memory_analysis()`` (temporaries + outputs: what the step needs beyond its inputs) and the
peak RSS growth of a separate child process that compiles and runs the variant once. The
``bcd`` form is not run where its compiled temporaries exceed ``--max-gb`` (default 8 GB); its
predicted size is still reported. Results go to the ``heads`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_description, update_section  # noqa: E402

from hamjax import losses  # noqa: E402

C_CURV, SCALE, MARGIN, EPS = 3.0, 30.0, 0.2, losses.AUTHORS_EPS
VARIANTS = ("matmul", "bcd")


def _bcd_logits(e: jax.Array, w: jax.Array, labels: jax.Array) -> jax.Array:
    """The authors' HAM head with its [B, C, D] difference tensor (for comparison only)."""
    radius = (1.0 - EPS) / jnp.sqrt(C_CURV)

    def clip(v):
        n = jnp.linalg.norm(v, axis=-1, keepdims=True)
        return jnp.where(n > radius, v / n * radius, v)

    x, p = clip(e), clip(w)
    sq = jnp.sum(jnp.square(x[:, None, :] - p[None, :, :]), axis=-1)  # [B, C, D] -> [B, C]
    x2 = jnp.clip(jnp.sum(x * x, -1), 0.0, 1.0 - EPS)
    p2 = jnp.clip(jnp.sum(p * p, -1), 0.0, 1.0 - EPS)
    den = jnp.maximum((1.0 - x2)[:, None] * (1.0 - p2)[None, :], EPS)
    z = 1.0 + 2.0 * sq / den
    # arccosh written out as the authors do; the clamp keeps the gradient finite at z = 1.
    d = jnp.log(z + jnp.sqrt(jnp.maximum(z * z - 1.0, 1e-12)))
    one_hot = jax.nn.one_hot(labels, w.shape[0], dtype=d.dtype)
    return -SCALE * (d + MARGIN * one_hot)


def _matmul_logits(e: jax.Array, w: jax.Array, labels: jax.Array) -> jax.Array:
    return losses.hyperbolic_logits(e, w, labels, c=C_CURV, scale=SCALE, margin=MARGIN, mode="clip")


def make_step(variant: str):
    """Jitted ``(e, w, labels) -> (loss, (de, dw))`` for a variant."""
    logits_fn = _matmul_logits if variant == "matmul" else _bcd_logits

    def loss(e, w, labels):
        z = logits_fn(e, w, labels)
        return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def make_inputs(batch: int, dim: int, classes: int, seed: int = 0):
    """BatchNorm-like embeddings (norm ~sqrt(D)) and centres N(0, 1e-3^2), as in training."""
    rng = np.random.default_rng(seed)
    e = jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32)
    w = jnp.asarray(1e-3 * rng.normal(size=(classes, dim)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, classes, size=batch), jnp.int32)
    return e, w, labels


def compiled_bytes(step, args) -> int:
    """XLA's temporaries + outputs of the compiled step, in bytes."""
    analysis = step.lower(*args).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


def _rss_child(variant: str, batch: int, dim: int, classes: int) -> None:
    """Child process: prints the peak RSS growth (bytes) of compiling and running the step once.

    The resident set is sampled every millisecond from a thread (psutil); the baseline is the
    RSS after JAX start-up and the inputs, so the figure is what the step itself adds (XLA's
    compiler working memory included).
    """
    import psutil

    args = make_inputs(batch, dim, classes)
    jax.block_until_ready(args)
    step = make_step(variant)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    jax.block_until_ready(step(*args))
    jax.block_until_ready(step(*args))
    done.set()
    sampler.join()
    print(json.dumps({"rss_bytes": peak - base}))


def measure_rss(variant: str, batch: int, dim: int, classes: int) -> int | None:
    cmd = [sys.executable, __file__, "--rss-child", variant, str(batch), str(dim), str(classes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["rss_bytes"])


def time_interleaved(
    steps: dict, args, repeats: int, min_block_s: float = 0.2
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each step (and each step's loss value).

    Blocks of calls are interleaved across variants.

    Each variant is timed in blocks of ``k`` back-to-back calls, ``k`` chosen after warm-up so
    that a block lasts at least ``min_block_s`` (a fast variant is otherwise dominated by
    scheduling noise on a loaded machine); the blocks of all variants alternate.
    """
    calls, first = {}, {}
    for name, step in steps.items():  # compile, warm up, calibrate
        first[name] = float(jax.block_until_ready(step(*args))[0])
        t0 = time.perf_counter()
        jax.block_until_ready(step(*args))
        calls[name] = max(1, int(np.ceil(min_block_s / max(time.perf_counter() - t0, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                out = step(*args)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t0) / calls[name])
    return {name: statistics.median(ts) for name, ts in times.items()}, first


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--classes", type=int, nargs="+", default=[1211, 5994, 20000, 100000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-gb", type=float, default=8.0)
    parser.add_argument("--no-rss", action="store_true", help="skip the child-process RSS runs")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument(
        "--rss-child", nargs=4, metavar=("VARIANT", "B", "D", "C"), help=argparse.SUPPRESS
    )
    a = parser.parse_args()
    if a.rss_child:
        variant, b, d, c = a.rss_child
        _rss_child(variant, int(b), int(d), int(c))
        return

    rows = []
    for classes in a.classes:
        args = make_inputs(a.batch, a.dim, classes)
        steps = {v: make_step(v) for v in VARIANTS}
        xla = {v: compiled_bytes(steps[v], args) for v in VARIANTS}
        run = dict(steps)
        if xla["bcd"] > a.max_gb * 1e9:
            del run["bcd"]
        secs, loss = time_interleaved(run, args, a.repeats)
        if "bcd" in loss:  # sanity: both forms compute the same loss
            assert abs(loss["matmul"] - loss["bcd"]) <= 1e-4 * abs(loss["bcd"]), loss
        rss = {v: None for v in VARIANTS}
        if not a.no_rss:
            for v in run:
                rss[v] = measure_rss(v, a.batch, a.dim, classes)
        row = dict(classes=classes, xla=xla, secs=secs, rss=rss)
        rows.append(row)
        print(json.dumps(row), flush=True)

    lines = [
        "## HAM-Softmax head: loss forward + backward (`python bench/heads.py`)",
        "",
        f"B={a.batch}, D={a.dim}, `clip` mode (c=3, s=30, m=0.2), gradient w.r.t. embeddings "
        f"and centres, jitted, float32. Machine: {machine_description()}; **shared with ~7 "
        "other engineers running tests**, so absolute times are noisy: medians of "
        f"{a.repeats} interleaved repeats (blocks of >= 0.2 s) after compilation. Memory: XLA "
        "`memory_analysis()` "
        "temporaries + outputs, and the peak RSS growth (sampled every ms) of a child process "
        "compiling and running the step twice. "
        f"`bcd` (the authors' `[B, C, D]` difference tensor) is not run where XLA predicts more "
        f"than {a.max_gb:g} GB; its predicted size is shown.",
        "",
        "| C | matmul time | bcd time | speed-up | matmul XLA mem | bcd XLA mem | mem ratio |"
        " matmul RSS | bcd RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t_m, t_b = r["secs"]["matmul"], r["secs"].get("bcd")
        speed = f"{t_b / t_m:.0f}x" if t_b else "not run"
        ratio = f"1/{r['xla']['bcd'] / r['xla']['matmul']:.0f}"
        lines.append(
            f"| {r['classes']} | {t_m * 1e3:.1f} ms | "
            f"{f'{t_b * 1e3:.0f} ms' if t_b else 'skipped (> max)'} | {speed} | "
            f"{_fmt_bytes(r['xla']['matmul'])} | {_fmt_bytes(r['xla']['bcd'])} | {ratio} | "
            f"{_fmt_bytes(r['rss']['matmul'])} | {_fmt_bytes(r['rss']['bcd'])} |"
        )
    md = "\n".join(lines) + "\n"
    print(md)
    if not a.no_write:
        update_section("heads", md)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
