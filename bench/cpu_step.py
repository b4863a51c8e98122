"""What each CPU-step change bought: the vox2 C=1024 training step, cumulatively, one process.

The ``ham_softmax:vox2`` step of ``bench/train_step.py`` (ECAPA-TDNN C=1024, B=32 clean + 32
augmented 2-s crops, HAM-Softmax over 5994 speakers, Adam) is built four times, each adding one
change to the encoder of commit ``--base`` (default 6c54187, before issue 18):

1. ``HEAD``: the base commit's ``hamjax/models/{ecapa_tdnn,layers}.py`` (read with ``git show``);
2. ``+ mask skip``: the frontend returns an all-valid frame mask as a constant when there is no
   sample mask, and the encoder then skips every masking operation
   (``layers.known_all_valid``);
3. ``+ attention split``: the attentive pooling's first 1x1 conv is applied to ``[h; mean; std]``
   without materialising the ``[B, T, 4608]`` concatenation (``layers.ConcatPointwiseConv``);
4. ``+ pointwise dW matmul``: kernel-size-1 convolutions take their weight gradient as one
   matrix product (``layers.pointwise_conv``) instead of XLA:CPU's transposed-operand
   convolution over time.

The variants are timed in interleaved rounds (wall and process CPU seconds), medians reported.

Usage::

    python bench/cpu_step.py                  # -> bench/RESULTS.md section "cpu_step"
    python bench/cpu_step.py --rounds 2 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import train_step as bts  # noqa: E402
from _results import load_average, machine_description, update_section  # noqa: E402

from hamjax.models import ecapa_tdnn, layers  # noqa: E402

VARIANTS = (
    ("HEAD (base commit)", (False, False, False)),
    ("+ mask skip", (True, False, False)),
    ("+ attention split", (True, True, False)),
    ("+ pointwise dW matmul", (True, True, True)),
)


# How the changes were found and what did not help (profiled 2026-12-02 on this machine with
# jax.profiler traces joined to XLA's optimised HLO dumps; B=32, float32).
NOTES = (
    "Profile (jax.profiler trace of one step joined to XLA's optimised HLO): at the base "
    "commit, `transpose_copy` fusions were 23 % of the traced op time (507 of 2178 ms; "
    "Eigen's convolutions run outside the trace): XLA:CPU computes every convolution's weight "
    "gradient as a convolution over the 202 frames and first copies activations and output "
    "gradients into `[C, T, B]` layouts. After the changes: 200 ms, the rest belonging to the "
    "21 small k=3 res2 convolutions. The masked path cost `select` fusions on every BatchNorm, "
    "ReLU and residual (fixed-length training crops have no padding at all), and the "
    "attention's 4608-channel concatenation a [64, 202, 4608] copy plus two thirds of that "
    "conv's products. Remaining non-matmul time: BatchNorm (~0.4 s), residual adds and the "
    "res2 split/concat (~0.2 s), ReLU (~0.1 s).",
    "",
    "Tried and dropped: (1) every 1-D conv as one matmul (im2col for k=3/5; no transposes at "
    "all): 5-6 % slower than the convolutions over 8 interleaved rounds (XLA's dot path for the "
    "forward / input gradient of the k=3 convs loses to Eigen's convolution); (2) XLA flags "
    "(`--xla_cpu_use_onednn`, `--xla_cpu_use_xnnpack=false`, YNN dot fusions): XLA's float32 "
    "GEMM rate stays at ~210 GFLOP/s; (3) bfloat16 on this CPU: XLA's bf16 GEMM is no faster "
    "than its float32 one (150-170 GFLOP/s; PyTorch's oneDNN reaches 775-1040 with AMX).",
    "",
    "Limit: the step is matrix-product bound (1025 GFLOP per step, 3x the 345-GFLOP forward) "
    "and already near XLA:CPU's float32 GEMM speed; PyTorch's eager step runs at about half "
    "of its own (faster, MKL/oneDNN) GEMM speed. 2x PyTorch (about 4.0 s/step) would need "
    "~256 GFLOP/s sustained, more than XLA:CPU's GEMM alone reaches on these 2 cores, so the "
    "2x goal is out of reach without a faster CPU GEMM in XLA; >= 10 passes/s is met.",
)


def load_base(commit: str, where: Path):
    """The base commit's layers / ecapa_tdnn modules, imported under private names."""
    mods = {}
    for name in ("layers", "ecapa_tdnn"):
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:hamjax/models/{name}.py"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        text = text.replace("from hamjax.models import layers", "import _base_layers as layers")
        path = where / f"_base_{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"_base_{name}", path)
        mods[name] = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mods[name]
        spec.loader.exec_module(mods[name])
    return mods["layers"], mods["ecapa_tdnn"]


@contextlib.contextmanager
def patched(base_layers, base_ecapa, mask_skip: bool, att_split: bool, pointwise: bool):
    """The working tree's encoder with the changes not yet "bought" taken from the base."""
    saved = (layers.known_all_valid, ecapa_tdnn.AttentiveStatsPool.__call__, layers.conv)
    if not mask_skip:
        layers.known_all_valid = lambda mask: False
    if not att_split:
        ecapa_tdnn.AttentiveStatsPool.__call__ = base_ecapa.AttentiveStatsPool.__call__
    if not pointwise:
        layers.conv = base_layers.conv
    try:
        yield
    finally:
        layers.known_all_valid, ecapa_tdnn.AttentiveStatsPool.__call__, layers.conv = saved


def gemm_rates(repeats: int = 7) -> dict[str, float]:
    """GFLOP/s of one ``[6464, 1024] x [1024, 1024]`` float32 product (the C=1024 block's 1x1
    conv at 64 x 202 frames): XLA (jitted ``jnp.dot``), numpy's BLAS and PyTorch, interleaved."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((6464, 1024)).astype(np.float32)
    b = rng.standard_normal((1024, 1024)).astype(np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    fns = {"XLA (jax)": lambda: dot(ja, jb).block_until_ready(), "numpy BLAS": lambda: a @ b}
    try:
        import torch

        torch.set_num_threads(2)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        fns["PyTorch"] = lambda: torch.mm(ta, tb)
    except ImportError:
        pass
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 2 * 6464 * 1024 * 1024 / statistics.median(v) / 1e9 for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="6c54187")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    command = "python bench/cpu_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    tmp = tempfile.TemporaryDirectory()
    base_layers, base_ecapa = load_base(args.base, Path(tmp.name))
    runs, flops = {}, []
    for i, (name, flags) in enumerate(VARIANTS):
        with patched(base_layers, base_ecapa, *flags):  # the encoder is traced in build_jax
            config = bts.load_config("ham_softmax", "vox2")
            last = flops if i == len(VARIANTS) - 1 else None
            runs[name], _, _ = bts.build_jax(config, args.batch, bts.VOX2_SPEAKERS, 0, last)
        print(f"built {name}", flush=True)
    rates = gemm_rates()
    load_before = load_average()
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for r in range(args.rounds):
        for name, run in runs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        print(f"round {r}: " + ", ".join(f"{k} {wall[k][-1]:.2f} s" for k in runs), flush=True)
    passes = 2 * args.batch
    lines = [
        "## cpu_step: what each change to the CPU training step bought",
        "",
        f"Machine: {machine_description()}; **shared** (1-min load average {load_before} "
        f"before, {load_average()} after, on 2 cores). The `ham_softmax:vox2` step of "
        f"`bench/train_step.py` (C=1024, {args.batch} clean + {args.batch} augmented 2-s crops "
        f"= {passes} passes, HAM-Softmax over 5994 speakers, Adam), cumulatively from commit "
        f"{args.base}; {args.rounds} interleaved rounds, medians. CPU s = process CPU time "
        "(2 threads).",
        "",
        "| variant | s/step | passes/s | CPU s/step | vs previous row |",
        "|---|---|---|---|---|",
    ]
    prev = None
    for name in runs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        delta = "" if prev is None else f"{100 * (w / prev - 1):+.1f} %"
        lines.append(f"| {name} | {w:.2f} | {passes / w:.1f} | {c:.2f} | {delta} |")
        prev = w
    first, last = (statistics.median(wall[k]) for k in (VARIANTS[0][0], VARIANTS[-1][0]))
    achieved = flops[0] / last / 1e9
    lines += [
        "",
        f"Together: {first / last:.2f}x faster. The final step is {flops[0] / 1e9:.0f} GFLOP "
        f"(XLA cost analysis) in {last:.2f} s = **{achieved:.0f} GFLOP/s**; one large float32 "
        "matrix product (`[6464, 1024] x [1024, 1024]`, the blocks' 1x1 conv) runs at "
        + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
        + f" GFLOP/s here, so the step runs at {100 * achieved / rates['XLA (jax)']:.0f} % of "
        "XLA:CPU's own matrix-product speed.",
        "",
        *NOTES,
        "",
        f"Command: `{command.strip()}`",
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.write:
        update_section("cpu_step", md)


if __name__ == "__main__":
    main()
