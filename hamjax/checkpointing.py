"""Checkpoints: orbax-managed training state with exact resume, averaging, and inference loading.

Layout of a work directory::

    WORKDIR/config.json            the resolved training config (written by the trainer)
    WORKDIR/checkpoints/<step>/    orbax CheckpointManager steps, each a Composite of
        state/                     the TrainState pytree (params {"encoder", "head"},
                                   batch_stats {"encoder"}, opt_state, step, rng)
        data/                      JSON of the input iterator's get_state()
    WORKDIR/final/                 the averaged model {"params", "batch_stats"} (orbax standard)
    WORKDIR/final_info.json        which epoch checkpoints were averaged

The manager keeps the newest ``keep`` checkpoints plus the newest ``average_last`` epoch-end
checkpoints (steps that are multiples of ``steps_per_epoch``), which is what the authors'
"average of the last 5 epochs" needs. Saves are asynchronous; call :meth:`Checkpointer.wait`
(or :meth:`Checkpointer.close`) before the process exits.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization
from orbax.checkpoint import checkpoint_managers as ocm

from hamjax import io_utils

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
FINAL_INFO = "final_info.json"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------- retention policy


@dataclasses.dataclass
class LatestEpochs:
    """Preserves the newest ``n`` checkpoints taken at epoch ends (step % steps_per_epoch == 0).

    Combined with ``LatestN`` through ``AnyPreservationPolicy``: interval / preemption
    checkpoints rotate, while the epoch checkpoints that averaging needs stay.
    """

    n: int
    steps_per_epoch: int

    def should_preserve(
        self, checkpoints: Sequence[Any], *, context: Any
    ) -> Sequence[bool]:  # orbax PreservationPolicy protocol
        del context
        epoch_idx = [
            i for i, ckpt in enumerate(checkpoints) if ckpt.step % self.steps_per_epoch == 0
        ]
        keep = set(epoch_idx[-self.n :]) if self.n > 0 else set()
        return [i in keep for i in range(len(checkpoints))]


# --------------------------------------------------------------------------- iterator state


def _encode_data_state(state: Any) -> dict[str, Any]:
    """JSON-able form of an iterator's ``get_state()`` (grain gives a dict or bytes)."""
    if isinstance(state, bytes):
        return {"bytes_b64": base64.b64encode(state).decode("ascii")}
    return {"state": state}


def _decode_data_state(blob: dict[str, Any]) -> Any:
    if "bytes_b64" in blob:
        return base64.b64decode(blob["bytes_b64"])
    return blob["state"]


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
      async_save: write in a background thread (training continues meanwhile).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 3,
        steps_per_epoch: int | None = None,
        average_last: int = 0,
        async_save: bool = True,
    ) -> None:
        policies: list[Any] = [ocm.LatestN(n=keep)]
        if steps_per_epoch and average_last > 0:
            policies.append(LatestEpochs(n=average_last, steps_per_epoch=steps_per_epoch))
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
        if step in self._started or step in self.manager.all_steps():
            return
        self._started.add(step)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(_encode_data_state(data_state)),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """Restores ``(state, data_state)`` at ``step`` into ``abstract_state``'s shardings.

        Args:
          step: a saved step.
          abstract_state: the saved pytree's structure with ``jax.ShapeDtypeStruct`` leaves
            carrying the target shardings (see :func:`abstract_like`).
        """
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
            ),
        )
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


def save_final(workdir: str | os.PathLike[str], variables: Any, info: dict[str, Any]) -> Path:
    """Writes ``{"params", "batch_stats"}`` to ``WORKDIR/final`` (replacing it) and its info."""
    workdir = Path(workdir).expanduser().absolute()
    final = workdir / FINAL_DIR
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(final, jax.tree.map(np.asarray, variables), force=True)
    ckptr.wait_until_finished()
    ckptr.close()
    io_utils.write_json(workdir / FINAL_INFO, info)
    return final


def epoch_steps(steps: Sequence[int], steps_per_epoch: int) -> list[int]:
    """The epoch-end steps among ``steps`` (ascending)."""
    return sorted(s for s in steps if s > 0 and s % steps_per_epoch == 0)


# --------------------------------------------------------------------------- inference


class Inference(NamedTuple):
    """A trained model ready for embedding extraction (the contract with eval, #7).

    Attributes:
      config: the resolved training config (``WORKDIR/config.json``).
      encoder: the encoder module rebuilt from ``config.model``.
      head: the head module rebuilt from ``config.head``.
      variables: ``{"params": {"encoder", "head"}, "batch_stats": {"encoder"}}`` host-resident
        (single-device) arrays.
      step: the training step of the loaded weights (for "final": the newest averaged step).
    """

    config: ml_collections.ConfigDict
    encoder: Any
    head: Any
    variables: dict[str, Any]
    step: int


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


def load_inference(workdir: str | os.PathLike[str], which: str | int = "latest") -> Inference:
    """Loads a trained model from a work directory.

    Args:
      workdir: a ``train.py --workdir`` directory.
      which: ``"latest"`` (newest training checkpoint), ``"final"`` (the averaged model in
        ``WORKDIR/final``) or an int (that training step).

    Returns:
      An :class:`Inference`.

    Raises:
      FileNotFoundError: no config / no such checkpoint.
      ValueError: ``which`` is not one of the accepted values.
    """
    from hamjax import train_lib  # the model builders; imported lazily (heavy)

    workdir = Path(workdir).expanduser().absolute()
    config = load_config(workdir)
    encoder, head = train_lib.build_modules(config, int(config.head.num_classes))
    abstract = train_lib.abstract_variables(config, encoder, head, int(config.head.num_classes))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
    )
    if which == "final":
        final = workdir / FINAL_DIR
        if not final.exists():
            raise FileNotFoundError(
                f"{final}: no averaged model; run scripts/average_checkpoints.py --workdir "
                f"{workdir} (or train with train.average_last > 0) or use which='latest'"
            )
        ckptr = ocp.StandardCheckpointer()
        variables = ckptr.restore(final, target)
        ckptr.close()
        info_path = workdir / FINAL_INFO
        step = int(json.loads(info_path.read_text())["step"]) if info_path.exists() else -1
        return Inference(config, encoder, head, variables, step)
    ckpt_dir = workdir / CHECKPOINT_DIR
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"{ckpt_dir}: no training checkpoints in {workdir}")
    manager = ocp.CheckpointManager(
        ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True), item_names=("state",)
    )
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
        raise ValueError(f"load_inference: which={which!r}; expected 'latest', 'final' or a step")
    state = restore_variables(manager, step, target)
    manager.close()
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return Inference(config, encoder, head, variables, step)


def restore_variables(manager: ocp.CheckpointManager, step: int, target: Any) -> dict[str, Any]:
    """``{"params", "batch_stats"}`` of the train state saved at ``step`` (partial restore)."""
    item = {"params": target["params"], "batch_stats": target["batch_stats"]}
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
    return {"params": restored["params"], "batch_stats": restored["batch_stats"]}


def to_host(tree: Any) -> Any:
    """A numpy copy of a pytree of (possibly sharded) arrays."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
