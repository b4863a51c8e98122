"""The ``data`` config section: its owner's checks.

Read by the trainer's data preparation (:mod:`hamjax.data.tfds_builder`) and input pipeline
(:mod:`hamjax.data.pipeline`); checked here before any work so that a bad value fails in
seconds, not after a preparation.
"""

from __future__ import annotations

from typing import Any

from hamjax.data.augment import KINDS as AUGMENT_KINDS
from hamjax.data.tfds_builder import RUNNERS, SOURCES, check_runner

AUGMENT_SCHEMES = ("authors", "wespeaker")


def _require(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.data.{field} = {value!r} is invalid: expected {expected}")


def validate_config(data: Any) -> None:
    """Checks a config's ``data`` section (raises ``ValueError`` naming the field)."""
    _require(data.source in SOURCES, "source", data.source, f"one of {SOURCES}")
    frames = data.crop_frames
    _require(isinstance(frames, int) and frames >= 20, "crop_frames", frames,
             "an integer >= 20 (frames of 10 ms)")  # fmt: skip
    _require(isinstance(data.num_workers, int) and data.num_workers >= 0, "num_workers",
             data.num_workers, "an integer >= 0")  # fmt: skip
    seconds = data.get("min_seconds", 0.5)
    _require(isinstance(seconds, (int, float)) and 0 <= seconds < 60, "min_seconds", seconds,
             "a duration in seconds in [0, 60)")  # fmt: skip
    _validate_prepare(data.get("prepare", None))
    aug = data.augment
    _require(aug.scheme in AUGMENT_SCHEMES, "augment.scheme", aug.scheme,
             f"one of {AUGMENT_SCHEMES}")  # fmt: skip
    _require(0.0 <= aug.prob <= 1.0, "augment.prob", aug.prob, "a probability in [0, 1]")
    unknown = sorted(set(aug.kinds) - set(AUGMENT_KINDS))
    _require(not unknown and len(aug.kinds) > 0, "augment.kinds", aug.kinds,
             f"a non-empty subset of {AUGMENT_KINDS}")  # fmt: skip


def _validate_prepare(prepare: Any) -> None:
    """``data.prepare``: ``runner`` in :data:`RUNNERS`; ``beam_options`` parsed by Beam."""
    if prepare is None:  # a config saved before the section existed: the in-process runner
        return
    runner, options = prepare.runner, prepare.beam_options
    _require(runner in RUNNERS, "prepare.runner", runner,
             f"one of {RUNNERS} ('direct' = hamjax's in-process preparation, 'beam' = Apache "
             "Beam on the runner that data.prepare.beam_options name)")  # fmt: skip
    _require(isinstance(options, str), "prepare.beam_options", options,
             "a string of Beam pipeline options, e.g. '--direct_num_workers=4'")  # fmt: skip
    try:
        check_runner(runner, options)  # imports Beam only for runner="beam"
    except ValueError as err:
        raise ValueError(f"config.data.prepare: {err}") from None
