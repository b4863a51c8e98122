"""The trainer: data, resume checks, the loop, averaging. ``train.py`` calls
:func:`train_and_evaluate`.

Read top to bottom (big_vision / flax-examples style), as named stages::

    validate -> join the job -> prepare data -> resolve config -> check a resume against the
    saved config -> build (mesh, model, optimiser, state, input) -> loop -> average

The update step itself is :mod:`hamjax.train_step`; the model and its variables come from
:mod:`hamjax.model_builder`; the optimiser and state from :mod:`hamjax.train_state`.

The loop uses clu: metric writers (TensorBoard + log on process 0) and periodic actions
(progress reports). Preemption: on several processes, JAX's preemption sync
(``multihost_utils.reached_preemption_sync_point``, fed by the coordination service's SIGTERM
notifier) makes every host stop at the same step, save one checkpoint together and exit; on one
process a SIGTERM/SIGINT handler sets the same flag.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import serialization
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hamjax import (
    checkpointing,
    compile_cache,
    config_lib,
    eval_settings,
    frontend,
    heads,
    io_utils,
    models,
    sweep,
    train_state,
)
from hamjax.data import audio, pipeline, synthetic, tfds_builder
from hamjax.data import config as data_config
from hamjax.model_builder import abstract_variables, build_modules
from hamjax.train_state import TrainState, abstract_train_state, make_optimizer
from hamjax.train_step import global_batch, jit_train_step, make_mesh, make_train_step

log = logging.getLogger("hamjax.train")


class NonFiniteError(FloatingPointError):
    """A training quantity became NaN or infinite; the message names the step and quantity."""


# --------------------------------------------------------------------------- validation


def _require(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.{field} = {value!r} is invalid: expected {expected}")


def _validate_train(t: ml_collections.ConfigDict, num_devices: int | None) -> None:
    """The ``train`` section (this module is its reader)."""
    b = t.global_batch_size
    _require(isinstance(b, int) and b > 0, "train.global_batch_size", b, "a positive integer")
    if num_devices is not None:
        _require(b % num_devices == 0, "train.global_batch_size", b,
                 f"a multiple of the {num_devices} devices the batch is split over")  # fmt: skip
    _require(t.num_epochs > 0, "train.num_epochs", t.num_epochs, "an integer > 0")
    _require(t.steps_per_epoch == -1 or t.steps_per_epoch > 0, "train.steps_per_epoch",
             t.steps_per_epoch, "-1 (one pass over the data) or a positive integer")  # fmt: skip
    _require(t.max_steps == -1 or t.max_steps > 0, "train.max_steps", t.max_steps, "-1 or > 0")
    _require(t.checkpoint_every_steps >= 0, "train.checkpoint_every_steps",
             t.checkpoint_every_steps, "an integer >= 0 (0 = epoch ends only)")  # fmt: skip
    _require(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, ">= 1")
    _require(t.average_last >= 0, "train.average_last", t.average_last, ">= 0 (0 = off)")
    _require(t.log_every_steps >= 1, "train.log_every_steps", t.log_every_steps, ">= 1")
    _require(t.eval_every_epochs >= 0, "train.eval_every_epochs", t.eval_every_epochs, ">= 0")
    source = t.get("init_from", "")
    _require(not source or (Path(source).expanduser() / checkpointing.CONFIG_FILE).is_file(),
             "train.init_from", source, "a train.py or hamjax import-torch work directory (with "
             "config.json), or '' to train from scratch")  # fmt: skip
    n_proc, proc_id = t.num_processes, t.process_id
    _require(isinstance(n_proc, int) and n_proc >= 0, "train.num_processes", n_proc,
             "an integer >= 0 (0 = detect)")  # fmt: skip
    _require(isinstance(proc_id, int) and -1 <= proc_id and (n_proc == 0 or proc_id < n_proc),
             "train.process_id", proc_id,
             "-1 (detect) or an id in [0, train.num_processes)")  # fmt: skip


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Checks a training config before any work: each section by the module that reads it.

    ``data`` (:mod:`hamjax.data.config`), ``features`` (:mod:`hamjax.frontend`), ``model``
    (:mod:`hamjax.models`), ``head`` (:mod:`hamjax.heads`, with every hyper-parameter's
    meaningful range), ``optim`` (:mod:`hamjax.train_state`), ``eval``
    (:mod:`hamjax.eval_settings`) and ``train`` (here).

    Args:
      config: a training config.
      num_devices: the global device count the batch is split over (None = skip that check).

    Raises:
      ValueError: the first invalid field found (named, with its value and what was expected).
    """
    for section in ("data", "features", "model", "head", "optim", "train", "eval"):
        _require(section in config, section, None, f"a '{section}' section (see configs/base.py)")
    _require(isinstance(config.seed, int), "seed", config.seed, "an integer")
    data_config.validate_config(config.data)
    frontend.validate_config(config.features)
    models.validate_config(config.model)
    heads.validate_config(config.head)
    train_state.validate_config(config.optim)
    eval_settings.validate_config(config.eval)
    _validate_train(config.train, num_devices)


# --------------------------------------------------------------------------- data preparation


def synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``generate_corpus`` keyword arguments of ``config.data.synthetic`` (preset + overrides)."""
    size = str(config.data.synthetic.size)
    preset = getattr(synthetic, size.upper(), None)
    if not isinstance(preset, dict):
        raise ValueError(
            f"config.data.synthetic.size = {size!r} is invalid: expected a size preset of "
            "hamjax.data.synthetic (e.g. 'quickstart' or 'tiny')"
        )
    kwargs = {**preset, **config.data.synthetic.overrides.to_dict(), "seed": int(config.seed)}
    return kwargs


def prepare_data(config: ml_collections.ConfigDict) -> Any:
    """Finds (or, with ``data.auto_prepare``, prepares) the training set's TFDS dataset.

    For ``data.source == "synthetic"`` the corpus is generated under ``data.root`` first (reused
    when already complete with the same arguments).

    Returns:
      The :class:`hamjax.data.tfds_builder.DatasetInfo`.

    Raises:
      FileNotFoundError: not prepared and ``data.auto_prepare`` is off.
    """
    d = config.data
    data_dir = os.path.expanduser(d.data_dir)
    if d.source == "synthetic":
        # Always through prepare_dataset: it is idempotent, and a changed corpus size gives a
        # new builder config instead of silently reusing the old one.
        return tfds_builder.prepare_dataset(
            "synthetic",
            os.path.expanduser(d.root),
            data_dir=data_dir,
            name=d.name,
            synthetic=synthetic_kwargs(config),
            skip_bad=d.skip_bad,
            min_seconds=d.get("min_seconds", audio.MIN_SECONDS),
            **tfds_builder.runner_kwargs(d),
        )
    if not d.auto_prepare:
        return tfds_builder.load_dataset_info(data_dir, d.name, config=d.get("config") or None)
    # prepare_from_config is idempotent (the builder config is a hash of the listing) and,
    # unlike a bare prepare_dataset, honours data.list_file -- by default the corpus's
    # train_list.txt, which is what keeps held-out speakers out of training.
    log.info("preparing (or reusing) TFDS dataset %s in %s from %s", d.name, data_dir, d.root)
    return tfds_builder.prepare_from_config(config)


def resolve_config(config: ml_collections.ConfigDict, info: Any) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the dataset-dependent fields filled in.

    ``head.num_classes`` (-1 -> the dataset's speakers) and ``train.steps_per_epoch``
    (-1 -> ``num_examples // global_batch_size``); ``data.config`` records the prepared
    builder config so eval finds the same dataset.

    Raises:
      ValueError: a given ``head.num_classes`` disagrees with the dataset, or the dataset
        holds fewer examples than one global batch.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    n_spk = int(info.num_speakers)
    if config.head.num_classes == -1:
        config.head.num_classes = n_spk
    elif config.head.num_classes != n_spk:
        raise ValueError(
            f"config.head.num_classes = {config.head.num_classes} is invalid: the dataset "
            f"{config.data.name!r} has {n_spk} speakers (use -1 to take it from the dataset)"
        )
    max_steps = pipeline.steps_per_epoch(int(info.num_examples), config.train.global_batch_size)
    if config.train.steps_per_epoch == -1:
        config.train.steps_per_epoch = max_steps
    elif config.train.steps_per_epoch > max_steps:
        raise ValueError(
            f"config.train.steps_per_epoch = {config.train.steps_per_epoch} is invalid: expected "
            f"-1 or at most {max_steps} ({info.num_examples} examples / global batch "
            f"{config.train.global_batch_size})"
        )
    config.data.config = str(info.config)
    return config


#: Fields that may differ between a run and its resume: how long to train, how often to log,
#: save and validate, where the processes meet, evaluation. Every other field decides the
#: model, the data or the optimisation, so a resume that changes it is refused.
RESUMABLE_FIELDS = (
    "train.num_epochs",
    "train.max_steps",
    "train.log_every_steps",
    "train.progress_bar",
    "train.eval_every_epochs",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.average_last",
    "train.async_checkpointing",
    "train.distributed",
    "train.coordinator_address",
    "train.num_processes",
    "train.process_id",
    "data.num_workers",
    "data.auto_prepare",
    "data.prepare.",  # how a dataset is prepared, not what it holds
    "train.compilation_cache_dir",
    "eval.",
)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_resume(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Compares a resumed run's resolved config with the one its checkpoints were made with.

    Called before anything is written: a refused resume leaves ``config.json`` and the
    checkpoints as they were. Changes of :data:`RESUMABLE_FIELDS` are logged.

    Raises:
      ValueError: fields outside :data:`RESUMABLE_FIELDS` differ (each named, old -> new).
    """
    saved_path = workdir / checkpointing.CONFIG_FILE
    ckpt_dir = workdir / checkpointing.CHECKPOINT_DIR
    has_ckpt = ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())
    if not (has_ckpt and saved_path.is_file()):
        return
    # Fields added to hamjax after the run started take their default on its side.
    old = {
        **_flatten(config_lib.base_config().to_dict()),
        **_flatten(checkpointing.load_config(workdir).to_dict()),
    }
    new = _flatten(config.to_dict())
    changed = sorted(
        k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>")
    )
    allowed = [k for k in changed if any(k == f or (f.endswith(".") and k.startswith(f))
                                          for f in RESUMABLE_FIELDS)]  # fmt: skip
    refused = [k for k in changed if k not in allowed]
    if refused:
        diffs = "; ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
                          for k in refused)  # fmt: skip
        raise ValueError(
            f"{workdir} holds checkpoints of another configuration; resuming would mix two runs. "
            f"Changed: {diffs}. Use a new --workdir, or the saved values (only "
            f"{', '.join(f.rstrip('.') for f in RESUMABLE_FIELDS)} may change on resume)."
        )
    for k in allowed:
        log.info("resume: %s changed %r -> %r", k, old.get(k, "<unset>"), new.get(k, "<unset>"))


def total_steps(config: ml_collections.ConfigDict) -> int:
    """Steps of the whole run: ``train.max_steps`` or ``num_epochs * steps_per_epoch``."""
    t = config.train
    full = int(t.num_epochs) * int(t.steps_per_epoch)
    return min(full, int(t.max_steps)) if t.max_steps > 0 else full


# --------------------------------------------------------------------------- preemption


class Preemption:
    """Tells the loop, at a step all processes agree on, to save and stop.

    Several processes: JAX's preemption sync manager (started by ``jax.distributed``)
    catches SIGTERM in any process and agrees on the step at which all stop
    (``reached_preemption_sync_point``, called at every step by every process). One process:
    SIGTERM and SIGINT set a flag (a Python handler, installed only then, so that it never
    replaces the coordination service's own SIGTERM notifier).
    """

    def __init__(self) -> None:
        self._flag = False
        self._previous: dict[int, Any] = {}
        self._multi = jax.process_count() > 1

    def __enter__(self) -> Preemption:
        if not self._multi and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        log.warning("signal %d received: saving a checkpoint and exiting", signum)
        self._flag = True

    def reached(self, step: int) -> bool:
        """Whether to stop after ``step`` (the same answer on every process)."""
        if self._multi:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self._flag

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- loop pieces


_FINITE_ORDER = (
    "loss",
    "loss_clean",
    "loss_aug",
    "grad_norm/encoder",
    "grad_norm/head",
    "grad_norm",
    "embedding_norm/mean",
    "param_norm",
)


def check_finite(step: int, metrics: Mapping[str, Any], last_good: int | None) -> None:
    """Raises :class:`NonFiniteError` naming ``step`` and the first non-finite quantity."""
    bad = [k for k in _FINITE_ORDER if k in metrics and not math.isfinite(float(metrics[k]))]
    if not bad:
        return
    values = ", ".join(f"{k}={float(metrics[k])}" for k in _FINITE_ORDER if k in metrics)
    where = (
        f"the last good checkpoint (step {last_good}) is kept"
        if last_good is not None
        else "no checkpoint was written yet"
    )
    raise NonFiniteError(
        f"non-finite {bad[0]} at step {step} ({values}); training stopped and {where}. "
        "Lower optim.learning_rate, raise head.margin_warmup_steps, set optim.grad_clip_norm, "
        "or use model.dtype='float32'."
    )


# --------------------------------------------------------------------------- averaging


def average_checkpoints(workdir: str | os.PathLike[str], last: int | None = None) -> Path:
    """Averages the last ``last`` epoch checkpoints of ``workdir`` into ``WORKDIR/final``.

    Parameters and BatchNorm running statistics are averaged element-wise (as the authors'
    averaging of whole ``state_dict`` s does); optimiser state is dropped.

    The run's last step counts as an epoch end: a run whose ``train.max_steps`` stops inside
    an epoch averages its newest epoch checkpoints and that last one (and says so), instead of
    dropping the steps after the last epoch end.

    Args:
      workdir: a train.py work directory.
      last: how many epoch checkpoints (default ``train.average_last`` of the saved config).

    Returns:
      The ``final`` directory (replaced atomically: see :func:`checkpointing.save_final`).

    Raises:
      FileNotFoundError: no config or no epoch checkpoints.
      ValueError: ``last < 1``.
    """
    workdir = Path(workdir).expanduser().absolute()
    config = checkpointing.load_config(workdir)
    last = int(config.train.average_last if last is None else last)
    if last < 1:
        raise ValueError(f"average_checkpoints: last={last}; expected >= 1 checkpoints")
    spe = int(config.train.steps_per_epoch)
    ckpt = checkpointing.Checkpointer(workdir / checkpointing.CHECKPOINT_DIR, async_save=False)
    run_end = total_steps(config)
    epochs = checkpointing.epoch_steps(ckpt.all_steps(), spe, last_step=run_end)
    if not epochs:
        raise FileNotFoundError(
            f"{ckpt.directory}: no epoch-end checkpoint (steps that are multiples of "
            f"{spe}, or the last step {run_end}) to average; have {ckpt.all_steps()}"
        )
    chosen = epochs[-last:]
    if chosen[-1] % spe != 0:
        log.info("averaging steps %s: the last, %d, is train.max_steps, not an epoch end",
                 chosen, chosen[-1])  # fmt: skip
    encoder, head = build_modules(config)
    abstract = abstract_variables(config, encoder, head)
    if jax.process_count() > 1:
        # Every process restores the full values (replicated over all devices): orbax's
        # multi-process restore needs shards that each process can address.
        where = NamedSharding(make_mesh(), P())
    else:
        where = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), abstract
    )
    trees = [ckpt.restore_variables(step, target) for step in chosen]
    ckpt.close()
    averaged = checkpointing.average_trees(trees)
    info = {
        "step": chosen[-1],
        "averaged_steps": chosen,
        "epochs": [s // spe if s % spe == 0 else round(s / spe, 3) for s in chosen],
        "requested": last,
    }
    if len(chosen) < last:
        log.warning("only %d epoch checkpoints to average (asked for %d)", len(chosen), last)
    return checkpointing.save_final(workdir, averaged, info)


# --------------------------------------------------------------------------- the job


def _compile_then_meet(step_fn: Callable, state: TrainState, batch: dict[str, jax.Array]):
    """Compiles the step ahead of time, then waits for every process before the first run.

    Processes that compile at different speeds would otherwise reach the first gradient
    all-reduce far apart (see :func:`hamjax.checkpointing.barrier`).
    """
    compiled = step_fn.lower(state, batch).compile()
    checkpointing.barrier("hamjax: train step compiled", timeout_s=3600)
    return compiled


def _maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Joins the multi-process job when asked to (before any other JAX call)."""
    t = config.train
    if not (t.distributed or os.environ.get("HAMJAX_DISTRIBUTED") == "1"):
        return
    if jax.distributed.is_initialized():
        return
    # Unset fields stay None, so that JAX detects them from the cluster environment.
    jax.distributed.initialize(
        coordinator_address=t.get("coordinator_address") or None,
        num_processes=t.get("num_processes", 0) or None,
        process_id=None if t.get("process_id", -1) < 0 else t.process_id,
    )
    log.info("process %d of %d; %d of %d devices are local",
             jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())  # fmt: skip


@dataclasses.dataclass
class _Run:
    """What the loop needs, built by :func:`_build`."""

    config: ml_collections.ConfigDict
    workdir: Path
    mesh: Any
    encoder: Any
    step_fn: Callable[..., Any]
    state: TrainState
    iterator: Any
    ckpt: checkpointing.Checkpointer
    start: int
    last_step: int
    #: Host-local batch -> global arrays (None: split over ``data``; sweeps stack variants).
    to_global: Callable[[Mapping[str, Any]], dict[str, jax.Array]] | None = None

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0


def _prepare(config: ml_collections.ConfigDict, workdir: Path) -> Any:
    """Stage: the dataset, prepared by process 0 while the others wait."""
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    info = prepare_data(config) if is_main else None
    if jax.process_count() > 1:
        # Preparing can take hours: the others wait that long.
        checkpointing.barrier("hamjax: dataset prepared", timeout_s=24 * 3600)
        if not is_main:
            info = prepare_data(config)
    return info


def _build(config: ml_collections.ConfigDict, workdir: Path, info: Any) -> _Run:
    """Stage: mesh, model, optimiser, checkpoints, input; the state restored or created."""
    num_classes = int(config.head.num_classes)
    spe = int(config.train.steps_per_epoch)
    last_step = total_steps(config)
    mesh = make_mesh()
    encoder, head = build_modules(config)
    tx, lr_schedule = make_optimizer(config, spe)
    abstract, shardings = abstract_train_state(config, encoder, head, tx, mesh, num_classes)
    ckpt = _checkpointer(config, workdir)
    iterator = _iterator(config, info, config.seed)
    start = ckpt.latest_step()
    if start is not None:
        state, data_state = ckpt.restore_train_state(start, abstract)
        iterator.set_state(data_state)
        log.info("resumed from step %d in %s", start, ckpt.directory)
    else:
        state = train_state.create_train_state(config, encoder, head, tx, mesh, num_classes)[0]
        if config.train.get("init_from"):
            state = _encoder_from(state, config, config.train.init_from)
        start = 0
    batch_keys = ("waveform", "label") + (("waveform_aug",) if _has_aug(config) else ())
    step_fn = jit_train_step(
        make_train_step(config, encoder, head, lr_schedule, num_classes, mesh),
        mesh,
        shardings,
        batch_keys,
    )
    return _Run(config, workdir, mesh, encoder, step_fn, state, iterator, ckpt, start, last_step)


def _checkpointer(config: ml_collections.ConfigDict, workdir: Path) -> checkpointing.Checkpointer:
    """The run's checkpoint manager (``WORKDIR/checkpoints``, the ``train`` section's policy)."""
    return checkpointing.Checkpointer(
        workdir / checkpointing.CHECKPOINT_DIR,
        keep=config.train.keep_checkpoints,
        steps_per_epoch=int(config.train.steps_per_epoch),
        average_last=config.train.average_last,
        last_step=total_steps(config),
        async_save=config.train.async_checkpointing,
    )


def _iterator(config: ml_collections.ConfigDict, info: Any, seed: int) -> Any:
    """This process's training input pipeline in ``seed``'s order."""
    return pipeline.make_train_iterator(
        config,
        seed=seed,
        global_batch_size=config.train.global_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        dataset=info,
    )


def _encoder_from(
    state: TrainState, config: ml_collections.ConfigDict, source: str | os.PathLike[str]
) -> TrainState:
    """``state`` with its encoder (weights and BatchNorm statistics) from work dir ``source``.

    The source's ``final/`` model is used when it exists, else its newest checkpoint; the head
    stays the fresh one of this run's speakers.

    Raises:
      ValueError: the source's encoder is another architecture (the differing fields named).
    """
    from hamjax.inference import resolve_checkpoint

    src = Path(source).expanduser().absolute()
    src_config = checkpointing.load_config(src)
    ignore = ("dtype",)  # the compute dtype does not change the weights
    differ = sorted(
        k
        for k in set(src_config.model) | set(config.model)
        if k not in ignore and src_config.model.get(k) != config.model.get(k)
    )
    if differ:
        changes = "; ".join(f"{k}: {src_config.model.get(k)!r} vs {config.model.get(k)!r}"
                            for k in differ)  # fmt: skip
        raise ValueError(
            f"config.train.init_from = {str(src)!r}: its encoder is another model ({changes}); "
            "use the same model section as the source"
        )
    encoder, head = build_modules(src_config)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        abstract_variables(src_config, encoder, head),
    )
    which = resolve_checkpoint(src, None)
    variables, step = checkpointing.load_variables(src, which, target)
    log.info("encoder initialised from %s (%s, step %d); new head", src, which, step)

    def place(value: Any, like: jax.Array) -> jax.Array:
        host = np.asarray(jax.device_get(value))
        # Every process holds the same values: each fills its own shards of the global array.
        return jax.make_array_from_callback(host.shape, like.sharding, lambda idx: host[idx])

    params = dict(state.params)
    params["encoder"] = jax.tree.map(place, variables["params"]["encoder"], params["encoder"])
    stats = jax.tree.map(place, variables["batch_stats"]["encoder"], state.batch_stats["encoder"])
    return state.replace(params=params, batch_stats={"encoder": stats})


def _has_aug(config: ml_collections.ConfigDict) -> bool:
    aug = config.data.augment
    return bool(aug.enabled) and str(aug.get("scheme", "authors")) == "authors"


class _StepMetrics:
    """Device metrics of the step in flight, checked and accumulated one step later.

    The host reads a step's metrics while the next step runs, so the loop never waits on the
    device for logging; a non-finite value stops training before the state is checkpointed.
    """

    def __init__(self, last_good: int | None) -> None:
        self.last_good = last_good
        self.last: dict[str, float] = {}
        self._pending: tuple[int, Any] | None = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._since = time.perf_counter()

    def push(self, step: int, metrics: Any) -> None:
        self.drain()
        self._pending = (step, metrics)

    def drain(self) -> None:
        if self._pending is None:
            return
        step, metrics = self._pending
        self._pending = None
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(step, host, self.last_good)
        self.last = host
        for k, v in host.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1

    def take_means(self, utterances_per_step: int) -> dict[str, float]:
        """Means since the last call, plus the utterance rate; resets the sums."""
        self.drain()
        now = time.perf_counter()
        means = {k: v / max(self._count, 1) for k, v in self._sums.items()}
        rate = self._count / max(now - self._since, 1e-9)
        # steps_per_sec and uptime come from clu's ReportProgress.
        means["utterances_per_sec"] = rate * utterances_per_step
        self._sums.clear()
        self._count = 0
        self._since = now
        return means


def _should_checkpoint(step: int, run: _Run) -> bool:
    t = run.config.train
    every = t.checkpoint_every_steps
    return (
        step % t.steps_per_epoch == 0 or step == run.last_step or bool(every and step % every == 0)
    )


def _validation_due(step: int, run: _Run) -> bool:
    t = run.config.train
    epoch_end = step % t.steps_per_epoch == 0
    return bool(
        epoch_end
        and t.eval_every_epochs
        and (step // t.steps_per_epoch) % t.eval_every_epochs == 0
        and run.config.eval.trials
    )


def _validate(run: _Run) -> dict[str, float]:
    """Validation EER (%) on ``config.eval.trials`` with the current weights."""
    from hamjax import validation

    variables = checkpointing.to_host(
        {
            "params": {"encoder": run.state.params["encoder"]},
            "batch_stats": {"encoder": run.state.batch_stats["encoder"]},
        }
    )
    return validation.validation_eer(run.config, variables)


class _Reporter:
    """Scalars to clu's writer (TensorBoard + log), a tqdm bar or log lines, clu progress."""

    def __init__(self, run: _Run) -> None:
        from clu import metric_writers, periodic_actions

        t = run.config.train
        self.writer = metric_writers.create_default_writer(
            str(run.workdir), just_logging=not run.is_main, asynchronous=False
        )
        self.progress = periodic_actions.ReportProgress(
            num_train_steps=run.last_step, writer=self.writer, every_steps=t.log_every_steps
        )
        self.bar = None
        if run.is_main and t.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=run.last_step, initial=run.start, unit="step",
                            dynamic_ncols=True, smoothing=0.1)  # fmt: skip
        self.last_step = run.last_step

    def step(self, step: int) -> None:
        self.progress(step)
        if self.bar is not None:
            self.bar.update(1)

    def scalars(self, step: int, means: Mapping[str, float]) -> None:
        self.writer.write_scalars(step, dict(means))
        if self.bar is not None and "loss" in means:
            self.bar.set_postfix(
                loss=f"{means['loss']:.3f}",
                acc=f"{means.get('accuracy', float('nan')):.3f}",
                lr=f"{means.get('lr', float('nan')):.2e}",
                utt_s=f"{means.get('utterances_per_sec', 0.0):.0f}",
                refresh=False,
            )
        elif self.bar is None:
            text = ", ".join(f"{k}={v:.4g}" for k, v in sorted(means.items()))
            log.info("step %d/%d: %s", step, self.last_step, text)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        if self.bar is not None:
            self.bar.close()


def _next_batch(run: _Run, step: int) -> tuple[dict[str, Any], Any]:
    try:
        local = next(run.iterator)
    except StopIteration as err:
        raise RuntimeError(
            f"the input pipeline ended at step {step} before the last step "
            f"{run.last_step}; check train.num_epochs / steps_per_epoch"
        ) from err
    to_global = run.to_global or (lambda batch: global_batch(batch, run.mesh))
    return to_global(local), run.iterator.get_state()


def _loop(run: _Run) -> dict[str, Any]:
    """Stage: the training loop; returns ``{"step", "preempted", "last_metrics"}``."""
    t = run.config.train
    views = 2 if _has_aug(run.config) else 1
    metrics = _StepMetrics(run.ckpt.latest_step())
    reporter = _Reporter(run)
    step, preempted = run.start, False
    try:
        with Preemption() as preemption:
            while step < run.last_step:
                if preemption.reached(step):
                    preempted = True
                    break
                batch, data_state = _next_batch(run, step)
                if step == run.start:
                    log.info("compiling the training step (before the first step only)")
                    if jax.process_count() > 1:
                        run.step_fn = _compile_then_meet(run.step_fn, run.state, batch)
                run.state, step_metrics = run.step_fn(run.state, batch)
                metrics.push(step + 1, step_metrics)
                step += 1
                if _should_checkpoint(step, run):
                    metrics.drain()  # never checkpoint a non-finite state
                    run.ckpt.save(step, serialization.to_state_dict(run.state), data_state)
                    metrics.last_good = step
                if step % t.log_every_steps == 0 or step == run.last_step:
                    reporter.scalars(step, metrics.take_means(t.global_batch_size * views))
                reporter.step(step)
                if _validation_due(step, run):
                    metrics.drain()
                    eers = _validate(run)
                    reporter.scalars(step, {f"val/{k}": v for k, v in eers.items()})
            metrics.drain()
            if preempted and step > 0 and not run.ckpt.has(step):
                run.ckpt.save(
                    step, serialization.to_state_dict(run.state), run.iterator.get_state()
                )
    finally:
        # Pending asynchronous saves must land before the process exits (also on errors:
        # the last good checkpoint is then complete on disk).
        run.ckpt.close()
        reporter.close()
        run.iterator.close()
    return {"step": step, "preempted": preempted, "last_metrics": metrics.last}


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Trains ``config`` in ``workdir``, resuming from its newest checkpoint if there is one.

    Args:
      config: a config from ``configs/`` (validated here before any work).
      workdir: where config.json, checkpoints/, final/ and TensorBoard events go.

    Returns:
      A summary: ``{"step", "preempted", "last_metrics", "final"}``.

    Raises:
      ValueError: an invalid config field (named), or a resume with another configuration.
      NonFiniteError: the loss or a gradient became non-finite (the step and quantity named).
    """
    validate_config(config)  # before joining a multi-process job, which can wait
    _maybe_initialize_distributed(config)
    validate_config(config, num_devices=jax.device_count())
    compile_cache.enable_from_config(config)
    if sweep.is_sweep(config):
        return _train_sweep(config, Path(workdir).expanduser().absolute())
    workdir = Path(workdir).expanduser().absolute()
    info = _prepare(config, workdir)
    config = resolve_config(config, info)
    check_resume(workdir, config)
    if jax.process_index() == 0:
        io_utils.write_json(workdir / checkpointing.CONFIG_FILE, config.to_dict())
    run = _build(config, workdir, info)
    summary = _loop(run)
    final = None
    if (
        not summary["preempted"]
        and summary["step"] >= run.last_step
        and config.train.average_last > 0
    ):
        final = str(average_checkpoints(workdir, config.train.average_last))
    return {**summary, "final": final}


def _train_sweep(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """The stages of :func:`train_and_evaluate` for a sweep (:mod:`hamjax.sweep`).

    validate every variant -> prepare data -> resolve -> check a resume -> build the stacked
    state and the vmapped step -> the same loop -> split the checkpoints into
    ``WORKDIR/variants/<name>/`` and average each into its ``final/``. Periodic validation
    is off in a sweep (``eval.py --workdir WORKDIR`` evaluates every variant afterwards).
    """
    for variant in sweep.make_plan(config).configs:
        validate_config(variant, num_devices=None)
    info = _prepare(config, workdir)
    config = resolve_config(config, info)
    plan = sweep.make_plan(config)
    check_resume(workdir, config)
    if jax.process_index() == 0:
        io_utils.write_json(workdir / checkpointing.CONFIG_FILE, config.to_dict())
        sweep.write_manifest(workdir, plan)
    make_iterator = lambda seed: _iterator(config, info, seed)  # noqa: E731
    built = sweep.build(config, plan, make_iterator, _checkpointer(config, workdir))
    log.info("%s", sweep.describe(plan))
    loop_config = ml_collections.ConfigDict(config.to_dict())
    loop_config.train.eval_every_epochs = 0
    b = built
    run = _Run(loop_config, workdir, b.mesh, b.encoder, b.step_fn, b.state, b.iterator, b.ckpt,
               b.start, total_steps(config), b.to_global)  # fmt: skip
    summary = _loop(run)
    out = {**summary, "final": None, "variants": {}}
    metrics = sweep.per_variant_metrics(summary["last_metrics"], plan.names)
    done = not summary["preempted"] and summary["step"] >= run.last_step
    dirs = sweep.write_variants(workdir, plan, config, built) if done else {}
    for name in plan.names:
        final = None
        if name in dirs and config.train.average_last > 0:
            final = str(average_checkpoints(dirs[name], config.train.average_last))
        out["variants"][name] = {"last_metrics": metrics[name], "final": final,
                                 "workdir": str(workdir / sweep.VARIANTS_DIR / name)}  # fmt: skip
    return out
