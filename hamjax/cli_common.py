"""What every hamjax command shares: quiet third-party logs, one-line user errors, recipe help.

``train.py``, ``eval.py``, ``scripts/*.py`` and the ``hamjax`` command run their ``main``
through :func:`run`: a mistake of the user's (a bad config value, an unknown recipe, a missing
file, a bad trial line, unreadable audio) prints one ``<prog>: error: ...`` line and exits 2,
without a traceback; ``--debug`` (or ``HAMJAX_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: Exceptions that are the user's to fix: hamjax's errors all derive from ValueError
#: (AudioError, CheckpointError, TrialListError, CorpusError) or are these.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,  # missing files, unreadable config files, permissions, a full disk
    FloatingPointError,  # train_lib.NonFiniteError
)
REPO = Path(__file__).resolve().parents[1]


def quiet_third_party() -> None:
    """Keeps TensorFlow, JAX's backend probing, orbax and TFDS at warnings and above.

    Call before TensorFlow or JAX are imported (environment variables are read at import).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up lines
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # and its oneDNN notice
    for name in ("absl", "jax", "jax._src.xla_bridge", "orbax", "tensorflow", "grain"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # absl is a dependency; only a broken install lacks it
        pass


def log_to_stderr(level: int = logging.INFO) -> None:
    """hamjax's progress lines on stderr as ``HH:MM:SS message``."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("hamjax")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` on the command line or ``HAMJAX_DEBUG=1`` in the environment."""
    argv = sys.argv if argv is None else argv
    return os.environ.get("HAMJAX_DEBUG", "") not in ("", "0") or "--debug" in argv


def fail(prog: str, message: str, code: int = 2) -> None:
    """Prints ``<prog>: error: <message>`` (first line bold where the terminal allows) and exits."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def one_line(err: BaseException) -> str:
    """The user-facing message of ``err``: its own text, whitespace folded."""
    text = str(err).strip() or type(err).__name__
    if "Failed loading config file" in text:  # config_flags: the file and why, on later lines
        tried = [ln.strip() for ln in text.splitlines() if ln.strip().endswith(".py")]
        why = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("[Errno")]
        return f"cannot load the config file {tried[0] if tried else '?'}" + (
            f": {why[0]}" if why else ""
        )
    if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return " ".join(text.split())


def run(main: Callable[[list[str]], Any], prog: str | None = None) -> None:
    """``absl.app.run(main)`` with user errors (flags included) as one line, exit status 2.

    Flag parsing errors (an unknown recipe variant, a config file that does not load, a bad
    ``--config.x=y``) are reduced to the cause's last line.
    """
    from absl import app, flags

    prog = prog or Path(sys.argv[0]).name
    debug = debug_requested()

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except SystemExit as done:
            # absl exits with status 1 after printing --help; asking for help is no failure.
            if set(argv[1:]) & {"--help", "-h", "-?", "--helpshort", "--helpfull"}:
                raise SystemExit(0) from None
            raise done
        except (flags.Error, OSError, AttributeError, KeyError, ValueError, TypeError) as err:
            # config_flags raises OSError (file), AttributeError/KeyError (unknown field) and
            # the config's own ValueErrors while parsing, besides absl's flags.Error.
            if debug:
                raise
            fail(prog, _flag_error_line(err) + f" (see {prog} --help)")
            raise  # unreachable: fail exits

    def guarded(argv: list[str]) -> Any:
        try:
            return main(argv)
        except USER_ERRORS as err:
            if debug:
                raise
            fail(prog, one_line(err) + " (--debug shows the traceback)")
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    app.run(guarded, flags_parser=parse)


def _flag_error_line(err: BaseException) -> str:
    """The informative line of a flag error (config_flags wraps the cause in a traceback)."""
    if isinstance(err, (AttributeError, KeyError)):
        field = str(err).strip("\"'")
        return f"the config has no field {field!r} (--show_config lists every field)"
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    missing = [ln for ln in lines if ln.endswith(".py") and "No such file" not in ln]
    if isinstance(err, OSError) and any("No such file" in ln for ln in lines):
        return f"config file not found: {missing[0] if missing else lines[-1]}"
    causes = [ln for ln in lines if re.match(r"^\w*(Error|Exception): ", ln)]
    if causes:
        return causes[-1].split(": ", 1)[1]
    return lines[-1] if lines else str(err)


# ------------------------------------------------------------------------------ recipe help


def _module_docstring(path: Path) -> str:
    try:
        return ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError):
        return ""


def _library_names(expr: ast.expr) -> tuple[str, ...]:
    """The keys of every ``config_lib.NAME`` an expression names, in order (no evaluation)."""
    from hamjax import config_lib

    names: list[str] = []
    for node in ast.walk(expr):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "config_lib"
        ):
            names += list(getattr(config_lib, node.attr, ()))
    return tuple(names)


def _module_variants(path: Path) -> tuple[str, ...]:
    """The ``VARIANTS`` tuple a config file declares (read without importing it)."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return ()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "VARIANTS" for t in node.targets
        ):
            try:
                return tuple(ast.literal_eval(node.value))
            except ValueError:  # e.g. (*config_lib.RECIPES, ...): ask the library
                return _library_names(node.value)
    return ()


def recipes_help(configs_dir: Path | None = None) -> str:
    """One line per recipe in ``configs/``: name, variants, and its docstring's first line."""
    configs_dir = configs_dir or REPO / "configs"
    lines = []
    for path in sorted(configs_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        first = _module_docstring(path).split("\n\n")[0].replace("\n", " ")
        summary = first.split(": ", 1)[-1] if first.startswith(path.stem) else first
        summary = summary[:1].upper() + summary[1:]
        variants = _module_variants(path)
        name = f"configs/{path.name}" + (f"[:{'|'.join(variants)}]" if variants else "")
        lines.append(f"  {name}\n      {summary}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ config dump


def _field_comments(source: str) -> dict[str, list[str]]:
    """``dotted field -> comment lines`` from the source of ``config_lib.base_config``."""
    aliases = {"config": ""}
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    for raw in source.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            if not text.startswith("---"):
                pending.append(text)
            continue
        m = re.match(r"^(\w+)\.(\w+) = (\w+) = ml_collections\.ConfigDict\(\)", line)
        if m and m.group(1) in aliases:
            aliases[m.group(3)] = ".".join(p for p in (aliases[m.group(1)], m.group(2)) if p)
        m = re.match(r"^(\w+)\.(\w+) = ", line)
        if m and m.group(1) in aliases and pending:
            comments[".".join(p for p in (aliases[m.group(1)], m.group(2)) if p)] = pending
        if line:
            pending = []
    return comments


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def describe_config(config: Any) -> str:
    """The config as ``section.field = value`` lines, each under its comment from the base."""
    from hamjax import config_lib

    comments = _field_comments(Path(config_lib.__file__).read_text())
    out, section = [], None
    for key, value in _flatten(config.to_dict()):
        top = key.split(".")[0]
        if top != section:
            out.append(f"\n[{top}]")
            section = top
        for text in comments.get(key, []):
            out.append(f"# {text}")
        out.append(f"{key} = {value!r}")
    return "\n".join(out).lstrip("\n")
