"""Speed of the exported embedding function beside ``Verifier.embed_batch``, on this CPU.

The model is the quickstart recipe's ECAPA-TDNN (``configs/quickstart.py``: C=64, embeddings
of 128; ``--channels 1024 --embed-dim 192`` for the paper's size), freshly initialised (speed
does not depend on the weights). Input: ``--utterances`` random 16 kHz float32 waveforms of
``--seconds`` each. Each variant embeds all of them:

* ``Verifier.embed_batch``: the Python API (length buckets, ``batch_samples`` per call);
* StableHLO: ``jax.export.deserialize(...).call(waveforms, mask)`` on ``[batch, S]``;
* SavedModel: TensorFlow's ``serving_default`` signature on ``[batch, S]``;
* ONNX: ``onnxruntime.InferenceSession.run`` on the static ``[batch, S]`` model.

Method: every variant is exported and loaded, warmed up (compilations), then timed in
interleaved rounds (all variants in each round) so that load changes on the shared machine hit
all alike; the figure is the median round. Utterances/s = N / t; real-time factor = t / (N x
seconds), i.e. below 1 is faster than real time. Threads: each runtime's default (all cores).

Usage::

    python bench/export.py                      # -> bench/RESULTS.md, section "export"
    python bench/export.py --rounds 2 --no-write
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
from _results import load_average, machine_description, update_section  # noqa: E402

from hamjax import embeddings, export, model_builder  # noqa: E402
from hamjax.constants import SAMPLE_RATE  # noqa: E402
from hamjax.inference import Verifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build_verifier(channels: int, embed_dim: int) -> Verifier:
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "configs" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.channels = channels
    config.model.embed_dim = embed_dim
    config.head.num_classes = 160
    encoder, head = model_builder.build_modules(config)
    variables = model_builder.init_variables(config, encoder, head, jax.random.PRNGKey(0))
    return Verifier(config, variables)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def make_runners(verifier: Verifier, out: Path, waves: np.ndarray, batch: int) -> dict:
    """name -> (run_all(), export seconds, artifact MiB); each run_all embeds every row."""
    n, samples = waves.shape
    mask = np.ones((batch, samples), bool)
    chunks = [waves[i : i + batch] for i in range(0, n, batch)]
    runners = {"Verifier.embed_batch": (lambda: verifier.embed_batch(list(waves)), 0.0, 0.0)}

    t = time.perf_counter()
    path = export.export_stablehlo(verifier, out / "stablehlo", platforms=("cpu",))
    t_export = time.perf_counter() - t
    exported = jax.export.deserialize(path.read_bytes())
    runners["StableHLO (jax)"] = (
        lambda: [np.asarray(exported.call(c, mask)) for c in chunks],
        t_export,
        path.stat().st_size / 2**20,
    )

    import tensorflow as tf

    t = time.perf_counter()
    path = export.export_savedmodel(verifier, out / "savedmodel", platforms=("cpu",))
    t_export = time.perf_counter() - t
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    tf_mask = tf.constant(mask)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    runners["SavedModel (TF)"] = (
        lambda: [
            serve(waveforms=tf.constant(c), mask=tf_mask)["embeddings"].numpy() for c in chunks
        ],
        t_export,
        size,
    )

    if importlib.util.find_spec("jax2onnx") is not None:
        import onnxruntime as ort

        t = time.perf_counter()
        path = export.export_onnx(verifier, out / "onnx", batch_size=batch, num_samples=samples)
        t_export = time.perf_counter() - t
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runners["ONNX (onnxruntime)"] = (
            lambda: [session.run(None, {"waveforms": c, "mask": mask})[0] for c in chunks],
            t_export,
            path.stat().st_size / 2**20,
        )
    return runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=8, help="rows per exported call")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.utterances % args.batch:
        parser.error("--utterances must be a multiple of --batch")

    verifier = build_verifier(args.channels, args.embed_dim)
    samples = int(args.seconds * SAMPLE_RATE)
    rng = np.random.default_rng(0)
    waves = rng.uniform(-0.5, 0.5, (args.utterances, samples)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        runners = make_runners(verifier, Path(tmp), waves, args.batch)
        reference = verifier.embed_batch(list(waves))
        for name, (run, _, _) in runners.items():  # warm-up (compilations) + a check
            out = np.concatenate(run()) if name != "Verifier.embed_batch" else run()
            err = float(np.abs(out - reference).max())
            print(f"{name}: warm, max |diff| from Verifier {err:.1e}", flush=True)
        times = {name: [] for name in runners}
        for r in range(args.rounds):
            for name, (run, _, _) in runners.items():
                times[name].append(timed(run))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    audio = args.utterances * args.seconds
    bucket = embeddings.bucket_length(samples)
    fill = max(1, verifier.batch_samples // bucket)
    rows = []
    for name, (_, t_export, size) in runners.items():
        t = statistics.median(times[name])
        rows.append(
            f"| {name} | {args.utterances / t:.2f} | {t / audio:.3f} | {t:.2f} | "
            + (f"{t_export:.1f} | {size:.1f} |" if t_export else "- | - |")
        )
        print(rows[-1])
    markdown = "\n".join(
        [
            "## export: the exported embedding function beside Verifier.embed_batch (CPU)",
            "",
            f"Machine: {machine_description()}; load average {load_average()} at the end "
            "(the machine is shared, so absolute figures are noisy; variants were interleaved "
            "round by round and the table gives medians).",
            "",
            f"Model: quickstart ECAPA-TDNN (C={args.channels}, E={args.embed_dim}), random "
            f"weights. Input: {args.utterances} random {args.seconds:g}-s utterances at 16 kHz; "
            f"exported functions called on [{args.batch}, {samples}] batches (ONNX: static "
            "shapes); `Verifier.embed_batch` on the list, in its length buckets: "
            f"{fill} rows per call of {bucket} samples, the last call filled up with copies "
            "(so it embeds more rows than there are utterances). Real-time factor = processing "
            "time / audio time. Each runtime's default threads. ONNX is slower and larger "
            "because jax2onnx materialises broadcast constants at the static batch shape "
            "(e.g. [batch, frames, channels] operands of `Where`), which dominate its run time "
            "beside `DFT`.",
            "",
            "| variant | utterances/s | real-time factor | s per round | export s | MiB |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Command: `python bench/export.py --rounds {args.rounds}`",
        ]
    )
    if not args.no_write:
        update_section("export", markdown)
        print("wrote bench/RESULTS.md section 'export'")


if __name__ == "__main__":
    main()
