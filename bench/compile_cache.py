"""Cold vs warm start with JAX's persistent compilation cache (hamjax.compile_cache).

Each measurement is a fresh Python process (``--child``), as a resumed run or a repeated
evaluation is, with the cache ``off``, ``cold`` (an empty cache directory: compile and write)
or ``warm`` (the directory the cold process filled: load instead of compiling):

* ``step``: time to the first training step of the quickstart recipe's model
  (``configs/quickstart.py``: ECAPA-TDNN C=64, HAM-Softmax over 90 speakers, batch 64 of 1-s
  crops): building the modules, creating the train state (its jitted initialiser compiles
  too), jitting ``hamjax.train_step`` and running one step, the ``train.py`` path without the
  data. ``--vox2`` adds the ``ham_softmax:vox2`` step (C=1024, 5994 speakers, batch 32).
* ``extract``: the evaluation's extraction: ``jax.jit(models.make_embed_fn(...))`` of the
  quickstart encoder through ``hamjax.embeddings.extract_embeddings`` over utterances of 2-6 s,
  one compilation per length bucket (the quickstart corpus's range), as eval.py and
  ``Verifier`` run it.

Figures are wall seconds inside the child (imports excluded; they are the same in every mode)
and the process's whole wall time, median over ``--repeats`` (each repeat uses a new cold
directory). The trainer / eval.py / ``hamjax`` CLI turn the cache on with
``hamjax.compile_cache.enable(config.train.compilation_cache_dir)``.

Usage::

    python bench/compile_cache.py                 # -> bench/RESULTS.md section "compile_cache"
    python bench/compile_cache.py --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _child_step(recipe: str) -> dict[str, float]:
    import jax
    import train_step as bts

    if recipe == "vox2":
        config, batch, classes = bts.load_config("ham_softmax", "vox2"), 32, bts.VOX2_SPEAKERS
    else:
        config = bts.load_config("quickstart")
        batch, classes = config.train.global_batch_size, 90
    t0 = time.perf_counter()
    run, _, first = bts.build_jax(config, batch, classes, 0)  # modules, state, jit, one step
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    run()
    next_s = time.perf_counter() - t1
    return {"to_first_step_s": total, "first_step_s": first, "next_step_s": next_s,
            "backend": jax.default_backend()}  # fmt: skip


def _child_extract() -> dict[str, float]:
    import jax
    import numpy as np
    import train_step as bts

    from hamjax import embeddings, model_builder, models

    config = bts.load_config("quickstart")
    encoder, head = model_builder.build_modules(config, 90)
    variables = model_builder.init_variables(config, encoder, head, jax.random.key(0))
    variables = model_builder.encoder_variables(variables)
    rng = np.random.default_rng(0)
    lengths = np.linspace(2 * 16000, 6 * 16000, 24).astype(int)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    buckets = len({embeddings.bucket_length(int(n)) for n in lengths})
    t0 = time.perf_counter()
    embed = jax.jit(models.make_embed_fn(encoder, config.features))
    embeddings.extract_embeddings(embed, variables, waves)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    embeddings.extract_embeddings(embed, variables, waves)
    return {"first_extraction_s": first, "next_extraction_s": time.perf_counter() - t1,
            "buckets": buckets, "utterances": len(waves)}  # fmt: skip


def child(kind: str, cache: str) -> None:
    """Runs one measurement in this (fresh) process and prints it as JSON."""
    from hamjax import compile_cache

    compile_cache.enable(cache)  # "" = off
    out = _child_step(kind.split(":")[1]) if kind.startswith("step") else _child_extract()
    files = list(Path(cache).glob("*")) if cache else []
    out["cache_entries"] = len(files)
    out["cache_mib"] = sum(f.stat().st_size for f in files) / 2**20
    print("RESULT " + json.dumps(out), flush=True)


def measure(kind: str, cache: str) -> dict[str, float]:
    """One child process; adds its whole wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--cache", cache],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} ({cache or 'off'}) failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT ") :])
    out["process_s"] = wall
    print(f"  {kind} cache={'off' if not cache else Path(cache).name}: {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vox2", action="store_true", help="also the C=1024 vox2 step")
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.cache)
        return
    from _results import load_average, machine_description, update_section

    command = "python bench/compile_cache.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    kinds = ["step:quickstart", "extract"] + (["step:vox2"] if args.vox2 else [])
    results: dict[tuple[str, str], list[dict]] = {}
    loads = [load_average()]
    for _ in range(args.repeats):
        for kind in kinds:  # off / cold / warm back to back, so load changes hit all three
            with tempfile.TemporaryDirectory(prefix="hamjax_cc_") as tmp:
                cache = os.path.join(tmp, "jax")
                for mode, where in (("off", ""), ("cold", cache), ("warm", cache)):
                    results.setdefault((kind, mode), []).append(measure(kind, where))
    loads.append(load_average())

    def med(kind: str, mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(kind, mode)])

    names = {"step:quickstart": "quickstart train step (C=64)",
             "step:vox2": "vox2 train step (C=1024)"}  # fmt: skip
    lines = [
        "## compile_cache: cold vs warm start with the persistent compilation cache",
        "",
        f"Machine: {machine_description()}; **shared** with other engineers' jobs (1-min load "
        f"average {loads[0]} before, {loads[1]} after, on 2 cores), so seconds are inflated; "
        f"the three modes run back to back, medians of {args.repeats}. Each figure is a fresh "
        "process (`hamjax.compile_cache.enable(dir)` first; imports excluded). off = no cache; "
        "cold = empty cache directory (compile + write); warm = a second process on the "
        "directory the cold one filled.",
        "",
        "| what | off s | cold s | warm s | warm speed-up | steady-state s | cache entries "
        "(MiB) | process wall off / warm s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        key, steady = (
            ("to_first_step_s", "next_step_s")
            if kind.startswith("step")
            else ("first_extraction_s", "next_extraction_s")
        )
        off, cold, warm = (med(kind, m, key) for m in ("off", "cold", "warm"))
        what = names.get(kind)
        if what is None:
            r = results[(kind, "off")][0]
            what = f"eval extraction, {r['utterances']} utts 2-6 s, {r['buckets']} buckets"
        entries = results[(kind, "cold")][0]
        lines.append(
            f"| {what} | {off:.1f} | {cold:.1f} | {warm:.1f} | {off / warm:.1f}x | "
            f"{med(kind, 'warm', steady):.2f} | {entries['cache_entries']} "
            f"({entries['cache_mib']:.1f}) | {med(kind, 'off', 'process_s'):.0f} / "
            f"{med(kind, 'warm', 'process_s'):.0f} |"
        )
    lines += [
        "",
        "Step figures: modules + train state + jit + first step (the compile dominates); "
        "steady-state = the next step. Extraction: the first pass over all buckets (one compile "
        "each) vs the steady-state second pass.",
        "",
        f"Command: `{command.strip()}`",
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.write:
        update_section("compile_cache", md)


if __name__ == "__main__":
    main()
