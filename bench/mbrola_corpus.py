"""Benchmark: generation time of the MBROLA real-voice corpus (issue #8: ~3 min on 2 cores).

Usage::

    python bench/mbrola_corpus.py                 # default size (792 speakers, 11,088 utts)
    python bench/mbrola_corpus.py --workers 1 2

Generates the default corpus (:data:`hamjax.data.mbrola.DEFAULT`) into a temporary folder for
each worker count and reports wall time, CPU seconds of all processes (espeak-ng and mbrola
included, as children), utterances per second and the non-learned verifiers' EERs stored in
the metadata. Writes the ``mbrola_corpus`` section of ``bench/RESULTS.md``. Needs espeak-ng,
mbrola and the voices (``scripts/make_mbrola_corpus.py --install``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import cpu_seconds, load_average, machine_description, update_section  # noqa: E402

from hamjax.data import mbrola  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    args = parser.parse_args(argv)
    missing = mbrola.missing_tools()
    if missing:
        print(f"error: missing {missing}; run scripts/make_mbrola_corpus.py --install")
        return 2
    rows, meta = [], {}
    for w in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            load_before = load_average()
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            meta = mbrola.generate_corpus(Path(tmp) / "c", num_workers=w)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        s = meta["summary"]
        rows.append(
            f"| {w} | {s['num_speakers']} | {s['num_utterances']} | {s['hours']:.2f} | "
            f"{wall:.1f} | {cpu:.1f} | {s['num_utterances'] / wall:.0f} | "
            f"{load_before}/{load_average()} |"
        )
        print(rows[-1], flush=True)
    s = meta["summary"]
    lists = sorted(s["pitch_only_eer"])
    md = "\n".join(
        [
            "## mbrola_corpus",
            "",
            f"`python bench/mbrola_corpus.py --workers {' '.join(map(str, args.workers))}`; "
            f"{machine_description()}. Default size ({len(meta['persons'])} persons, "
            f"{s['num_families']} families; target in issue #8: ~800 speakers / 10,000 "
            "utterances in about 3 minutes on 2 cores). CPU counts espeak-ng and mbrola; "
            "load = 1-min load average before/after.",
            "",
            "| workers | speakers | utterances | hours | wall s | CPU s | utt/s | load |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Non-learned verifiers (EER %): "
            + ", ".join(
                f"{t}: pitch only {100 * s['pitch_only_eer'][t]:.1f}, long-term cepstrum "
                f"{100 * s['cepstrum_eer'][t]:.1f}"
                for t in lists
            ),
        ]
    )
    update_section("mbrola_corpus", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
