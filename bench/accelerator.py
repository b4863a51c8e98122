"""Accelerator throughput of hamjax's training step, unattended, in at most 8 minutes.

What it measures, on every local device of the host (a 1-D ``data`` mesh, as ``train.py``):

* the full training step (``hamjax.train_step``: log-mel on device -> SpecAugment -> encoder ->
  HAM-Softmax over 5994 speakers -> mean(clean) + mean(aug) -> backward -> Adam), for
  ECAPA-TDNN C=512 and C=1024 and ResNet34, at global batch 128 and 256 (clean 2-s crops; each
  step runs 2x that many utterance passes, clean + augmented), in float32 and bfloat16 compute
  (``model.dtype``): utterance passes/s, compile seconds, model FLOP utilisation (XLA's
  ``compiled.cost_analysis()`` flops per step / step time / the device's peak, table
  :data:`PEAK_TFLOPS`), device memory (XLA's ``memory_analysis()`` of the compiled step, and
  ``device.memory_stats()`` peak where the backend has it), and the host->device copy of one
  batch;
* embedding extraction (``hamjax.models.make_embed_fn``, the ``Verifier``'s embed function,
  jitted, eval mode) of 8-s utterances with sample masks, float32 and bfloat16;
* the input pipeline (``hamjax.data.make_train_iterator`` with the authors' augmentation, the
  machinery of ``bench/input.py``) in examples/s for several worker counts, beside the examples/s
  the fastest measured step consumes: is the step input-bound?

Every configuration is time-boxed (a few timed steps or ``--step-seconds``) and the whole run is
budgeted (``--budget``, default 450 s): configurations are run in priority order (the authors'
recipe, C=1024 bfloat16 at batch 256, first) and those the budget no longer covers are listed as
skipped. Results are written after every configuration, so a run killed by a time limit still
leaves its figures: to ``bench/RESULTS.md`` (section ``accelerator``, via
``bench/_results.py``), and, when ``--out`` (default ``$OUT``) is set, to ``OUT/accelerator.json``
and ``OUT/accelerator.md``.

Run on a lent GPU machine (the device tool copies this working tree; files come back only from
``$OUT``; the image has jax, flax, optax and orbax)::

    # here, first: wheels the image lacks go into an ignored folder that the tool carries
    python3 -m pip download --no-deps -d .whl ml_collections   # + any other missing wheel
    # on the device (one call; timeout_s=600 leaves room beyond the 450-s budget):
    #   run(command="python3 -m pip install --no-deps --no-index .whl/*.whl -q; "
    #               "python3 bench/accelerator.py", carry=[".whl"], timeout_s=600)
    # back here: record the returned figures in bench/RESULTS.md
    python3 bench/accelerator.py --render <files_at>/accelerator.json

What the step needs besides the image's jax/flax/optax/orbax: numpy and scipy (jax's own
dependencies) and ml_collections (pure Python: carry its wheel, as above). librosa is optional
here: without it (and its numba/llvmlite) a numpy copy of its HTK mel filterbank
(:func:`htk_mel`, checked equal to librosa's in the test) stands in. The input-pipeline part
needs grain, array_record and tensorflow_datasets and is skipped, with a note, without them.
``python3 bench/accelerator.py --check`` lists what is missing, in a second. A TPU VM works the
same way.

CPU smoke test (CI, ``tests/test_bench_accelerator.py``): ``--quick`` runs tiny models for a
few steps in under a minute; its figures mean nothing, it only keeps this script working::

    python3 bench/accelerator.py --quick --no-write
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

VOX2_SPEAKERS = 5994
SECTION = "accelerator"

#: Dense peak TFLOP/s per device: (bfloat16, float32 as JAX runs it by default). On NVIDIA
#: A100/H100/H200, JAX's default matmul precision runs float32 dots and convolutions as TF32
#: on the tensor cores, so the float32 column is the TF32 peak; on TPUs a default-precision
#: float32 matmul is one bfloat16 MXU pass, so both columns are the bfloat16 peak. Vendor data
#: sheets (dense, no sparsity); matched against ``device_kind`` in order, first match wins.
PEAK_TFLOPS: tuple[tuple[str, str, float, float], ...] = (
    ("H200", "NVIDIA H200 (SXM)", 989.0, 494.0),
    ("H100 PCIe", "NVIDIA H100 PCIe", 756.0, 378.0),
    ("H100", "NVIDIA H100 SXM", 989.0, 494.0),
    ("A100", "NVIDIA A100", 312.0, 156.0),
    ("TPU v4", "TPU v4", 275.0, 275.0),
    ("TPU v5 lite", "TPU v5e", 197.0, 197.0),
    ("TPU v5e", "TPU v5e", 197.0, 197.0),
    ("TPU v5p", "TPU v5p", 459.0, 459.0),
    ("TPU v5", "TPU v5p", 459.0, 459.0),
)

REQUIRED = ("numpy", "scipy", "ml_collections", "jax", "flax", "optax", "orbax")
INPUT_DEPS = ("grain", "tensorflow_datasets", "array_record")


def peak_tflops(device_kind: str) -> tuple[str, float, float] | None:
    """``(name, bf16, fp32)`` peak TFLOP/s of one device of this kind, or None (unknown)."""
    for pattern, name, bf16, fp32 in PEAK_TFLOPS:
        if pattern.lower() in device_kind.lower():
            return name, bf16, fp32
    return None


def missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def htk_mel(*, sr, n_fft, n_mels=128, fmin=0.0, fmax=None, htk=True, norm=None, dtype=None):
    """``librosa.filters.mel(..., htk=True, norm=None)`` in numpy, step for step.

    hamjax's log-mel needs nothing else of librosa; on a bare accelerator image (where librosa,
    numba and llvmlite are not installed) :func:`_librosa_or_shim` puts this in its place.
    ``tests/test_bench_accelerator.py`` checks it equals librosa's filters.
    """
    import numpy as np

    if not htk or norm is not None:
        raise ValueError("htk_mel: only htk=True, norm=None (hamjax's setting) is provided")
    fmax = sr / 2.0 if fmax is None else fmax
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mels = np.linspace(2595.0 * np.log10(1.0 + fmin / 700.0),
                       2595.0 * np.log10(1.0 + fmax / 700.0), n_mels + 2)  # fmt: skip
    mel_f = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=dtype or np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    return weights


def _librosa_or_shim() -> bool:
    """Imports librosa's filters, or installs :func:`htk_mel` as ``librosa.filters.mel``.

    Returns True when the shim was installed.
    """
    import types

    try:
        import librosa.filters  # noqa: F401 - pulls numba and friends

        return False
    except ImportError:
        shim, filters = types.ModuleType("librosa"), types.ModuleType("librosa.filters")
        filters.mel = htk_mel
        shim.filters = filters
        sys.modules.update({"librosa": shim, "librosa.filters": filters})
        return True


class Budget:
    """Wall-clock budget of the whole run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


# --------------------------------------------------------------------------- configurations


@dataclasses.dataclass(frozen=True)
class StepCase:
    """One training-step configuration."""

    encoder: str  # "ecapa512" | "ecapa1024" | "resnet34" | "ecapa_tiny" | "resnet_tiny"
    batch: int  # global clean crops per step (passes = 2 x batch)
    dtype: str  # "float32" | "bfloat16"

    @property
    def label(self) -> str:
        names = {"ecapa512": "ECAPA-TDNN C=512", "ecapa1024": "ECAPA-TDNN C=1024",
                 "resnet34": "ResNet34", "ecapa_tiny": "ECAPA-TDNN C=32 (quick)",
                 "resnet_tiny": "ResNet34 m=4 (quick)"}  # fmt: skip
        return names[self.encoder]


def full_cases() -> list[StepCase]:
    """The 12 configurations, most important first (the authors' recipe is C=1024, B=256)."""
    order = [
        ("ecapa1024", 256, "bfloat16"), ("ecapa1024", 256, "float32"),
        ("ecapa512", 256, "bfloat16"), ("resnet34", 256, "bfloat16"),
        ("ecapa1024", 128, "bfloat16"), ("ecapa512", 256, "float32"),
        ("resnet34", 256, "float32"), ("ecapa512", 128, "bfloat16"),
        ("resnet34", 128, "bfloat16"), ("ecapa1024", 128, "float32"),
        ("ecapa512", 128, "float32"), ("resnet34", 128, "float32"),
    ]  # fmt: skip
    return [StepCase(*o) for o in order]


def quick_cases() -> list[StepCase]:
    return [StepCase("ecapa_tiny", 8, "float32"), StepCase("ecapa_tiny", 8, "bfloat16"),
            StepCase("resnet_tiny", 8, "float32")]  # fmt: skip


def make_config(case: StepCase, quick: bool):
    """The ``ham_softmax:vox2`` recipe with the case's encoder, batch and dtype."""
    from hamjax import config_lib

    config = config_lib.paper_recipe("ham_softmax", "vox2")
    config.model.dtype = case.dtype
    config.train.global_batch_size = case.batch
    config.train.steps_per_epoch = 1000
    if case.encoder.startswith("resnet"):
        config.model.name = "resnet34"
        config.model.embed_dim = 256
    else:
        config.model.name = "ecapa_tdnn"
        config.model.channels = {"ecapa512": 512, "ecapa1024": 1024}.get(case.encoder, 32)
    if quick:
        config.data.crop_frames = 50
        config.model.m_channels = 4
        config.model.embed_dim = 32
        if case.encoder.startswith("ecapa"):
            config.model.update(mfa_channels=48, attention_channels=16, se_bottleneck=16)
    return config


# --------------------------------------------------------------------------- measurements


def _host_batch(config, batch: int, num_classes: int):
    import numpy as np

    from hamjax.constants import crop_samples

    rng = np.random.default_rng(0)
    s = crop_samples(config.data.crop_frames)
    return {
        "waveform": (0.1 * rng.standard_normal((batch, s))).astype(np.float32),
        "label": rng.integers(0, num_classes, batch).astype(np.int32),
        "waveform_aug": (0.1 * rng.standard_normal((batch, s))).astype(np.float32),
    }


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    value = (cost or {}).get("flops")
    return float(value) if value else None


def _memory(compiled) -> float | None:
    """XLA's per-device estimate of the step's memory: arguments + outputs - aliased + temps."""
    try:
        m = compiled.memory_analysis()
        total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                 + m.temp_size_in_bytes)  # fmt: skip
    except Exception:  # noqa: BLE001
        return None
    return float(total)


def _device_peak_bytes() -> float | None:
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001
        return None
    value = stats.get("peak_bytes_in_use")
    return float(value) if value else None


def measure_step(case: StepCase, quick: bool, step_seconds: float, max_steps: int) -> dict:
    """Builds, compiles and times one training step configuration."""
    import jax

    from hamjax import model_builder, train_state, train_step

    num_classes = 20 if quick else VOX2_SPEAKERS
    config = make_config(case, quick)
    n_dev = jax.device_count()
    if case.batch % n_dev:
        return {"error": f"batch {case.batch} does not divide over {n_dev} devices"}
    mesh = train_step.make_mesh()
    encoder, head = model_builder.build_modules(config, num_classes)
    tx, sched = train_state.make_optimizer(config, 1000)
    state, shardings = train_state.create_train_state(config, encoder, head, tx, mesh, num_classes)
    host = _host_batch(config, case.batch, num_classes)
    step = train_step.jit_train_step(
        train_step.make_train_step(config, encoder, head, sched, num_classes, mesh),
        mesh, shardings, tuple(host),
    )  # fmt: skip
    t0 = time.perf_counter()
    batch = train_step.global_batch(host, mesh)
    jax.block_until_ready(batch)
    h2d = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    out = {"compile_s": compile_s, "h2d_ms": 1e3 * h2d, "flops": _flops(compiled),
           "xla_bytes": _memory(compiled), "devices": n_dev}  # fmt: skip
    for _ in range(2):  # warm-up: first execution, allocator
        state, metrics = compiled(state, batch)
    float(metrics["loss"])
    times: list[float] = []
    t_end = time.perf_counter() + step_seconds
    while len(times) < max_steps and (len(times) < 2 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        loss = float(metrics["loss"])  # blocks until the step is done
        times.append(time.perf_counter() - t0)
    out.update(step_s=statistics.median(times), steps=len(times), loss=loss,
               peak_bytes=_device_peak_bytes())  # fmt: skip
    out["passes_per_s"] = 2 * case.batch / out["step_s"]
    out["examples_per_s"] = case.batch / out["step_s"]
    del state, batch, compiled
    gc.collect()  # free this configuration's device buffers before the next one
    return out


def measure_extraction(encoder_name: str, dtype: str, quick: bool, seconds: float) -> dict:
    """Utterances/s of the jitted eval embed function on 8-s utterances (4 s in quick mode)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hamjax import model_builder, models

    case = StepCase(encoder_name, 8, dtype)
    config = make_config(case, quick)
    encoder, head = model_builder.build_modules(config, 20)
    variables = model_builder.encoder_variables(
        model_builder.init_variables(config, encoder, head, jax.random.key(0))
    )
    batch, samples = (4, 4 * 16000) if quick else (128, 8 * 16000)
    rng = np.random.default_rng(0)
    wav = jnp.asarray((0.1 * rng.standard_normal((batch, samples))).astype(np.float32))
    mask = jnp.ones((batch, samples), bool)  # eval passes sample masks (length buckets)
    embed = jax.jit(models.make_embed_fn(encoder, config.features))
    t0 = time.perf_counter()
    jax.block_until_ready(embed(variables, wav, mask))
    compile_s = time.perf_counter() - t0
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < 2 or (time.perf_counter() < t_end and len(times) < 50):
        t0 = time.perf_counter()
        jax.block_until_ready(embed(variables, wav, mask))
        times.append(time.perf_counter() - t0)
    return {"utt_per_s": batch / statistics.median(times), "batch": batch,
            "seconds_audio": samples / 16000, "compile_s": compile_s}  # fmt: skip


def measure_input(quick: bool, budget: Budget, workers: list[int]) -> dict:
    """Examples/s of the grain pipeline (authors' augmentation) over a small synthetic corpus."""
    absent = missing(INPUT_DEPS)
    if absent:
        return {"skipped": f"not installed: {', '.join(absent)}"}
    spec = importlib.util.spec_from_file_location("bench_input", ROOT / "bench" / "input.py")
    input_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(input_bench)  # bench/input.py's build_config / measure
    from hamjax.data import synthetic, tfds_builder

    root = Path(tempfile.mkdtemp(prefix="hamjax_acc_input_"))
    kwargs = dict(synthetic.TINY)
    if not quick:
        kwargs.update(speakers_per_base=6, utterances_per_session=4, min_duration=2.0,
                      max_duration=4.0)  # fmt: skip
    t0 = time.perf_counter()
    synthetic.generate_corpus(root / "corpus", **kwargs)
    info = tfds_builder.prepare_dataset(
        "voxceleb", root / "corpus", list_file=root / "corpus" / "train_list.txt",
        data_dir=root / "tfds", name="acc", num_threads=min(8, os.cpu_count() or 1),
    )  # fmt: skip
    prep_s = time.perf_counter() - t0
    batch = 16 if quick else 128
    config = input_bench.build_config(root / "tfds", "acc", batch, 0)
    config.data.config = info.config
    rates: dict[int, dict[str, float]] = {}
    for w in workers:
        if budget.left() < (10 if quick else 40):
            rates[w] = {"skipped": 1.0}
            continue
        startup, rate = input_bench.measure(config, w, 1 if quick else 4)
        rates[w] = {"startup_s": startup, "examples_per_s": rate}
    return {"prep_s": prep_s, "utterances": info.num_examples, "batch": batch, "workers": rates}


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def render(res: dict) -> str:
    """The markdown section from a results dict (also used by ``--render``)."""
    kind = res["device_kind"]
    peak = peak_tflops(kind)
    lines = [
        f"## accelerator: training-step throughput on {kind}"
        + (" (quick CPU smoke test: figures mean nothing)" if res.get("quick") else ""),
        "",
        f"Device: {res['devices']} x {kind} ({res['backend']}), jax {res['jax']}; host "
        f"{res['host']}. Peak used for MFU: "
        + (f"{peak[0]}, {peak[1]:.0f} TFLOP/s bf16 / {peak[2]:.0f} TFLOP/s fp32 (as JAX runs "
           "float32 by default) per device" if peak else "unknown (no entry in PEAK_TFLOPS)")
        + f". Run: {res['elapsed_s']:.0f} s of a {res['budget_s']:.0f}-s budget.",
        "",
        "Step: the `ham_softmax:vox2` recipe (`hamjax.train_step`, jitted over all devices): "
        "B clean 2-s crops + their B augmented copies -> log-mel -> SpecAugment -> encoder -> "
        "HAM-Softmax over 5994 speakers -> backward -> Adam"
        + (" (quick: 0.5-s crops, 20 speakers, tiny encoders)" if res.get("quick") else "")
        + ". passes/s = 2B / step time; MFU = "
        "XLA cost-analysis flops per step / step time / (peak x devices). Memory: XLA's "
        "per-device estimate of the compiled step; device peak = `memory_stats()` "
        "peak_bytes_in_use so far in the process (monotone).",
        "",
        "| encoder | B | dtype | passes/s | step ms | compile s | GFLOP/step | MFU | "
        "XLA mem GiB | device peak GiB | H2D ms/batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in res["steps"]:
        c, r = row["case"], row["result"]
        head = f"| {StepCase(**c).label} | {c['batch']} | {c['dtype']} |"
        if "passes_per_s" not in r:
            lines.append(head + f" {r.get('error') or r.get('skipped')} | | | | | | | |")
            continue
        mfu = None
        if peak and r.get("flops"):
            p = peak[1] if c["dtype"] == "bfloat16" else peak[2]
            mfu = r["flops"] / r["step_s"] / (p * 1e12 * r["devices"])
        gib = 2.0**30
        lines.append(
            head + f" {r['passes_per_s']:.1f} | {1e3 * r['step_s']:.1f} | {r['compile_s']:.1f} | "
            f"{_fmt(r['flops'] and r['flops'] / 1e9, '.4g')} | "
            f"{_fmt(mfu and 100 * mfu, '.1f', ' %')} | "
            f"{_fmt(r['xla_bytes'] and r['xla_bytes'] / gib, '.2f')} | "
            f"{_fmt(r['peak_bytes'] and r['peak_bytes'] / gib, '.2f')} | {r['h2d_ms']:.1f} |"
        )
    best = max((row for row in res["steps"] if "passes_per_s" in row["result"]),
               key=lambda row: row["result"]["passes_per_s"], default=None)  # fmt: skip
    lines += ["", "Embedding extraction (`models.make_embed_fn`, jitted, eval mode, sample masks):",
              "", "| encoder | dtype | batch | utterance s | utterances/s | compile s |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for row in res["extraction"]:
        c, r = row["case"], row["result"]
        if "utt_per_s" not in r:
            lines.append(f"| {c['encoder']} | {c['dtype']} | {r.get('skipped') or r.get('error')}"
                         " | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {StepCase(**c).label} | {c['dtype']} | {r['batch']} | {r['seconds_audio']:.0f} "
            f"| {r['utt_per_s']:.0f} | {r['compile_s']:.1f} |"
        )
    inp = res.get("input", {})
    lines += ["", "Input pipeline (`make_train_iterator`, authors' augmentation, 2-s crops):"]
    if "workers" not in inp:
        lines.append(f"skipped ({inp.get('skipped') or inp.get('error', 'not run')}).")
    else:
        lines += [
            f"synthetic corpus of {inp['utterances']} utterances prepared in "
            f"{inp['prep_s']:.0f} s; per-host batch {inp['batch']}.",
            "",
            "| workers | start-up s | examples/s | fastest step consumes examples/s "
            "| input-bound? |",
            "|---|---|---|---|---|",
        ]  # fmt: skip
        need = best["result"]["examples_per_s"] if best else None
        for w, r in inp["workers"].items():
            if "examples_per_s" not in r:
                lines.append(f"| {w} | skipped (budget) | | | |")
                continue
            verdict = "-" if need is None else ("yes" if r["examples_per_s"] < need else "no")
            lines.append(f"| {w} | {r['startup_s']:.1f} | {r['examples_per_s']:.0f} | "
                         f"{_fmt(need, '.0f')} | {verdict} |")  # fmt: skip
        if best:
            c = best["case"]
            lines.append(f"\n(fastest step: {StepCase(**c).label}, B={c['batch']}, {c['dtype']}.)")
    if res.get("notes"):
        lines += ["", *[f"- {n}" for n in res["notes"]]]
    lines += ["", f"Command: `{res['command']}`"]
    return "\n".join(lines) + "\n"


def _save(res: dict, out_dir: Path | None, write: bool) -> str:
    md = render(res)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "accelerator.json").write_text(json.dumps(res, indent=1))
        (out_dir / "accelerator.md").write_text(md)
    if write:
        from _results import update_section

        update_section(SECTION, md)
    return md


def check() -> int:
    gone = missing(REQUIRED)
    print("missing (required):", ", ".join(gone) or "none")
    print("librosa:", "installed" if not missing(("librosa",)) else "absent (htk_mel stands in)")
    print("missing (input pipeline only):", ", ".join(missing(INPUT_DEPS)) or "none")
    return 1 if gone else 0


# --------------------------------------------------------------------------- main


def _run_steps(cases, res, args, budget: Budget, reserve: float, save) -> None:
    for case in cases:
        row = {"case": dataclasses.asdict(case)}
        res["steps"].append(row)
        if budget.left() - reserve < args.min_case_seconds:
            row["result"] = {"skipped": "skipped (time budget used)"}
            continue
        try:
            row["result"] = measure_step(case, args.quick, args.step_seconds, args.max_steps)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: report and go on
            row["result"] = {"error": f"failed: {type(err).__name__}: {str(err)[:160]}"}
        print(f"{case}: {row['result']}", flush=True)
        save()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny CPU smoke test (< 60 s)")
    parser.add_argument("--budget", type=float, default=None, help="seconds (450; quick 45)")
    parser.add_argument("--step-seconds", type=float, default=None, help="timing per config")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--min-case-seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT") or None)
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--render", type=Path, default=None, help="write RESULTS.md from JSON")
    parser.add_argument("--check", action="store_true", help="list missing modules and exit")
    args = parser.parse_args(argv)
    if args.check:
        raise SystemExit(check())
    if args.render is not None:
        res = json.loads(args.render.read_text())
        print(_save(res, None, args.write))
        return
    if missing(REQUIRED):
        raise SystemExit(check())
    shimmed = _librosa_or_shim()
    q = args.quick
    args.budget = args.budget or (45.0 if q else 450.0)
    args.step_seconds = args.step_seconds or (0.5 if q else 4.0)
    args.min_case_seconds = args.min_case_seconds if args.min_case_seconds is not None else (
        0.0 if q else 45.0)  # fmt: skip
    if q:
        args.max_steps = min(args.max_steps, 2)
    budget = Budget(args.budget)

    import jax
    from _results import machine_description

    from hamjax import compile_cache

    if not q:  # a second call on a still-warm machine reuses the compiled steps
        compile_cache.enable(str(ROOT / "tmp" / "jax_cache"))
    dev = jax.local_devices()[0]
    res: dict[str, Any] = {
        "device_kind": dev.device_kind, "backend": jax.default_backend(),
        "devices": jax.device_count(), "jax": jax.__version__, "quick": q,
        "host": machine_description().split(";")[0], "budget_s": args.budget,
        "command": "python3 bench/accelerator.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:]),
        "steps": [], "extraction": [], "input": {}, "notes": [], "elapsed_s": 0.0,
    }  # fmt: skip
    if shimmed:
        res["notes"].append("librosa is not installed: its mel filterbank came from htk_mel.")
    print(f"device: {jax.device_count()} x {dev.device_kind}", flush=True)

    def save() -> None:
        res["elapsed_s"] = args.budget - budget.left()
        _save(res, args.out, args.write and not q)

    # Time kept back for extraction and the input pipeline while steps run.
    reserve = 10.0 if q else 90.0
    _run_steps(quick_cases() if q else full_cases(), res, args, budget, reserve, save)
    extraction = ([("ecapa_tiny", "float32")] if q
                  else [("ecapa1024", "bfloat16"), ("ecapa1024", "float32")])  # fmt: skip
    for name, dtype in extraction:
        row = {"case": {"encoder": name, "batch": 0, "dtype": dtype}}
        res["extraction"].append(row)
        if budget.left() < (5 if q else 45):
            row["result"] = {"skipped": "skipped (time budget used)"}
            continue
        try:
            row["result"] = measure_extraction(name, dtype, q, 0.5 if q else 3.0)
        except Exception as err:  # noqa: BLE001
            row["result"] = {"error": f"failed: {type(err).__name__}: {str(err)[:160]}"}
        save()
    workers = args.workers or ([0] if q else [0, 2, min(8, os.cpu_count() or 1)])
    if budget.left() < (20 if q else 60):
        res["input"] = {"skipped": "time budget used"}
    else:
        try:
            res["input"] = measure_input(q, budget, sorted(set(workers)))
        except Exception as err:  # noqa: BLE001
            res["input"] = {"error": f"failed: {type(err).__name__}: {str(err)[:160]}"}
    skipped = sum("passes_per_s" not in row["result"] for row in res["steps"])
    if skipped:
        res["notes"].append(f"{skipped} step configuration(s) not measured (budget or error).")
    save()
    print(render(res))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
