"""JAX's persistent compilation cache, on by default for hamjax's entry points.

Compiling the C=1024 training step takes tens of seconds on a CPU (and a minute or more for a
large model on an accelerator); without a persistent cache every resume, evaluation and study
run pays it again. With the cache, XLA executables are stored on disk keyed by the computation,
the compile options, the devices and the jax/jaxlib version, and a later process that compiles
the same function loads the executable instead (``bench/RESULTS.md``, section
``compile_cache``, has cold vs warm figures).

Call :func:`enable` once, early, before the first ``jit`` compiles (it may be called later;
only compilations after it are cached)::

    from hamjax import compile_cache
    compile_cache.enable(config.train.compilation_cache_dir)   # "" disables

Default location (``enable()`` / ``enable(DEFAULT)``): a cache directory JAX already has (set by
``JAX_COMPILATION_CACHE_DIR`` or an earlier ``jax.config.update``, e.g. a test fixture) is kept;
otherwise ``$HAMJAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/hamjax/jax``
(``~/.cache/hamjax/jax`` without ``XDG_CACHE_HOME``).

The cache is trusted code: anyone who can write to the directory can make hamjax run their
executables, so keep it private to the user (it is created with mode 0700). Entries are never
evicted by default; set ``jax_compilation_cache_max_size`` (bytes) to bound it, or delete the
directory at any time (it is only a cache).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

__all__ = ["DEFAULT", "MIN_COMPILE_SECONDS", "default_directory", "directory", "enable"]

log = logging.getLogger(__name__)

#: The config value that means "the default location" (see :func:`default_directory`).
DEFAULT = "~/.cache/hamjax/jax"

#: Compilations faster than this are not written to the cache. JAX's default (1 s) would skip
#: the evaluation's per-length feature / embedding compiles on a fast host; below ~0.2 s a
#: disk round trip (read, decompress, deserialise: a few ms to tens of ms) saves little and
#: every tiny helper jit would add a file.
MIN_COMPILE_SECONDS = 0.2

# Entries of any size are kept: the time saved, not the size, is what matters here.
_MIN_ENTRY_BYTES = 0


def default_directory() -> Path:
    """``$HAMJAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/hamjax/jax``, else
    ``~/.cache/hamjax/jax``."""
    explicit = os.environ.get("HAMJAX_COMPILATION_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hamjax" / "jax"


def _resolve(directory: str | os.PathLike[str] | None) -> Path | None:
    if directory is None:
        return None
    text = os.fspath(directory).strip()
    if not text:
        return None
    if text == DEFAULT:
        return default_directory()
    return Path(text).expanduser()


def enable(directory: str | os.PathLike[str] | None = DEFAULT) -> Path | None:
    """Turns JAX's persistent compilation cache on in ``directory`` (None or "" turns it off).

    Sets ``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs``
    (:data:`MIN_COMPILE_SECONDS`) and ``jax_persistent_cache_min_entry_size_bytes`` (0), and
    resets JAX's in-process cache object so that a second call with another directory takes
    effect. Executables already compiled in this process stay in memory either way.

    A directory that cannot be created is logged as a warning and the cache stays off: a
    read-only home must not stop training.

    Args:
      directory: the cache folder; :data:`DEFAULT` (``"~/.cache/hamjax/jax"``) means the
        directory JAX is already configured with, if any (left as it is, thresholds
        included), else :func:`default_directory` (which honours
        ``HAMJAX_COMPILATION_CACHE_DIR`` and ``XDG_CACHE_HOME``); ``~`` is expanded; None or
        "" disables the cache.

    Returns:
      The directory in use, or None when the cache is off.

    Raises:
      ValueError: ``directory`` names an existing file.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    current = jax.config.jax_compilation_cache_dir
    if directory is not None and os.fspath(directory).strip() == DEFAULT and current:
        log.info("compilation cache: %s (already configured)", current)
        return Path(current)
    path = _resolve(directory)
    if path is not None and path.exists() and not path.is_dir():
        raise ValueError(
            f"compilation cache directory {str(path)!r} is a file; expected a directory "
            "(set train.compilation_cache_dir to a folder, or to '' to disable the cache)"
        )
    if path is not None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            log.warning("compilation cache disabled: cannot create %s (%s)", path, err)
            path = None
    jax.config.update("jax_compilation_cache_dir", None if path is None else str(path))
    if path is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", _MIN_ENTRY_BYTES)
    cc.reset_cache()  # the next compile (re)opens the cache in the new directory, or none
    log.debug("compilation cache: %s", path if path is not None else "off")
    return path


def directory() -> Path | None:
    """The persistent cache directory JAX uses now (None = off)."""
    value = jax.config.jax_compilation_cache_dir
    return Path(value) if value else None


def enable_from_config(config) -> Path | None:
    """:func:`enable` with a config's ``train.compilation_cache_dir`` (the entry points' call).

    The default value leaves a cache directory that is already set (``JAX_COMPILATION_CACHE_DIR``
    in the environment, or an earlier ``jax.config.update``) in place.
    """
    value = config.get("train", {}).get("compilation_cache_dir", DEFAULT)
    if value == DEFAULT and jax.config.jax_compilation_cache_dir:
        return directory()
    return enable(value)
