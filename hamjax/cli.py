"""The ``hamjax`` command: use a trained speaker model outside eval.py.

    hamjax embed --workdir W INPUT... --output emb.npz       embeddings of audio files
    hamjax score --workdir W a.wav b.wav [c.wav d.wav ...]  same speaker? (score, LLR, decision)
    hamjax export --workdir W --output DIR                  StableHLO / SavedModel / ONNX
    hamjax import-torch --arch A --state-dict F --output W  a work directory from PyTorch weights

Every subcommand has ``--help``. Errors (a missing file, unreadable or too-short audio, a work
directory without a checkpoint) print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from hamjax import cli_common

log = logging.getLogger("hamjax.cli")

#: Audio file endings ``hamjax embed`` picks up in folders.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff", ".aif")


# ------------------------------------------------------------------------------ inputs


def list_inputs(inputs: Sequence[str]) -> list[tuple[str, Path]]:
    """``(utterance id, audio path)`` of every input, in order, ids unique.

    An input is an audio file (id: the path as given), a folder (every audio file below it,
    sorted; id: the path relative to the folder), a Kaldi ``wav.scp`` (``*.scp``; its ids), or
    a list file (one ``path`` or ``id path`` per line; ``#`` comments).

    Raises:
      FileNotFoundError: an input or a listed file is missing (named).
      ValueError: duplicate ids, or a folder without audio.
    """
    from hamjax.data import corpus

    out: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise ValueError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) below it")
            out += [(str(p.relative_to(path)), p) for p in found]
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such file or folder")
        elif path.suffix == ".scp":
            out += list(corpus.read_wav_scp(path).items())
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            out.append((item, path))
        else:
            out += _read_list_file(path)
    seen: dict[str, Path] = {}
    for utt, p in out:
        if utt in seen and seen[utt] != p:
            raise ValueError(f"utterance id {utt!r} names two files: {seen[utt]} and {p}")
        seen[utt] = p
    return list(seen.items())


def _read_list_file(path: Path) -> list[tuple[str, Path]]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        utt, rel = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[0])
        audio = Path(rel).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        if not audio.is_file():
            raise FileNotFoundError(f"{path}:{n}: {rel}: no such audio file")
        out.append((utt, audio))
    return out


# ------------------------------------------------------------------------------ embed


def cmd_embed(args: argparse.Namespace) -> None:
    """Writes the embeddings of every input (resumable: finished chunks are kept)."""
    import jax

    from hamjax import embedding_store
    from hamjax.constants import seconds_to_samples
    from hamjax.inference import Verifier

    items = list_inputs(args.inputs)
    verifier = Verifier.from_workdir(
        args.workdir,
        args.checkpoint,
        protocol="full",
        batch_samples=seconds_to_samples(args.batch_seconds),
        devices=jax.local_devices(),
    )
    log.info(
        "embedding %d utterances with %s step %d on %d device(s)",
        len(items),
        args.workdir,
        verifier.step,
        jax.local_device_count(),
    )
    store = embedding_store.ChunkedStore(Path(args.output), fmt=args.format)
    store.run(verifier, items, chunk=args.chunk)
    print(f"wrote {len(items)} embeddings [{len(items)}, {store.dim}] to {store.final_paths()}")


# ------------------------------------------------------------------------------ score


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.trials:
        from hamjax import trials as trials_lib

        tl = trials_lib.read_trials(args.trials)
        root = Path(args.wav_root or Path(args.trials).parent)
        return [(str(root / e), str(root / t)) for e, t in zip(tl.enroll, tl.test, strict=True)]
    if len(args.audio) < 2 or len(args.audio) % 2:
        raise ValueError(
            f"expected pairs of audio files (an even number, at least 2), got {len(args.audio)}; "
            "or pass --trials LIST"
        )
    return list(zip(args.audio[::2], args.audio[1::2], strict=True))


def _calibration(workdir: Path, name: str | None):
    """The stored calibration of trial list ``name`` (default: the first one evaluated)."""
    import json

    from hamjax import calibration, checkpointing, eval_lib

    eval_dir = workdir / "eval"
    if name is None:
        config = checkpointing.load_config(workdir)
        names = [Path(str(t)).stem for t in config.get("eval", {}).get("trials", ())]
        names += sorted(p.parent.name for p in eval_dir.glob(f"*/{eval_lib.CALIBRATION_FILE}"))
        found = [n for n in names if (eval_dir / n / eval_lib.CALIBRATION_FILE).is_file()]
        if not found:
            return None
        name = found[0]
    path = eval_dir / name / eval_lib.CALIBRATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no calibration for list {name!r}; run eval.py first")
    return calibration.Calibration.from_dict(json.loads(path.read_text()))


def cmd_score(args: argparse.Namespace) -> None:
    """Prints ``enroll test score [llr decision]`` per pair."""
    from hamjax.inference import Verifier

    pairs = _pairs(args)
    verifier = Verifier.from_workdir(args.workdir, args.checkpoint)
    cal = _calibration(Path(args.workdir).expanduser(), args.calibration)
    threshold = math.log((1.0 - args.prior) / args.prior)
    if cal is None:
        print("# uncalibrated: run eval.py on a trial list to calibrate scores to LLRs")
    else:
        print(
            f"# LLR = {cal.slope:.4g} * score + {cal.offset:.4g} (calibrated on {cal.source}); "
            f"same speaker when LLR > {threshold:.3g} (target prior {args.prior:g})"
        )
    names = sorted({p for pair in pairs for p in pair})
    emb = verifier.embed_protocol(names, lambda n: verifier.load(n))
    index = {n: i for i, n in enumerate(emb.names)}
    import numpy as np

    e_idx = np.array([index[a] for a, _ in pairs])
    t_idx = np.array([index[b] for _, b in pairs])
    scores = verifier.score_embeddings(emb, e_idx, t_idx)
    for (a, b), s in zip(pairs, scores, strict=True):
        line = f"{a} {b} {s:.6f}"
        if cal is not None:
            llr = float(cal.llr(s))
            line += f" llr={llr:+.3f} {'same' if llr > threshold else 'different'}"
        print(line)


# ------------------------------------------------------------------------------ export / import


def cmd_export(args: argparse.Namespace) -> None:
    """Exports the embedding function in the requested formats."""
    from hamjax import export
    from hamjax.inference import Verifier

    verifier = Verifier.from_workdir(args.workdir, args.checkpoint)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = sorted(set(formats) - set(export.FORMATS))
    if unknown:
        raise ValueError(f"--formats: {unknown} unknown; expected some of {list(export.FORMATS)}")
    for fmt, path in export.export(
        verifier, Path(args.output).expanduser(), formats=formats
    ).items():
        print(f"{fmt}: {path}")


def cmd_import_torch(args: argparse.Namespace) -> None:
    """Writes a work directory from a PyTorch state dict."""
    from hamjax import pretrained

    out = pretrained.import_torch(args.arch, args.state_dict, args.output, prefix=args.prefix)
    print(f"wrote {out} (config.json, final/, provenance.json)")


# ------------------------------------------------------------------------------ parser


def _common(p: argparse.ArgumentParser, *, workdir: bool = True) -> None:
    if workdir:
        p.add_argument("--workdir", required=True, help="a train.py (or import-torch) work dir")
        p.add_argument(
            "--checkpoint",
            default=None,
            help="'final', 'latest' or a step (default: final if it exists, else latest)",
        )
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")


def _enable_compile_cache(workdir: Path) -> None:
    """The work directory's compilation cache setting (the default when it has no config)."""
    from hamjax import checkpointing, compile_cache

    try:
        config = checkpointing.load_config(workdir)
    except (FileNotFoundError, ValueError):
        config = {}  # the command itself reports the missing or broken config
    compile_cache.enable_from_config(config)


def build_parser() -> argparse.ArgumentParser:
    """The ``hamjax`` argument parser (subcommands embed, score, export, import-torch)."""
    from hamjax import pretrained

    parser = argparse.ArgumentParser(
        prog="hamjax",
        description="Use a trained hamjax speaker model: embed audio, score pairs, export the "
        "model, import PyTorch checkpoints.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'hamjax COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="embeddings of audio files, folders or lists",
                       description=cmd_embed.__doc__ + " Inputs: audio files, folders "
                       "(recursive), Kaldi wav.scp files or list files (path or 'id path' per "
                       "line).")  # fmt: skip
    _common(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--output", required=True, help="emb.npz (ids + [N, E]) or emb.ark")
    p.add_argument("--format", choices=("npz", "kaldi"), default="npz",
                   help="npz, or kaldi ark + scp (kaldiio)")  # fmt: skip
    p.add_argument("--batch_seconds", type=float, default=64.0, help="audio per device call")
    p.add_argument("--chunk", type=int, default=512, help="utterances per saved chunk")
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser("score", help="score pairs of audio files: same speaker or not",
                       description=cmd_score.__doc__ + " The LLR uses the calibration eval.py "
                       "stored for a trial list.")  # fmt: skip
    _common(p)
    p.add_argument("audio", nargs="*", metavar="AUDIO", help="pairs: a.wav b.wav [c.wav d.wav]")
    p.add_argument("--trials", help="a trial list instead of pairs (VoxCeleb or Kaldi format)")
    p.add_argument("--wav_root", help="what --trials paths are relative to")
    p.add_argument("--calibration", help="the trial list whose calibration to use (its name)")
    p.add_argument("--prior", type=float, default=0.5, help="target prior of the decision")
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser("export", help="export the embedding function (StableHLO, SavedModel, "
                       "ONNX)", description=cmd_export.__doc__)  # fmt: skip
    _common(p)
    p.add_argument("--output", required=True, help="a folder; one sub-folder per format")
    p.add_argument("--formats", default="stablehlo,savedmodel,onnx",
                   help="comma-separated: stablehlo, savedmodel, onnx")  # fmt: skip
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("import-torch", help="a work directory from a PyTorch checkpoint",
                       description=cmd_import_torch.__doc__ + " Supported: the authors' / "
                       "TaoRuijie's ECAPA-TDNN and WeSpeaker's ResNet state dicts.")  # fmt: skip
    _common(p, workdir=False)
    p.add_argument("--arch", required=True, choices=sorted(pretrained.ARCHITECTURES))
    p.add_argument("--state-dict", dest="state_dict", required=True,
                   help=".pt/.pth/.model (torch) or .npz")  # fmt: skip
    p.add_argument("--output", required=True, help="the work directory to create")
    p.add_argument("--prefix", default=None, help="key prefix (default: detected)")
    p.set_defaults(fn=cmd_import_torch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hamjax`` console script."""
    cli_common.quiet_third_party()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cli_common.log_to_stderr()
    try:
        if getattr(args, "workdir", None):
            _enable_compile_cache(Path(args.workdir))
        args.fn(args)
    except cli_common.USER_ERRORS as err:
        if args.debug or cli_common.debug_requested(argv):
            raise
        cli_common.fail("hamjax", cli_common.one_line(err) + " (--debug shows the traceback)")
    except KeyboardInterrupt:
        print("hamjax: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
