"""Checkpoints: orbax-managed training state with exact resume, averaging, and model loading.

Layout of a work directory::

    WORKDIR/config.json            the resolved training config (written by the trainer)
    WORKDIR/checkpoints/<step>/    orbax CheckpointManager steps, each a Composite of
        state/                     the TrainState pytree (params {"encoder", "head"},
                                   batch_stats {"encoder"}, opt_state, step, rng)
        data/                      JSON of the input iterator's get_state()
    WORKDIR/final/                 the averaged model {"params", "batch_stats"} (orbax standard)
        final_info.json            which epoch checkpoints were averaged (written last)
    WORKDIR/final_info.json        a copy of it, for older readers

The manager keeps the newest ``keep`` checkpoints plus the newest ``average_last`` epoch-end
checkpoints (steps that are multiples of ``steps_per_epoch``), which is what the authors'
"average of the last 5 epochs" needs. Saves are asynchronous; call :meth:`Checkpointer.wait`
(or :meth:`Checkpointer.close`) before the process exits.

This module reads and writes arrays only: it never builds a model. Callers pass restore
targets (``jax.ShapeDtypeStruct`` trees from :mod:`hamjax.model_builder`); a checkpoint that
cannot be restored raises one :class:`CheckpointError` naming the step folder, the array and
what to do, instead of orbax's long asynchronous traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization
from orbax.checkpoint import checkpoint_managers as ocm

from hamjax import io_utils


class _QuietReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning: loading a model opens its
    checkpoints read-only on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_QuietReadOnlyNotice())

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
FINAL_INFO = "final_info.json"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------- retention policy


@dataclasses.dataclass
class LatestEpochs:
    """Preserves the newest ``n`` checkpoints taken at epoch ends (step % steps_per_epoch == 0).

    The run's ``last_step`` counts as an epoch end (a ``train.max_steps`` inside an epoch is
    where averaging ends). Combined with ``LatestN`` through ``AnyPreservationPolicy``:
    interval / preemption checkpoints rotate, while the ones averaging needs stay.
    """

    n: int
    steps_per_epoch: int
    last_step: int | None = None

    def should_preserve(
        self, checkpoints: Sequence[Any], *, context: Any
    ) -> Sequence[bool]:  # orbax PreservationPolicy protocol
        del context
        ends = set(epoch_steps([c.step for c in checkpoints], self.steps_per_epoch, self.last_step))
        epoch_idx = [i for i, ckpt in enumerate(checkpoints) if ckpt.step in ends]
        keep = set(epoch_idx[-self.n :]) if self.n > 0 else set()
        return [i in keep for i in range(len(checkpoints))]


# --------------------------------------------------------------------------- iterator state


def _encode_data_state(state: Any) -> dict[str, Any]:
    """JSON-able form of an iterator's ``get_state()`` (grain gives a dict or bytes)."""
    if isinstance(state, bytes):
        return {"bytes_b64": base64.b64encode(state).decode("ascii")}
    return {"state": state}


def _decode_data_state(blob: dict[str, Any]) -> Any:
    if "per_process" in blob:  # this process's own position (see _gather_data_states)
        blob = blob["per_process"][str(jax.process_index())]
    if "bytes_b64" in blob:
        return base64.b64decode(blob["bytes_b64"])
    return blob["state"]


def _gather_data_states(state: Any) -> dict[str, Any]:
    """Every process's iterator state, for the one JSON item the primary process writes.

    Each host reads other rows of the global batch, so each resumes from its own state; orbax
    writes a JSON item from the primary process only. The states are gathered (an all-gather
    of their UTF-8 bytes) and saved as ``{"per_process": {"0": ..., "1": ...}}``.
    """
    own = _encode_data_state(state)
    if jax.process_count() == 1:
        return {"per_process": {"0": own}}
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(own).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([raw.size]))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: raw.size] = raw
    table = np.asarray(multihost_utils.process_allgather(padded))
    return {
        "per_process": {
            str(p): json.loads(bytes(table[p, : sizes[p]]).decode()) for p in range(len(sizes))
        }
    }


# --------------------------------------------------------------------------- manager


def abstract_like(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` targets with shardings, for restoring straight into place."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


class Checkpointer:
    """An orbax ``CheckpointManager`` for the train state plus the input iterator state.

    Args:
      directory: the checkpoint directory (``WORKDIR/checkpoints``).
      keep: how many of the newest checkpoints to keep (any kind).
      steps_per_epoch: epoch length in steps; epoch checkpoints are those at multiples of it.
      average_last: how many of the newest epoch checkpoints to keep for averaging.
      last_step: the run's last step, kept for averaging like an epoch end.
      async_save: write in a background thread (training continues meanwhile).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 3,
        steps_per_epoch: int | None = None,
        average_last: int = 0,
        last_step: int | None = None,
        async_save: bool = True,
    ) -> None:
        policies: list[Any] = [ocm.LatestN(n=keep)]
        if steps_per_epoch and average_last > 0:
            policies.append(LatestEpochs(average_last, steps_per_epoch, last_step))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = Path(directory).expanduser().absolute()
        self._started: set[int] = set()  # steps saved (or being saved) by this process
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data")
        )
        self._initial = set(self.manager.all_steps())

    def has(self, step: int) -> bool:
        """Whether ``step`` was on disk when this manager opened, or was saved since.

        The same answer on every process (a directory listing is not: an asynchronous save
        may be finished on one host's view and not yet on another's), so that all processes
        take the same saves and meet in their collectives.
        """
        return step in self._started or step in self._initial

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Finished checkpoint steps, ascending."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any = None) -> None:
        """Starts saving ``state`` (a pytree of jax arrays) and the iterator state at ``step``.

        A step that is already saved is left alone (e.g. an epoch end that is also an
        interval step).
        """
        if self.has(step):
            return
        self._started.add(step)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(_gather_data_states(data_state)),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """Restores ``(state, data_state)`` at ``step`` into ``abstract_state``'s shardings.

        Args:
          step: a saved step.
          abstract_state: the saved pytree's structure with ``jax.ShapeDtypeStruct`` leaves
            carrying the target shardings (see :func:`abstract_like`).

        Raises:
          CheckpointError: damaged files, or arrays of other shapes (named).
        """
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except Exception as err:  # noqa: BLE001 -- orbax/tensorstore raise many kinds
            raise _diagnose(self.manager, step, err, abstract_state) from None
        return restored["state"], _decode_data_state(restored["data"])

    def restore_train_state(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """Like :meth:`restore` for a flax struct (e.g. a TrainState) saved as its state dict."""
        target = serialization.to_state_dict(abstract_state)
        state, data_state = self.restore(step, target)
        return serialization.from_state_dict(abstract_state, state), data_state

    def restore_variables(self, step: int, target: Any) -> Any:
        """Restores only ``{"params", "batch_stats"}`` of the state at ``step``.

        Args:
          step: a saved step.
          target: ``{"params", "batch_stats"}`` tree of ``jax.ShapeDtypeStruct`` with
            shardings; the optimiser state on disk is not read (orbax partial restore).
        """
        return restore_variables(self.manager, step, target)

    def wait(self) -> None:
        """Blocks until every pending asynchronous save has finished."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


# --------------------------------------------------------------------------- averaging


def average_trees(trees: Sequence[Any]) -> Any:
    """The element-wise mean of identically-structured pytrees, accumulated in float64 on host.

    Used for both parameters and BatchNorm statistics, as the authors' (and WeSpeaker's
    ``average_model.py``) averaging of whole state dicts does: running means and variances are
    averaged arithmetically like any other entry.
    """
    if not trees:
        raise ValueError("average_trees: need at least one checkpoint to average, got none")

    def mean(*leaves: Any) -> np.ndarray:
        acc = np.zeros(np.shape(leaves[0]), np.float64)
        for leaf in leaves:
            acc += np.asarray(jax.device_get(leaf), np.float64)
        return (acc / len(leaves)).astype(np.asarray(leaves[0]).dtype)

    return jax.tree.map(mean, *trees)


def _final_paths(workdir: Path) -> tuple[Path, Path, Path]:
    """``(final, final.new, final.old)``: the published model and the two swap slots."""
    final = workdir / FINAL_DIR
    return final, final.with_name(FINAL_DIR + ".new"), final.with_name(FINAL_DIR + ".old")


def recover_final(workdir: str | os.PathLike[str]) -> None:
    """Finishes a :func:`save_final` swap that a killed process left half done.

    The swap is ``final -> final.old``, ``final.new -> final``, remove ``final.old``; a
    complete ``final.new`` (its info file is written last) is published when ``final`` is
    missing; otherwise ``final.new`` is an interrupted write and is removed, as is a leftover
    ``final.old``.
    """
    final, new, old = _final_paths(Path(workdir).expanduser().absolute())
    if new.exists():
        if not final.exists() and (new / FINAL_INFO).is_file():
            new.rename(final)
        else:
            shutil.rmtree(new)
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            old.rename(final)  # the new model never arrived: keep the old one


def final_info(workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """What :func:`save_final` recorded with ``WORKDIR/final`` (``{}`` for old work dirs)."""
    workdir = Path(workdir).expanduser().absolute()
    for path in (workdir / FINAL_DIR / FINAL_INFO, workdir / FINAL_INFO):
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def save_final(workdir: str | os.PathLike[str], variables: Any, info: dict[str, Any]) -> Path:
    """Publishes ``{"params", "batch_stats"}`` as ``WORKDIR/final``, replacing it atomically.

    The new model is written completely to ``final.new`` (with ``info`` inside, written
    last) before the old ``final`` is moved away, so a process killed at any point leaves
    either the old or the new model (:func:`recover_final` completes the swap on the next
    load). ``WORKDIR/final_info.json`` keeps a copy of ``info`` for older readers.
    """
    workdir = Path(workdir).expanduser().absolute()
    main = jax.process_index() == 0
    if main:
        recover_final(workdir)
    barrier("hamjax: final/ recovered")
    final, new, old = _final_paths(workdir)
    ckptr = ocp.StandardCheckpointer()  # every process takes part; orbax writes once
    ckptr.save(new, jax.tree.map(np.asarray, variables), force=True)
    ckptr.wait_until_finished()
    ckptr.close()
    if main:  # the swap is one process's job
        io_utils.write_json(new / FINAL_INFO, info)
        if final.exists():
            final.rename(old)
        new.rename(final)
        io_utils.write_json(workdir / FINAL_INFO, info)
        if old.exists():
            shutil.rmtree(old)
    barrier("hamjax: final/ published")
    return final


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process gets here; returns at once with one process.

    A coordination-service barrier (orbax's), not a device collective:
    ``multihost_utils.sync_global_devices`` runs an all-reduce instead, and XLA:CPU's gloo
    collectives give up after 30 s -- too short while process 0 prepares a dataset alone.
    """
    if jax.process_count() > 1:
        from orbax.checkpoint import multihost

        multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def epoch_steps(
    steps: Sequence[int], steps_per_epoch: int, last_step: int | None = None
) -> list[int]:
    """The epoch-end steps among ``steps`` (ascending); ``last_step`` counts as one."""
    return sorted(s for s in steps if s > 0 and (s % steps_per_epoch == 0 or s == last_step))


# --------------------------------------------------------------------------- loading


class CheckpointError(ValueError):
    """A checkpoint cannot be restored; the message names it, the array and what to do."""


def load_config(workdir: str | os.PathLike[str]) -> ml_collections.ConfigDict:
    """Reads ``WORKDIR/config.json`` (the trainer's resolved config)."""
    path = Path(workdir).expanduser() / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no resolved training config; is {workdir} a train.py --workdir?"
        )
    try:
        blob = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    return ml_collections.ConfigDict(_tuplify(blob))


def _tuplify(obj: Any) -> Any:
    # JSON turns config tuples into lists; ConfigDict fields typed as tuples want them back.
    if isinstance(obj, dict):
        return {k: _tuplify(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return tuple(_tuplify(v) for v in obj)
    return obj


def _shape_mismatches(saved: Any, target: Any) -> list[str]:
    """``"path: expected shape/dtype, found shape/dtype"`` for every leaf that differs."""
    found = {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]
    }
    out = []
    for path, want in jax.tree_util.tree_flatten_with_path(target)[0]:
        key = jax.tree_util.keystr(path)
        have = found.get(key)
        if have is None:
            out.append(f"{key}: expected {tuple(want.shape)} {want.dtype}, not in the checkpoint")
        elif tuple(getattr(have, "shape", ())) != tuple(want.shape):
            out.append(
                f"{key}: expected shape {tuple(want.shape)}, found {tuple(have.shape)} in the "
                "checkpoint"
            )
    return out


def _restore_failed(where: Path, err: BaseException, mismatches: Sequence[str]) -> CheckpointError:
    """One short message for a failed restore (orbax's own traceback runs to hundreds of lines)."""
    if mismatches:
        cause = "; ".join(mismatches[:3]) + (f" (+{len(mismatches) - 3} more)" if len(
            mismatches) > 3 else "")  # fmt: skip
        advice = "the model in the config differs from the one saved (check config.json)"
    else:
        text = " ".join(str(err).split())
        cause = f"{type(err).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}"
        advice = (
            "the files are damaged or incomplete; restore an older step (e.g. --checkpoint "
            "<step> for eval.py, or delete this step's folder so train.py resumes from the "
            "previous one)"
        )
    return CheckpointError(f"cannot restore the checkpoint {where}: {cause}. What to do: {advice}")


def _diagnose(
    manager: ocp.CheckpointManager, step: int, err: BaseException, target: Any
) -> CheckpointError:
    """The error for a failed restore of ``step``: the arrays whose shapes differ, if any."""
    try:
        saved = manager.item_metadata(step)["state"]
        mismatches = _shape_mismatches(saved, target) if saved is not None else []
    except Exception:  # noqa: BLE001 -- unreadable metadata: the restore error says why
        mismatches = []
    return _restore_failed(Path(str(manager.directory)) / str(step), err, mismatches)


def restore_variables(manager: ocp.CheckpointManager, step: int, target: Any) -> dict[str, Any]:
    """``{"params", "batch_stats"}`` of the train state saved at ``step`` (partial restore).

    Raises:
      CheckpointError: the step's files are damaged, or hold other shapes than ``target``.
    """
    item = {"params": target["params"], "batch_stats": target["batch_stats"]}
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                    partial_restore=True,
                )
            ),
        )["state"]
    except Exception as err:  # noqa: BLE001 -- orbax/tensorstore raise many kinds
        raise _diagnose(manager, step, err, item) from None
    return {"params": restored["params"], "batch_stats": restored["batch_stats"]}


def load_variables(
    workdir: str | os.PathLike[str], which: str | int, target: Any
) -> tuple[dict[str, Any], int]:
    """Restores a work directory's model variables into ``target``.

    Args:
      workdir: a ``train.py --workdir`` directory.
      which: ``"latest"`` (newest training checkpoint), ``"final"`` (the averaged model in
        ``WORKDIR/final``) or an int (that training step).
      target: ``{"params", "batch_stats"}`` tree of ``jax.ShapeDtypeStruct`` with shardings.

    Returns:
      ``(variables, step)``; for ``final`` the newest averaged step (-1 if unrecorded).

    Raises:
      FileNotFoundError: no such checkpoint (the message lists what exists).
      CheckpointError: the checkpoint cannot be restored (damaged, or other shapes).
      ValueError: ``which`` is not one of the accepted values.
    """
    workdir = Path(workdir).expanduser().absolute()
    if which == "final":
        recover_final(workdir)
        final = workdir / FINAL_DIR
        if not final.exists():
            raise FileNotFoundError(
                f"{final}: no averaged model; run scripts/average_checkpoints.py --workdir "
                f"{workdir} (or train with train.average_last > 0) or use checkpoint 'latest'"
            )
        ckptr = ocp.StandardCheckpointer()
        try:
            saved = ckptr.metadata(final)
            saved = getattr(saved, "item_metadata", saved)
            mismatches = _shape_mismatches(saved, target) if saved is not None else []
        except Exception:  # noqa: BLE001 -- unreadable metadata: the restore below says why
            mismatches = []
        if mismatches:
            raise _restore_failed(final, ValueError("shape mismatch"), mismatches)
        try:
            variables = ckptr.restore(final, target)
        except Exception as err:  # noqa: BLE001
            raise _restore_failed(final, err, []) from None
        finally:
            ckptr.close()
        return variables, int(final_info(workdir).get("step", -1))
    ckpt_dir = workdir / CHECKPOINT_DIR
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"{ckpt_dir}: no training checkpoints in {workdir}")
    manager = ocp.CheckpointManager(
        ckpt_dir,
        # Explicit values: orbax warns when read_only has to change them itself.
        options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False),
        item_names=("state",),
    )
    try:
        steps = sorted(manager.all_steps())
        if which == "latest":
            if not steps:
                raise FileNotFoundError(f"{ckpt_dir}: no finished checkpoint")
            step = steps[-1]
        elif isinstance(which, (int, np.integer)) and not isinstance(which, bool):
            step = int(which)
            if step not in steps:
                raise FileNotFoundError(f"{ckpt_dir}: no checkpoint at step {step}; have {steps}")
        else:
            raise ValueError(f"checkpoint={which!r}: expected 'latest', 'final' or a step number")
        return restore_variables(manager, step, target), step
    finally:
        manager.close()


def to_host(tree: Any) -> Any:
    """A numpy copy of a pytree of (possibly sharded) arrays."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
