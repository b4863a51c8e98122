"""Benchmark: synthetic-corpus generation time and augmentation cost per crop.

Usage::

    python bench/synthetic.py                    # QUICKSTART corpus with 2 workers + augmenter
    python bench/synthetic.py --workers 1 2 --augment-rounds 5
    python bench/synthetic.py --probe data/synthetic/quickstart   # learnability probe only

Generates the QUICKSTART corpus (4,800 utterances of 2-6 s) into a temporary folder for each
worker count, reporting wall time, the CPU seconds of all processes (the wall time an idle
machine with that many cores would need is about CPU / workers) and the baseline verifiers'
EERs stored in the metadata. Then times :class:`hamjax.data.augment.Augmenter` with its built-in
sources on 2-s training crops (32,240 samples), one call per kind per round, kinds interleaved,
and reports medians. Writes the ``synthetic`` section of ``bench/RESULTS.md``.

``--probe ROOT`` instead checks that an existing corpus is learnable from spectral cues and
keeps its hierarchy: a logistic regression (scikit-learn) on per-utterance statistics of
mean-normalised 40-band log-mel spectra, trained on the first two sessions of every training
speaker and tested on the third, classifies speakers and families (section
``synthetic_probe``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import cpu_seconds, load_average, machine_description, update_section  # noqa: E402

from hamjax.data import augment, synthetic  # noqa: E402


def bench_generation(workers: list[int]) -> tuple[list[str], dict]:
    rows, meta = [], {}
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            load_before = load_average()
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            meta = synthetic.generate_corpus(Path(tmp) / "q", num_workers=w, **synthetic.QUICKSTART)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        s = meta["summary"]
        rows.append(
            f"| {w} | {s['num_utterances']} | {s['hours']:.2f} | {wall:.1f} | {cpu:.1f} | "
            f"{cpu / w:.1f} | {1e3 * cpu / s['num_utterances']:.1f} | "
            f"{load_before}/{load_average()} |"
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


def probe(root: Path) -> str:
    """Speaker / family identification on held-out sessions of the training speakers."""
    import librosa
    import soundfile as sf
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    meta = json.loads((root / "metadata.json").read_text())
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20, fmax=7600)
    window = np.hamming(400)
    feats, speakers, sessions = [], [], []
    for line in (root / "train_list.txt").read_text().splitlines():
        spk, rel = line.split()
        x, _ = sf.read(str(root / "wav" / rel))
        frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160] * window
        logmel = np.log(np.abs(np.fft.rfft(frames, 512)) ** 2 @ mel.T + 1e-6)  # [T, 40]
        logmel -= logmel.mean(0)  # per-utterance mean normalisation removes a fixed channel
        feats.append(
            np.concatenate(
                [
                    logmel.std(0),
                    np.abs(np.diff(logmel, axis=0)).mean(0),
                    np.percentile(logmel, 90, 0),
                ]
            )
        )
        speakers.append(spk)
        sessions.append(meta["speakers"][spk]["sessions"].index(rel.split("/")[1]))
    x, sessions = np.array(feats), np.array(sessions)
    train, test = sessions < 2, sessions == 2
    if not test.any():
        raise ValueError(f"{root}: the probe needs >= 3 sessions per speaker")
    scaler = StandardScaler().fit(x[train])
    rows = []
    for level, labels in (
        ("speaker", np.array(speakers)),
        ("family", np.array([meta["speakers"][s]["family"] for s in speakers])),
        ("base voice", np.array([meta["speakers"][s]["base"] for s in speakers])),
    ):
        clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x[train]), labels[train])
        acc = float(np.mean(clf.predict(scaler.transform(x[test])) == labels[test]))
        n = len(set(labels))
        rows.append(f"| {level} | {n} | {100 * acc:.1f} % | {100 / n:.1f} % |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probe", type=Path, default=None, help="only run the probe on ROOT")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--augment-rounds", type=int, default=5)
    parser.add_argument("--augment-calls", type=int, default=20)
    args = parser.parse_args(argv)
    cmd = "python bench/synthetic.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.probe is not None:
        rows = probe(args.probe)
        meta = json.loads((args.probe / "metadata.json").read_text())
        md = f"""## synthetic_probe: is the synthetic corpus learnable from spectral cues?

Corpus `{args.probe}` (generator v{meta["version"]}, args `{json.dumps(meta["args"])}`).
Logistic regression on 120 per-utterance statistics of mean-normalised 40-band log-mel spectra
(std, mean absolute delta, 90th percentile per band), trained on sessions 1-2 of the
{len(meta["splits"]["train"])} training speakers, tested on their unseen session 3 (a new
channel and register shift). Pitch-only EER on the trial lists, for contrast:
{", ".join(f"{k} {100 * v:.1f} %" for k, v in sorted(meta["summary"]["pitch_only_eer"].items()))}.

| label | classes | accuracy on unseen session | chance |
|---|---|---|---|
{rows}

Command: `{cmd.strip()}`
"""
        update_section("synthetic_probe", md)
        print(md)
        return 0
    gen_rows, meta = bench_generation(args.workers)
    aug_rows = bench_augment(args.augment_rounds, args.augment_calls)
    s = meta["summary"]
    eers = " / ".join(
        f"{name} {100 * s['pitch_only_eer'][name]:.1f} %" for name in sorted(s["pitch_only_eer"])
    )
    ceps = " / ".join(
        f"{name} {100 * s['cepstrum_eer'][name]:.1f} %" for name in sorted(s["cepstrum_eer"])
    )
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
