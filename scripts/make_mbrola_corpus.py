"""Builds the real-voice hierarchical speaker corpus from espeak-ng + MBROLA voices.

See :mod:`hamjax.data.mbrola` for what the corpus is (72 recorded persons in 11 language
families -> derived speakers -> utterances) and its trial lists on held-out persons and
held-out families.

Usage::

    python scripts/make_mbrola_corpus.py --install                # once, as root (apt, below)
    python scripts/make_mbrola_corpus.py --root data/mbrola       # ~800 speakers, ~10k utts
    python scripts/make_mbrola_corpus.py --root /tmp/t --size tiny --set speakers_per_person=3

``--install`` performs the Debian steps (root needed; prints them otherwise):

1. enable the ``contrib`` and ``non-free`` components next to ``main`` -- in
   ``/etc/apt/sources.list.d/debian.sources`` (deb822 ``Components:`` lines) or in the one-line
   ``/etc/apt/sources.list`` -- because the MBROLA program lives in contrib and its voices in
   non-free (the original file is kept as ``<file>.hamjax-bak``);
2. ``apt-get update``;
3. ``apt-get install espeak-ng mbrola mbrola-xx1 ...`` (every ``mbrola-<lang><n>`` voice package).

Then train on it, e.g. ``python train.py --config configs/mbrola.py --workdir runs/mbrola``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZES = ("default", "tiny")  # hamjax.data.mbrola.DEFAULT / TINY
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
_VOICE_PACKAGE = re.compile(r"^mbrola-[a-z]{2}\d$")


def _parse_set(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"--set {item!r}: expected NAME=VALUE")
    name, value = item.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return name.strip(), parsed


def enable_components(text: str, deb822: bool) -> str:
    """``text`` of an apt sources file with ``contrib`` and ``non-free`` added beside ``main``."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        if deb822 and body.startswith("Components:"):
            comps = body.split()[1:]
        elif not deb822 and body.startswith("deb") and " main" in body:
            comps = body.split()[3:]
        else:
            out.append(line)
            continue
        if "main" in comps:
            body += "".join(f" {c}" for c in ("contrib", "non-free") if c not in comps)
        out.append(body + ("\n" if line.endswith("\n") else ""))
    return "".join(out)


def install(dry_run: bool = False, voices: list[str] | None = None) -> int:
    """Enables contrib/non-free, updates apt and installs espeak-ng, mbrola and the voices.

    ``voices``: MBROLA databases to install (e.g. ``["de1", "fr3"]``); None = every one.
    """
    source = next((p for p in SOURCES if p.is_file()), None)
    if source is None:
        print(f"error: no apt sources file found ({', '.join(map(str, SOURCES))})", file=sys.stderr)
        return 2
    if dry_run or os.geteuid() != 0:
        print(
            f"as root: add 'contrib non-free' after 'main' in {source}, then run\n"
            "  apt-get update && apt-get install -y espeak-ng mbrola "
            "$(apt-cache pkgnames mbrola- | grep -E '^mbrola-[a-z]{2}[0-9]$')"
        )
        return 0 if dry_run else 2
    text = source.read_text()
    new = enable_components(text, deb822=source.suffix == ".sources")
    if new != text:
        # Plain temp-then-rename (no hamjax import: --install runs before pip installs it).
        for path, content in ((source.with_name(source.name + ".hamjax-bak"), text), (source, new)):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        print(f"enabled contrib and non-free in {source}")
    subprocess.run(["apt-get", "update", "-q"], check=True)
    names = subprocess.run(
        ["apt-cache", "pkgnames", "mbrola-"], capture_output=True, text=True, check=True
    ).stdout.split()
    wanted = None if voices is None else {f"mbrola-{v}" for v in voices}
    voices = sorted(n for n in names if _VOICE_PACKAGE.match(n) and (wanted is None or n in wanted))
    if not voices or (wanted is not None and len(voices) != len(wanted)):
        print(
            "error: apt knows no mbrola-* voice packages after enabling non-free", file=sys.stderr
        )
        return 2
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "espeak-ng",
            "mbrola",
            *voices,
        ],
        check=True,
        env=env,
    )
    print(f"installed espeak-ng, mbrola and {len(voices)} voices")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--root", help="output folder")
    parser.add_argument("--install", action="store_true", help="perform the apt steps (root)")
    parser.add_argument("--dry_run", action="store_true", help="with --install: print the steps")
    parser.add_argument(
        "--voices", default="", help="with --install: comma-separated databases (default: all)"
    )
    parser.add_argument("--size", choices=SIZES, default="default", help="preset size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=None, help="default: usable CPUs")
    parser.add_argument("--overwrite", action="store_true", help="replace a different corpus")
    parser.add_argument(
        "--set",
        type=_parse_set,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a generate_corpus argument (repeatable), e.g. --set english_prob=0.5",
    )
    args = parser.parse_args(argv)
    if args.install:
        voices = [v for v in args.voices.split(",") if v] or None
        code = install(dry_run=args.dry_run, voices=voices)
        if code or not args.root:
            return code
    if not args.root:
        parser.error("--root is required (unless only --install)")
    if shutil.which("espeak-ng") is None or shutil.which("mbrola") is None:
        print("error: espeak-ng / mbrola not found; run with --install first", file=sys.stderr)
        return 2
    from hamjax.data import mbrola

    preset = {"default": mbrola.DEFAULT, "tiny": mbrola.TINY}[args.size]
    kwargs = {**preset, "seed": args.seed, **dict(args.set)}
    start = time.perf_counter()
    try:
        meta = mbrola.generate_corpus(
            args.root, num_workers=args.num_workers, overwrite=args.overwrite, **kwargs
        )
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(json.dumps(meta["summary"], indent=2, sort_keys=True))
    print(f"held-out families: {', '.join(meta['heldout_families'])}")
    print(f"{meta['summary']['num_utterances']} utterances in {args.root} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
