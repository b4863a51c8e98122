"""Throughput of hamjax's full training step (hamjax.train_step) on this CPU, beside PyTorch.

The step is exactly what ``train.py`` runs: ``hamjax.train_step.make_train_step`` jitted by
``jit_train_step`` on a 1-device mesh (state donated): a global batch of B clean 2-s crops plus
their B augmented copies -> log-mel on device -> SpecAugment -> ECAPA-TDNN -> HAM-Softmax head
(5994 VoxCeleb2 speakers, c = 3, m = 0.2, s = 30) -> loss mean(clean) + mean(aug) -> backward ->
torch-style Adam. Configs: the ``ham_softmax:vox2`` recipe (C = 1024) at B = 32 and the
``quickstart`` recipe at its own batch.

PyTorch beside it (``bench/torch_ecapa.py``, the transcription of the authors' ECAPA-TDNN, eager,
``torch.set_num_threads``): the same 2B-utterance forward/backward with the authors' HAM head as
they write it (clip onto the radius (1-1e-5)/sqrt(c), unit-curvature distance to every centre
through the [B, C, D] difference tensor), cross-entropy, ``torch.optim.Adam(weight_decay=2e-5)``.
No SpecAugment on the PyTorch side (the transcription leaves it out; it is cheap).

Method: each variant is built and warmed up (JAX compiles), then the variants are timed in
interleaved rounds so that load changes on the shared machine hit all alike; figures are median
step times as utterances/s (clean crops) and utterance passes/s (clean + augmented, the unit of
the authors' ~760 passes/s implied by 48-minute VoxCeleb2 epochs on their GPU).

Usage::

    python bench/train_step.py                 # -> bench/RESULTS.md section "train_step"
    python bench/train_step.py --rounds 2 --no-torch --no-write
    python bench/train_step.py --quickstart-e2e runs/qs_bench   # + time the full quickstart
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import jax  # noqa: E402
from _results import load_average, machine_description, update_section  # noqa: E402

from hamjax import model_builder, train_state, train_step  # noqa: E402
from hamjax.data import pipeline  # noqa: E402

VOX2_SPEAKERS = 5994


def load_config(name: str, variant: str | None = None):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


def make_batch(config, batch: int, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = pipeline.crop_samples(config.data.crop_frames)
    out = {
        "waveform": (0.1 * rng.standard_normal((batch, s))).astype(np.float32),
        "label": rng.integers(0, num_classes, batch).astype(np.int32),
    }
    if config.data.augment.enabled:
        out["waveform_aug"] = (0.1 * rng.standard_normal((batch, s))).astype(np.float32)
    return out


def build_jax(config, batch: int, num_classes: int, seed: int, flops: list | None = None):
    """The hamjax.train_step step on one device; returns (run_one_step, views, compile seconds).

    With ``flops`` (a list), XLA's cost-analysis flop count of the compiled step is appended.
    """
    config = load_config("base") if config is None else config
    config.train.global_batch_size = batch
    config.head.num_classes = num_classes
    config.train.steps_per_epoch = 1000
    mesh = train_step.make_mesh(jax.devices()[:1])
    encoder, head = model_builder.build_modules(config, num_classes)
    tx, sched = train_state.make_optimizer(config, 1000)
    state, shardings = train_state.create_train_state(config, encoder, head, tx, mesh, num_classes)
    host = make_batch(config, batch, num_classes, seed)
    step = train_step.jit_train_step(
        train_step.make_train_step(config, encoder, head, sched, num_classes, mesh),
        mesh,
        shardings,
        tuple(host),
    )
    dev = train_step.global_batch(host, mesh)
    if flops is not None:
        cost = step.lower(state, dev).compile().cost_analysis()
        flops.append(float((cost[0] if isinstance(cost, list | tuple) else cost)["flops"]))
    box = {"state": state}

    def run() -> float:
        box["state"], metrics = step(box["state"], dev)
        return float(metrics["loss"])  # blocks until the step is done

    t0 = time.perf_counter()
    run()
    return run, 2 if "waveform_aug" in host else 1, time.perf_counter() - t0


def matmul_gflops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """This machine's achievable dense rate: jitted ``[n, n] @ [n, n]`` in GFLOP/s, per dtype.

    The reference for the step's efficiency (a measured roofline: vendor peaks assume turbo
    clocks and every FMA port busy, which no library reaches on a shared VM).
    """

    out = {}
    for dtype in ("float32", "bfloat16"):
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        f = jax.jit(lambda x: x @ x)
        f(a).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        out[dtype] = 2 * n**3 / best / 1e9
    return out


def build_torch(
    channels: int, batch: int, num_classes: int, seed: int, c: float = 3.0, bf16: bool = False
):
    """The authors' step in PyTorch: ECAPA + their HAM head ([B, C, D] differences) + Adam.

    ``bf16``: the encoder under ``torch.autocast("cpu", torch.bfloat16)`` (PyTorch's mixed
    precision on CPU), the head in float32 as in hamjax.
    """
    import torch
    import torch_ecapa

    torch.manual_seed(seed)
    model = torch_ecapa.ECAPATDNN(channels).train()
    centres = torch.nn.Parameter(torch.randn(num_classes, 192) * 1e-3)
    opt = torch.optim.Adam([*model.parameters(), centres], lr=1e-3, weight_decay=2e-5)
    rng = np.random.default_rng(seed)
    wav = torch.from_numpy((0.1 * rng.standard_normal((2 * batch, 32_240))).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, num_classes, 2 * batch))
    r = (1 - 1e-5) / c**0.5
    scale, margin = 30.0, 0.2

    def clip(x):
        n = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
        return torch.where(n > r, x / n * r, x)

    def run() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(wav)
        x, w = clip(emb.float()), clip(centres)
        diff = ((x[:, None, :] - w[None, :, :]) ** 2).sum(-1)  # the authors' [B, C, D] tensor
        xn = (1 - (x**2).sum(-1, keepdim=True)).clamp_min(1e-5)
        wn = (1 - (w**2).sum(-1))[None, :].clamp_min(1e-5)
        d = torch.acosh(1 + 2 * diff / (xn * wn).clamp_min(1e-5))
        d = d + margin * torch.nn.functional.one_hot(labels, num_classes)
        loss = torch.nn.functional.cross_entropy(-scale * d, labels) * 2  # mean(clean)+mean(aug)
        loss.backward()
        opt.step()
        return float(loss)

    run()  # warm-up: allocator, oneDNN primitive caches
    return run


def time_round_robin(variants: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    times = {k: [] for k in variants}
    for i in range(rounds):
        for name, fn in variants.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            print(f"  round {i}: {name} {times[name][-1]:.2f} s/step", flush=True)
    return times


def quickstart_e2e(workdir: Path) -> dict[str, float]:
    """Wall time of the README's quickstart: train.py (generation + preparation + training),
    then eval.py, in fresh processes, with the corpus and dataset under ``workdir``."""
    workdir = Path(workdir).absolute()
    data = [f"--config.data.root={workdir}/corpus", f"--config.data.data_dir={workdir}/tfds"]
    out = {}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/quickstart.py"),
         "--workdir", str(workdir / "run"), *data],
        check=True,
    )  # fmt: skip
    out["train_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "eval.py"), "--workdir", str(workdir / "run")],
                   check=True)  # fmt: skip
    out["eval_s"] = time.perf_counter() - t1
    out["total_s"] = time.perf_counter() - t0
    reports = sorted((workdir / "run" / "eval").glob("*/report.json"))
    for path in reports:
        rep = json.loads(path.read_text())
        out[f"{path.parent.name}"] = rep
    return out


def quickstart_line(name: str, report: dict) -> str:
    """One markdown bullet: the model's and the log-mel baseline's EER on a trial list."""
    model = float(report["eer_percent"])
    base = float(report["baseline"]["eer_percent"])
    return (
        f"- `{name}`: EER {model:.2f} % vs log-mel-statistics baseline {base:.2f} % "
        f"({base / model:.1f}x lower)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="clean crops per vox2 step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1, help="steps per variant per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", dest="torch", action="store_false")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--quickstart-e2e", type=Path, default=None)
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=True,
        help="also time the vox2 step in bfloat16 compute (hamjax model.dtype, torch autocast)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    command = "python bench/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:])

    variants, compile_s, views, batches, flops = {}, {}, {}, {}, {}
    for dtype in ("float32", "bfloat16") if args.bf16 else ("float32",):
        name = "hamjax vox2 (C=1024)" + ("" if dtype == "float32" else " bf16")
        vox2 = load_config("ham_softmax", "vox2")
        vox2.model.dtype = dtype
        counted: list[float] = []
        run, views[name], compile_s[name] = build_jax(vox2, args.batch, VOX2_SPEAKERS, 0, counted)
        variants[name], batches[name], flops[name] = run, args.batch, counted[0]
    qs = load_config("quickstart")
    qs_b = qs.train.global_batch_size
    run, views["hamjax quickstart"], compile_s["hamjax quickstart"] = build_jax(qs, qs_b, 90, 0)
    variants["hamjax quickstart"], batches["hamjax quickstart"] = run, qs_b
    if args.torch:
        import torch

        torch.set_num_threads(args.threads)
        variants["PyTorch vox2 (C=1024)"] = build_torch(1024, args.batch, VOX2_SPEAKERS, 0)
        views["PyTorch vox2 (C=1024)"], batches["PyTorch vox2 (C=1024)"] = 2, args.batch
        if args.bf16:
            name = "PyTorch vox2 (C=1024) bf16 autocast"
            variants[name] = build_torch(1024, args.batch, VOX2_SPEAKERS, 0, bf16=True)
            views[name], batches[name] = 2, args.batch
    peak = matmul_gflops()
    load_before = load_average()
    times = time_round_robin(variants, args.rounds, args.steps)
    load_after = load_average()

    lines = [
        "## train_step: the full training step (hamjax.train_step), CPU",
        "",
        f"Machine: {machine_description()}. The machine is **shared** with other engineers' "
        f"jobs (1-min load average {load_before} before, {load_after} after, on 2 cores), so "
        "absolute figures are noisy; variants were interleaved round by round, medians "
        "reported.",
        "",
        "Step: B clean crops + B augmented copies (2 s, 32240 samples) -> log-mel on device -> "
        "SpecAugment -> ECAPA-TDNN -> HAM-Softmax (c 3, m 0.2, s 30) -> mean(clean) + mean(aug) "
        "-> backward -> Adam with coupled decay. vox2: the `ham_softmax:vox2` recipe (C=1024, "
        "5994 speakers); quickstart: `configs/quickstart.py` (its own crop, model and batch, "
        "90 speakers). PyTorch: `bench/torch_ecapa.py` + the authors' HAM head ([B, C, D] "
        "differences), eager.",
        "",
        "| variant | clean batch | passes/step | median s/step | utterances/s | passes/s | "
        "compile s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        b, v = batches[name], views[name]
        comp = f"{compile_s[name]:.0f}" if name in compile_s else "-"
        lines.append(
            f"| {name} | {b} | {b * v} | {med:.2f} | {b / med:.1f} | {b * v / med:.1f} | {comp} |"
        )

    def ratio(slow: str, fast: str) -> tuple[float, list[float]]:
        # Per-round ratios (same load for both), then their median.
        per = [
            statistics.median(times[slow][i : i + args.steps])
            / statistics.median(times[fast][i : i + args.steps])
            for i in range(0, len(times[fast]), args.steps)
        ]
        return statistics.median(per), per

    jax_name, torch_name = "hamjax vox2 (C=1024)", "PyTorch vox2 (C=1024)"
    pairs = [(torch_name, jax_name, "float32")]
    if args.bf16:
        pairs.append((f"{torch_name} bf16 autocast", f"{jax_name} bf16", "bfloat16"))
    for slow, fast, dtype in pairs:
        if slow in times and fast in times:
            r, per = ratio(slow, fast)
            lines += [
                "",
                f"hamjax / PyTorch, vox2 step in {dtype}: **{r:.2f}x** (median of the per-round "
                f"ratios {', '.join(f'{x:.2f}' for x in per)}).",
            ]
    for name, count in flops.items():
        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        rate = count / statistics.median(times[name]) / 1e9
        lines += [
            "",
            f"{name}: XLA's cost analysis counts {count / 1e12:.2f} TFLOP per step, so the step "
            f"runs at {rate:.0f} GFLOP/s, {100 * rate / peak[dtype]:.0f} % of this machine's "
            f"jitted {dtype} 2048x2048 matmul rate ({peak[dtype]:.0f} GFLOP/s, measured here).",
        ]
    if args.quickstart_e2e is not None:
        e2e = quickstart_e2e(args.quickstart_e2e)
        lines += [
            "",
            f"Full quickstart (README commands, fresh processes): train.py (corpus generation + "
            f"TFDS preparation + training + averaging) {e2e['train_s']:.0f} s, eval.py "
            f"{e2e['eval_s']:.0f} s, total {e2e['total_s'] / 60:.1f} min.",
        ]
        lines += [quickstart_line(name, rep) for name, rep in e2e.items() if isinstance(rep, dict)]
    lines += ["", f"Command: `{command.strip()}`"]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.write:
        update_section("train_step", md)


if __name__ == "__main__":
    main()
