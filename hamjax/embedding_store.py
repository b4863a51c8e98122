"""Embeddings of many utterances written to disk in resumable chunks (``hamjax embed``).

Long inputs are embedded a chunk at a time; each finished chunk is saved atomically under
``OUTPUT.parts/``, so a run that is stopped (Ctrl-C, SIGKILL, a full disk) resumes where it
stopped and skips what is done. When every chunk is there they are joined into the output --
``npz`` (``ids [N]``, ``embeddings [N, E]`` float32) or Kaldi ``ark`` + ``scp`` (via kaldiio)
-- atomically, and the parts are removed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamjax import embedding_cache, io_utils

__all__ = ["ChunkedStore", "read_embeddings"]


class ChunkedStore:
    """Resumable chunked embedding output.

    Args:
      output: ``emb.npz`` (``fmt="npz"``) or ``emb.ark`` (``fmt="kaldi"``, with ``emb.scp``).
      fmt: ``"npz"`` or ``"kaldi"``.
    """

    def __init__(self, output: Path, fmt: str = "npz") -> None:
        if fmt not in ("npz", "kaldi"):
            raise ValueError(f"format={fmt!r}: expected 'npz' or 'kaldi'")
        self.output = Path(output).expanduser().absolute()
        self.fmt = fmt
        self.parts = self.output.with_name(self.output.name + ".parts")
        self.dim = 0

    def final_paths(self) -> str:
        if self.fmt == "npz":
            return str(self.output)
        return f"{self.output} + {self.output.with_suffix('.scp')}"

    def _done(self, key: str) -> dict[str, np.ndarray]:
        """Finished chunks whose inputs are the same as now (``key``): id -> embedding."""
        meta = self.parts / "inputs.json"
        if meta.is_file() and json.loads(meta.read_text()).get("key") != key:
            shutil.rmtree(self.parts)  # another input list or model: start over
        self.parts.mkdir(parents=True, exist_ok=True)
        io_utils.write_json(meta, {"key": key})
        done: dict[str, np.ndarray] = {}
        for part in sorted(self.parts.glob("chunk-*.npz")):
            with np.load(part, allow_pickle=False) as z:
                done.update(zip((str(i) for i in z["ids"]), z["embeddings"], strict=True))
        return done

    def run(self, verifier: Any, items: Sequence[tuple[str, Path]], *, chunk: int = 512) -> None:
        """Embeds ``items`` (``(id, path)``) with ``verifier``, skipping finished chunks."""
        from tqdm import tqdm

        ids = [u for u, _ in items]
        paths = [p for _, p in items]
        key = embedding_cache.fingerprint(
            {
                "ids": ids,
                "stats": embedding_cache.file_stats(paths).tolist(),
                "model": embedding_cache.fingerprint(verifier.encoder_variables)[:32],
            }
        )
        done = self._done(key)
        todo = [(u, p) for u, p in items if u not in done]
        bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="utt", desc="embedding")
        with bar:
            for start in range(0, len(todo), max(1, chunk)):
                part = todo[start : start + chunk]
                table = dict(part)
                emb = verifier.embed_protocol(
                    [u for u, _ in part], lambda u, t=table: verifier.load(t[u])
                ).full
                n = len(list(self.parts.glob("chunk-*.npz")))
                with io_utils.atomic_path(self.parts / f"chunk-{n:06d}.npz", suffix=".npz") as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, ids=np.asarray([u for u, _ in part]), embeddings=emb)
                done.update(zip((u for u, _ in part), emb, strict=True))
                bar.update(len(part))
        matrix = np.stack([done[u] for u in ids]).astype(np.float32)
        self.dim = matrix.shape[1]
        self._write(ids, matrix)
        shutil.rmtree(self.parts)

    def _write(self, ids: list[str], matrix: np.ndarray) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "npz":
            with io_utils.atomic_path(self.output, suffix=".npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, ids=np.asarray(ids), embeddings=matrix)
            return
        import kaldiio

        scp = self.output.with_suffix(".scp")
        with tempfile.TemporaryDirectory(dir=self.output.parent) as tmp_dir:
            ark_tmp, scp_tmp = Path(tmp_dir) / self.output.name, Path(tmp_dir) / scp.name
            with kaldiio.WriteHelper(f"ark,scp:{ark_tmp},{scp_tmp}") as writer:
                for utt, vec in zip(ids, matrix, strict=True):
                    writer(utt, vec)
            # The scp names the ark: point it at the final path before moving both in.
            io_utils.write_text(
                scp_tmp, scp_tmp.read_text().replace(str(ark_tmp), str(self.output))
            )
            ark_tmp.replace(self.output)
            scp_tmp.replace(scp)


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(ids, [N, E])`` from a ``hamjax embed`` output (``.npz``, or Kaldi ``.scp``/``.ark``)."""
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return [str(i) for i in z["ids"]], np.asarray(z["embeddings"])
    import kaldiio

    scp = path.with_suffix(".scp")
    table = kaldiio.load_scp(str(scp))
    ids = list(table.keys())
    return ids, np.stack([np.asarray(table[i]) for i in ids])
