"""Throughput of ``hamjax embed`` beside eval.py's extraction, on 8-s utterances (CPU).

Both run the quickstart ECAPA-TDNN (random weights, saved as a real work directory) through
:class:`hamjax.inference.Verifier`: eval.py's extraction is ``Verifier.embed_protocol`` on one
device (the ``full`` protocol), ``hamjax embed`` is the command's resumable chunked writer on
every local device, files read from disk in both. Each variant runs once to compile, then
``--rounds`` timed rounds; the table gives medians.

    python bench/embed.py [--utterances 48] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _results import load_average, machine_description, update_section  # noqa: E402

from hamjax import checkpointing, config_lib, embedding_store, io_utils, model_builder  # noqa: E402
from hamjax.data import audio  # noqa: E402
from hamjax.inference import Verifier  # noqa: E402

SECONDS = 8.0


def _workdir(root: Path) -> Path:
    import importlib.util

    spec = Path(config_lib.__file__).resolve().parents[1] / "configs" / "quickstart.py"
    module_spec = importlib.util.spec_from_file_location("quickstart", spec)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config()
    config.head.num_classes = 10
    config.train.steps_per_epoch = 1
    encoder, head = model_builder.build_modules(config)
    variables = model_builder.init_variables(config, encoder, head, jax.random.PRNGKey(0))
    workdir = root / "run"
    workdir.mkdir()
    checkpointing.save_final(workdir, variables, {"step": 0})
    io_utils.write_json(workdir / checkpointing.CONFIG_FILE, config.to_dict())
    return workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hamjax_bench_embed_"))
    workdir = _workdir(root)
    rng = np.random.default_rng(0)
    files = []
    for i in range(args.utterances):
        path = root / "wav" / f"{i:04d}.wav"
        audio.write_wav(path, (0.1 * rng.standard_normal(int(SECONDS * 16_000))).astype("f4"))
        files.append(path)
    single = Verifier.from_workdir(workdir, protocol="full")
    every = Verifier.from_workdir(workdir, protocol="full", devices=jax.local_devices())
    names = [str(p) for p in files]

    def eval_extraction() -> None:
        single.embed_protocol(names, lambda n: single.load(n))

    def hamjax_embed(r: list[int] = [0]) -> None:  # noqa: B006 -- a counter across calls
        r[0] += 1
        store = embedding_store.ChunkedStore(root / f"out{r[0]}.npz")
        store.run(every, [(n, Path(n)) for n in names], chunk=512)

    rows = []
    variants = (
        ("eval.py extraction (Verifier, 1 device)", eval_extraction),
        ("hamjax embed (chunked store, every local device)", hamjax_embed),
    )
    for label, fn in variants:
        fn()  # compile
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        s = statistics.median(times)
        rows.append((label, args.utterances / s, s / (args.utterances * SECONDS)))
    lines = [
        f"Machine: {machine_description()}; load average {load_average()} (shared machine: noisy).",
        "",
        f"Quickstart ECAPA-TDNN (random weights, a real work directory), {args.utterances} "
        f"files of {SECONDS:g} s read from disk; median of {args.rounds} rounds after one "
        f"compiling round; {jax.local_device_count()} local device(s).",
        "",
        "| variant | utterances/s | real-time factor |",
        "|---|---|---|",
        *[f"| {label} | {ups:.1f} | {rtf:.4f} |" for label, ups, rtf in rows],
        "",
        f"Command: `python bench/embed.py --utterances {args.utterances} --rounds {args.rounds}`",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section(
            "embed", "## embed: `hamjax embed` beside eval.py's extraction (CPU)\n\n" + text
        )


if __name__ == "__main__":
    main()
