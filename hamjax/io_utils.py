"""Atomic file writing: a reader never sees a half-written file, a crash never leaves one.

Every writer in hamjax that produces a file a user keeps (reports, score files, embeddings,
WAVs, lists) goes through :func:`atomic_path`: it writes to a temporary file in the same
directory and ``os.replace``-s it onto the target, which POSIX guarantees to be atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any thread exists.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it is renamed onto ``path``.

    Args:
      path: the final destination. Its parent directory is created if needed.
      suffix: suffix of the temporary file (defaults to the destination's, so that libraries
        that infer a format from the extension, e.g. soundfile or matplotlib, still work).

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=suffix if suffix is not None else path.suffix,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the mode a plain open() would have (or the
        # mode of the file it replaces), so reports stay readable by other users.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically writes ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically writes ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Atomically writes ``obj`` as JSON (keys sorted, trailing newline) to ``path``."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")
