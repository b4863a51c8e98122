"""Generates hamjax's built-in synthetic hierarchical speaker corpus.

Usage::

    python scripts/make_synthetic_corpus.py --root data/synthetic              # QUICKSTART size
    python scripts/make_synthetic_corpus.py --root /tmp/tiny --size tiny --num_workers 2
    python scripts/make_synthetic_corpus.py --root data/syn --set num_families=8 --set seed=3

An existing complete corpus with the same arguments is reused; different arguments are an error
unless ``--overwrite``. Prints the summary (sizes, pitch-only and cepstral baseline EERs) and the
wall-clock time.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time

from hamjax.data import synthetic

SIZES = {"quickstart": synthetic.QUICKSTART, "tiny": synthetic.TINY}


def _parse_set(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"--set {item!r}: expected NAME=VALUE")
    name, value = item.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return name.strip(), parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--root", required=True, help="output folder")
    parser.add_argument("--size", choices=sorted(SIZES), default="quickstart", help="preset size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=None, help="default: usable CPUs")
    parser.add_argument("--overwrite", action="store_true", help="replace a different corpus")
    parser.add_argument(
        "--set",
        type=_parse_set,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a generate_corpus argument (repeatable), e.g. --set max_duration=4.0",
    )
    args = parser.parse_args(argv)
    kwargs = dict(SIZES[args.size])
    kwargs["seed"] = args.seed
    kwargs.update(dict(args.set))
    start = time.perf_counter()
    try:
        meta = synthetic.generate_corpus(
            args.root, num_workers=args.num_workers, overwrite=args.overwrite, **kwargs
        )
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(json.dumps(meta["summary"], indent=2, sort_keys=True))
    print(f"{meta['summary']['num_utterances']} utterances in {args.root} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
