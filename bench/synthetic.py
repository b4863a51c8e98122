"""Benchmark: synthetic-corpus generation time and augmentation cost per crop.

Usage::

    python bench/synthetic.py                    # QUICKSTART corpus with 2 workers + augmenter
    python bench/synthetic.py --workers 1 2 --augment-rounds 5

Generates the QUICKSTART corpus (4,800 utterances of 2-6 s) into a temporary folder for each
worker count, reporting wall time, the CPU seconds of all processes (the wall time an idle
machine with that many cores would need is about CPU / workers) and the baseline verifiers'
EERs stored in the metadata. Then times :class:`hamjax.data.augment.Augmenter` with its built-in
sources on 2-s training crops (32,240 samples), one call per kind per round, kinds interleaved,
and reports medians. Writes the ``synthetic`` section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_description, update_section  # noqa: E402

from hamjax.data import augment, synthetic  # noqa: E402


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def bench_generation(workers: list[int]) -> tuple[list[str], dict]:
    rows, meta = [], {}
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            load_before = _load()
            cpu0, t0 = _cpu_seconds(), time.perf_counter()
            meta = synthetic.generate_corpus(Path(tmp) / "q", num_workers=w, **synthetic.QUICKSTART)
            wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        s = meta["summary"]
        rows.append(
            f"| {w} | {s['num_utterances']} | {s['hours']:.2f} | {wall:.1f} | {cpu:.1f} | "
            f"{cpu / w:.1f} | {1e3 * cpu / s['num_utterances']:.1f} | {load_before}/{_load()} |"
        )
        print(rows[-1], flush=True)
    return rows, meta


def bench_augment(rounds: int, calls: int) -> list[str]:
    aug = augment.Augmenter(seed=0)
    crop = np.random.default_rng(0).standard_normal(32240).astype(np.float32) * 0.1
    times: dict[str, list[float]] = {k: [] for k in augment.KINDS}
    single = {k: augment.Augmenter({"kinds": (k,)}, seed=0) for k in augment.KINDS}
    for k in augment.KINDS:  # warm up the per-process pools (babble voices, music clips)
        single[k].augment(crop, np.random.default_rng(0))
    for r in range(rounds):
        for k in augment.KINDS:  # interleaved, so load changes hit every kind alike
            t0 = time.perf_counter()
            for i in range(calls):
                single[k].augment(crop, np.random.default_rng((r, i)))
            times[k].append((time.perf_counter() - t0) / calls)
    mixed = []
    for r in range(rounds):
        t0 = time.perf_counter()
        for i in range(calls):
            aug.augment(crop, np.random.default_rng((r, i, 1)))
        mixed.append((time.perf_counter() - t0) / calls)
    rows = [f"| {k} | {1e3 * np.median(v):.2f} |" for k, v in times.items()]
    rows.append(f"| uniform mix (authors') | {1e3 * np.median(mixed):.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--augment-rounds", type=int, default=5)
    parser.add_argument("--augment-calls", type=int, default=20)
    args = parser.parse_args(argv)
    gen_rows, meta = bench_generation(args.workers)
    aug_rows = bench_augment(args.augment_rounds, args.augment_calls)
    s = meta["summary"]
    eers = " / ".join(
        f"{name} {100 * s['pitch_only_eer'][name]:.1f} %" for name in sorted(s["pitch_only_eer"])
    )
    ceps = " / ".join(
        f"{name} {100 * s['cepstrum_eer'][name]:.1f} %" for name in sorted(s["cepstrum_eer"])
    )
    cmd = "python bench/synthetic.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = f"""## synthetic: built-in corpus generation and augmentation cost (CPU)

Machine: {machine_description()}. The machine was **shared** with other engineers' test runs
(load average in the table, sampled before/after each run, on 2 cores): wall times are
inflated accordingly; "CPU s / workers" is the wall time an idle machine with that many free
cores would need.

QUICKSTART corpus ({s["num_families"]} families x {s["num_bases"] // s["num_families"]} base
voices x {s["num_speakers"] // s["num_bases"]} speakers, {s["num_utterances"]} utterances of
{s["duration_s"]["min"]:.0f}-{s["duration_s"]["max"]:.0f} s; {s["num_train_speakers"]} training
speakers, {s["num_heldout_speakers"]} held out), generated into a temporary folder:

| workers | utts | hours | wall s | CPU s (all procs) | CPU s / workers | CPU ms / utt | load |
|---|---|---|---|---|---|---|---|
{chr(10).join(gen_rows)}

Baseline verifiers on the trial lists (from `metadata.json`): pitch-only (median YIN F0,
score -|log F0_e - log F0_t|) EER {eers}; long-term-cepstrum cosine EER {ceps}.

Augmenter with built-in sources, per 2-s crop (32,240 samples), median over
{args.augment_rounds} interleaved rounds of {args.augment_calls} calls:

| kind | ms / crop |
|---|---|
{chr(10).join(aug_rows)}

Command: `{cmd.strip()}`
"""
    update_section("synthetic", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
