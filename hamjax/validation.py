"""The trainer's periodic validation: EER of the current weights on the config's trial lists.

Cheap and weight-independent settings (full protocol, cosine, no normalisation), embedded
through the same :class:`hamjax.inference.Verifier` as ``eval.py``; nothing is written.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hamjax import metrics
from hamjax import trials as trials_lib
from hamjax.constants import seconds_to_samples
from hamjax.data import audio
from hamjax.eval_settings import resolve_settings
from hamjax.inference import Verifier

__all__ = ["validation_eer"]


@functools.lru_cache(maxsize=4096)
def _cached_audio(path: Path) -> np.ndarray:
    # Validation re-reads the same lists every few epochs: keep their (small) audio in memory.
    wav = audio.load_audio(path)
    wav.setflags(write=False)
    return wav


def validation_eer(config: Any, variables: Mapping[str, Any]) -> dict[str, float]:
    """EER (%) of the current weights on ``config.eval.trials``, for the trainer's validation.

    Uses the ``full`` protocol with cosine scoring and no normalisation (cheap and
    weight-independent settings; the trainer logs the values as ``val/<list>_eer``). Nothing is
    written or cached on disk.

    Args:
      config: the (resolved) training config.
      variables: ``{"params": {"encoder", "head"}, "batch_stats": {"encoder"}}`` host arrays
        (``head`` may be absent: it is not used).

    Returns:
      ``{"<list name>_eer": eer_percent}``.
    """
    settings = resolve_settings(
        ".", config, protocol="full", score="cosine", norm="none", checkpoint="latest"
    )
    verifier = Verifier(
        config,
        variables,
        protocol="full",
        scoring_kind="cosine",
        batch_samples=seconds_to_samples(settings.batch_seconds),
    )
    out: dict[str, float] = {}
    for path in settings.trials:
        tl = trials_lib.read_trials(path)
        utts = tl.utterances()
        resolved = trials_lib.resolve_audio(utts, settings.wav_root, source=str(tl.path))
        emb = verifier.embed_protocol(utts, lambda name, r=resolved: _cached_audio(r[name]))
        scores = verifier.score_embeddings(emb, *tl.indices(emb.names))
        out[f"{tl.name}_eer"] = 100.0 * metrics.eer(scores, tl.labels)[0]
    return out
