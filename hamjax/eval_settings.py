"""Evaluation settings: the ``eval`` config section, resolved against flags, and validated.

The defaults have one source, :func:`hamjax.config_lib.base_config`'s ``eval`` section: a work
directory's ``config.json`` is read over it (so directories written before a field existed
still resolve), and explicit overrides (``eval.py`` flags, ``evaluate(**overrides)``) are read
over that.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import ml_collections

from hamjax import config_lib, embeddings, scoring
from hamjax import trials as trials_lib

__all__ = ["NORMS", "EvalSettings", "resolve_settings", "validate_config"]

NORMS = ("none", "asnorm")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Everything that decides an evaluation's numbers (recorded in every report).

    Attributes:
      trials: trial-list files.
      checkpoint: ``"latest"``, ``"final"`` or a step.
      protocol: ``"authors"`` or ``"full"``.
      score: ``"cosine"`` or ``"poincare"``.
      norm: ``"none"`` or ``"asnorm"``.
      wav_root: directory the trial lists' paths are relative to.
      wav_scp: optional Kaldi ``wav.scp`` mapping utterance ids to files.
      data_dir: TFDS data directory of the training set (the AS-norm cohort's source).
      top_k: AS-norm top-k cohort scores.
      cohort_size: AS-norm cohort speakers (0 = every training speaker).
      cohort_utterances: training utterances averaged per cohort speaker (0 = all).
      seed: seeds the cohort's speaker / utterance choice.
      baseline: also score the non-learned log-mel baseline.
      batch_seconds: audio seconds per device call.
    """

    trials: tuple[Path, ...]
    checkpoint: str | int
    protocol: str
    score: str
    norm: str
    wav_root: Path | None
    wav_scp: Path | None
    data_dir: Path | None
    top_k: int
    cohort_size: int
    cohort_utterances: int
    seed: int
    baseline: bool
    batch_seconds: float


def expand(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``~`` and environment variables expanded."""
    return Path(os.path.expandvars(str(path))).expanduser()


def _resolve_trial_path(spec: str, data_root: Path | None) -> Path:
    """A trial list named in flags / config: as given, else under ``data.root`` (and trials/)."""
    direct = expand(spec)
    candidates = [direct]
    if not direct.is_absolute() and data_root is not None:
        for base in (data_root, data_root / "trials"):
            candidates += [base / spec, base / f"{spec}.txt"]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise trials_lib.TrialListError(
        f"trial list {spec!r} not found (looked at {', '.join(str(c) for c in candidates)})"
    )


def _choose(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{field}={value!r}: expected one of {', '.join(choices)}")
    return str(value)


def validate_config(ev: ml_collections.ConfigDict) -> None:
    """Checks a config's ``eval`` section (the choices and AS-norm sizes; paths are not read).

    Raises:
      ValueError: ``config.eval.<field>``, the value and what was expected.
    """
    for field, choices in (
        ("protocol", embeddings.PROTOCOLS),
        ("score", scoring.SCORES),
        ("norm", NORMS),
    ):
        if ev[field] not in choices:
            raise ValueError(
                f"config.eval.{field} = {ev[field]!r} is invalid: expected one of {choices}"
            )
    asn = ev.asnorm
    for field, low in (("top_k", 1), ("cohort_size", 0), ("utterances_per_speaker", 0)):
        if not (isinstance(asn[field], int) and asn[field] >= low):
            raise ValueError(
                f"config.eval.asnorm.{field} = {asn[field]!r} is invalid: expected an integer "
                f">= {low}" + (" (0 = all)" if low == 0 else "")
            )
    if not ev.batch_seconds > 0:
        raise ValueError(f"config.eval.batch_seconds = {ev.batch_seconds!r}: expected > 0")


def _eval_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.eval`` over the base config's defaults (older config.json files lack fields)."""
    ev = config_lib.base_config().eval
    if "eval" in config:
        ev.update(config.eval.to_dict())
    return ev


def resolve_settings(
    workdir: str | os.PathLike[str], config: ml_collections.ConfigDict, **overrides: Any
) -> EvalSettings:
    """Evaluation settings: explicit ``overrides`` (None = unset) over the config's ``eval``.

    Args:
      workdir: the training work directory.
      config: its resolved config (``checkpointing.load_config``).
      **overrides: any :class:`EvalSettings` field; ``trials`` may be a comma-separated string.

    Returns:
      :class:`EvalSettings` with every path resolved.

    Raises:
      ValueError: an unknown choice (the field, value and valid choices are named), no trial
        lists, or a trial list that cannot be found.
    """
    from hamjax.inference import resolve_checkpoint

    o = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(o) - {f.name for f in dataclasses.fields(EvalSettings)})
    if unknown:
        raise ValueError(f"resolve_settings: unknown setting(s) {unknown}")
    ev = _eval_section(config)
    data = config.data
    data_root = expand(data.root) if data.get("root") else None
    spec = o.get("trials", ev.trials)
    if isinstance(spec, str):
        spec = [s for s in (p.strip() for p in spec.split(",")) if s]
    if not spec:
        raise ValueError(
            "no trial lists: pass --trials FILE[,FILE...] or set eval.trials in the config"
        )
    # The config's "final" means "final if it exists, else latest"; a flag's is exact.
    which = o.get("checkpoint")
    if which is None and ev.checkpoint != "final":
        which = ev.checkpoint
    wav_root = o.get("wav_root", ev.wav_root or None)
    if wav_root is None and data_root is not None:
        wav_root = data_root / "wav" if (data_root / "wav").is_dir() else data_root
    wav_scp = o.get("wav_scp", ev.wav_scp or None)
    data_dir = o.get("data_dir", data.get("data_dir") or None)
    settings = EvalSettings(
        trials=tuple(_resolve_trial_path(str(s), data_root) for s in spec),
        checkpoint=resolve_checkpoint(workdir, which),
        protocol=_choose("protocol", o.get("protocol", ev.protocol), embeddings.PROTOCOLS),
        score=_choose("score", o.get("score", ev.score), scoring.SCORES),
        norm=_choose("norm", o.get("norm", ev.norm), NORMS),
        wav_root=expand(wav_root) if wav_root else None,
        wav_scp=expand(wav_scp) if wav_scp else None,
        data_dir=expand(data_dir) if data_dir else None,
        top_k=int(o.get("top_k", ev.asnorm.top_k)),
        cohort_size=int(o.get("cohort_size", ev.asnorm.cohort_size)),
        cohort_utterances=int(o.get("cohort_utterances", ev.asnorm.utterances_per_speaker)),
        seed=int(o.get("seed", config.get("seed", 0))),
        baseline=bool(o.get("baseline", True)),
        batch_seconds=float(o.get("batch_seconds", ev.batch_seconds)),
    )
    if settings.top_k < 1:
        raise ValueError(f"asnorm top_k={settings.top_k}: expected >= 1")
    if settings.cohort_size < 0 or settings.cohort_utterances < 0:
        raise ValueError(
            f"asnorm cohort_size={settings.cohort_size}, cohort_utterances="
            f"{settings.cohort_utterances}: expected >= 0 (0 = all)"
        )
    if settings.batch_seconds <= 0:
        raise ValueError(f"batch_seconds={settings.batch_seconds}: expected > 0")
    return settings
