"""The on-disk embedding cache of evaluation (``WORKDIR/eval/cache``).

A cache file holds :class:`hamjax.embeddings.Embeddings` and the JSON key it was made under:
what the embeddings depend on besides the utterance names (the checkpoint and a fingerprint of
its weights, the features and model settings, and each audio file's size and modification
time), so a changed model, setting or audio file never reuses a stale embedding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hamjax import io_utils
from hamjax.embeddings import PROTOCOLS, Embeddings, check_choice

__all__ = [
    "cache_path",
    "file_stats",
    "find_cached",
    "fingerprint",
    "load_embeddings",
    "save_embeddings",
]


def fingerprint(obj: Any) -> str:
    """sha256 hex digest of a JSON-able description or of a pytree of arrays.

    Arrays are hashed by path, dtype, shape and bytes, so any change of any weight changes it.
    """
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(obj)[0]
    for path, leaf in leaves:
        h.update(jax.tree_util.keystr(path).encode())
        if isinstance(leaf, (np.ndarray, jax.Array)):
            arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(json.dumps(leaf, sort_keys=True, default=str).encode())
    return h.hexdigest()


def file_stats(paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """``[U, 2]`` int64 ``(size in bytes, modification time in ns)`` of each file.

    Stored beside cached embeddings: an audio file overwritten since (another size or time)
    no longer matches, so its stale embedding is not reused.

    Raises:
      FileNotFoundError: a file is missing (named).
    """
    out = np.zeros((len(paths), 2), np.int64)
    for i, path in enumerate(paths):
        st = os.stat(path)
        out[i] = (st.st_size, st.st_mtime_ns)
    return out


def save_embeddings(
    path: str | os.PathLike[str],
    emb: Embeddings,
    meta: Mapping[str, Any],
    stats: np.ndarray | None = None,
) -> None:
    """Atomically writes ``emb`` and a JSON ``meta`` description to ``path`` (``.npz``).

    For :func:`find_cached`, ``meta["key"]`` must be the cache key the file was made under and
    ``stats`` the :func:`file_stats` of the utterances' audio (rows in ``emb.names`` order).
    """
    arrays: dict[str, np.ndarray] = {
        "names": np.asarray(emb.names, dtype=str),
        "full": emb.full,
        "meta": np.asarray(json.dumps(dict(meta), sort_keys=True, default=str)),
    }
    if stats is not None:
        arrays["stats"] = np.asarray(stats, np.int64).reshape(len(emb.names), 2)
    if emb.crops is not None:
        arrays["crops"] = emb.crops
    with io_utils.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)


def load_embeddings(path: str | os.PathLike[str]) -> tuple[Embeddings, dict[str, Any]]:
    """Reads a file written by :func:`save_embeddings`: ``(embeddings, meta)``.

    Raises:
      ValueError: the file is not a hamjax embedding cache (named in the message).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(n) for n in z["names"])
            full = z["full"]
            crops = z["crops"] if "crops" in z.files else None
            meta = json.loads(str(z["meta"]))
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a readable hamjax embedding cache ({err})") from err
    return Embeddings(names, full, crops), meta


def find_cached(
    cache_dir: str | os.PathLike[str],
    key: Mapping[str, Any],
    names: Sequence[str],
    protocol: str,
    stats: np.ndarray | None = None,
) -> Embeddings | None:
    """A cached :class:`Embeddings` with the same ``key`` that covers ``names``, or None.

    Files are ``<cache_dir>/<sha of key>-*.npz``; any of them holding every name is used (e.g.
    the Vox1-E cache serves Vox1-O, whose utterances it contains), and an ``authors`` file also
    serves ``full`` (its full-utterance part). Unreadable files are ignored, and so is a file
    whose recorded audio sizes / modification times differ from ``stats`` for any wanted name
    (the audio was overwritten: its embeddings are stale).

    Args:
      cache_dir: the cache folder.
      key: what the embeddings depend on besides the utterances (model, features ...).
      names: the utterances wanted, the row order of the result.
      protocol: ``"authors"`` or ``"full"``.
      stats: ``[len(names), 2]`` :func:`file_stats` of their audio now (None = not checked).
    """
    check_choice("protocol", protocol, PROTOCOLS)
    cache_dir = Path(cache_dir)
    prefix = fingerprint(dict(key))[:16]
    wanted = set(names)
    canonical = json.loads(json.dumps(dict(key), default=str))
    for path in sorted(cache_dir.glob(f"{prefix}-*.npz")):
        try:
            # Names and key first: the (large) arrays are read only from a matching file.
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("key") != canonical or not wanted <= {str(n) for n in z["names"]}:
                    continue
                if stats is not None and not _same_stats(z, names, stats):
                    continue
            emb, meta = load_embeddings(path)
        except (OSError, KeyError, ValueError):
            continue
        if emb.protocol == protocol:
            return emb.select(list(names))
        if protocol == "full":
            return dataclasses.replace(emb, crops=None).select(list(names))
    return None


def _same_stats(z: Any, names: Sequence[str], stats: np.ndarray) -> bool:
    """Whether the file ``z`` recorded the same audio size and time for every one of ``names``."""
    if "stats" not in z.files:
        return False  # made without audio stats: cannot tell whether the audio changed
    row = {str(n): i for i, n in enumerate(z["names"])}
    saved = z["stats"][[row[n] for n in names]]
    return bool(np.array_equal(saved, np.asarray(stats, np.int64).reshape(len(names), 2)))


def cache_path(
    cache_dir: str | os.PathLike[str], key: Mapping[str, Any], names: Sequence[str], protocol: str
) -> Path:
    """Where :func:`save_embeddings` should write ``names`` under ``key`` and ``protocol``."""
    check_choice("protocol", protocol, PROTOCOLS)
    names_fp = fingerprint(sorted(names))[:16]
    return Path(cache_dir) / f"{fingerprint(dict(key))[:16]}-{names_fp}-{protocol}.npz"
