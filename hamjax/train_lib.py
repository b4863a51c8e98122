"""The trainer: one sharded step, one loop, exact resume.

Read top to bottom (big_vision style): the update step, mesh and input, data preparation, loop
helpers, averaging, and :func:`train_and_evaluate`, the loop ``train.py`` calls. The model,
optimiser and train-state builders live in :mod:`hamjax.train_state` and are re-exported here.

The step (:func:`make_train_step`) is one pure function ``train_step(state, batch, rng) ->
(state, metrics)``::

    waveform [B, S] (+ waveform_aug [B, S])  --frontend-->  features [nB, T, F]
      --SpecAugment-->  encoder (BatchNorm in train mode)  -->  embeddings [nB, E]
      --head-->  logits  --CE-->  loss = mean(clean) + mean(aug)          (n = 1 or 2)

It is jitted once with explicit ``in_shardings`` / ``out_shardings`` on a 1-D ``Mesh`` named
``data`` over every device of every host: the batch is split over ``data``, parameters and
optimiser state are replicated (the head's class centres optionally split over ``data`` on
their class axis, ``config.head.shard_centres``). Because the jitted program sees the *global*
batch, every reduction in it, BatchNorm's batch mean and variance included, is over the global
batch: XLA inserts the cross-device all-reduces. A run on 8 devices therefore computes the same
function as on 1 device (``tests/test_train_lib.py`` checks it).

Randomness: one base key from ``config.seed`` lives in the state; the step's key is
``fold_in(base, step)``, so a resumed run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hamjax import checkpointing, config_lib, io_utils

# Model, optimiser and state builders live in hamjax.train_state; re-exported here so that
# ``train_lib`` is the trainer's one public entry point.
from hamjax.train_state import (  # noqa: F401
    TrainState,
    _state_init_fn,
    abstract_train_state,
    abstract_variables,
    build_modules,
    create_train_state,
    feature_kwargs,
    init_variables,
    make_lr_schedule,
    make_optimizer,
    state_shardings,
)

log = logging.getLogger("hamjax.train")


class NonFiniteError(FloatingPointError):
    """A training quantity became NaN or infinite; the message names the step and quantity."""


# --------------------------------------------------------------------------- the update step


def _centre_table(head_params: Mapping[str, Any], num_classes: int) -> jax.Array | None:
    """The ``[C, D]`` class centres / weights of a head (the hyperbolic one for ``combined``)."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(head_params)[0]:
        name = getattr(path[-1], "key", None)
        if name in ("centres", "weights") and leaf.ndim == 2 and leaf.shape[0] == num_classes:
            found.append((name == "centres", leaf))
    if not found:
        return None
    return sorted(found, key=lambda t: not t[0])[0][1]  # prefer hyperbolic centres


def make_train_step(
    config: ml_collections.ConfigDict,
    encoder: nn.Module,
    head: nn.Module,
    lr_schedule: optax.Schedule,
    num_classes: int,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, dict]]:
    """Builds the pure ``train_step(state, batch, rng) -> (state, metrics)``.

    Args:
      config: the training config.
      encoder, head: from :func:`build_modules`.
      lr_schedule: logged as ``lr``.
      num_classes: ``C``.
      mesh: when given, the concatenated clean+augmented batch is constrained to stay split
        over ``data`` (each device keeps its own rows; no reshuffle).

    The batch is ``{"waveform": [B, S] float32, "label": [B] int32}`` and optionally
    ``"waveform_aug": [B, S]``. With it, rows are interleaved ``(clean_0, aug_0, clean_1, ...)``
    so each device's clean and augmented rows stay on that device, and

    .. math:: L = \\frac1B\\sum_i \\ell(x_i) + \\frac1B\\sum_i \\ell(\\tilde x_i)

    (the authors' ``mean(clean) + mean(aug)``); without it ``L = mean(clean)``.
    """
    from hamjax import frontend, heads

    feat_kwargs = feature_kwargs(config)
    spec = config.features.spec_augment.to_dict()
    spec_on = bool(spec.pop("enabled", True))
    margin_fn = heads.margin_schedule(int(config.head.margin_warmup_steps))
    hyperbolic = config.head.name in config_lib.HYPERBOLIC_HEADS
    row_sharding = NamedSharding(mesh, P("data")) if mesh is not None else None

    def train_step(
        state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        wave = batch["waveform"]
        labels = batch["label"].astype(jnp.int32)
        clean_batch = wave.shape[0]
        if "waveform_aug" in batch:
            views = 2
            wave = jnp.stack([wave, batch["waveform_aug"]], axis=1).reshape(-1, wave.shape[-1])
            labels = jnp.repeat(labels, 2)
        else:
            views = 1
        if row_sharding is not None:
            wave = jax.lax.with_sharding_constraint(wave, row_sharding)
        # Everything below sees the GLOBAL batch: under jit with a batch split over "data",
        # BatchNorm's batch mean/variance (and the loss means) are reductions over all devices'
        # rows, which XLA implements with all-reduces. No per-device statistics anywhere.
        feats, frame_mask = frontend.compute_features(wave, None, **feat_kwargs)
        if spec_on:
            feats = frontend.spec_augment(feats, rng, frame_mask=frame_mask, **spec)
        margin_scale = margin_fn(state.step)

        def loss_fn(params):
            emb, updates = encoder.apply(
                {"params": params["encoder"], "batch_stats": state.batch_stats["encoder"]},
                feats,
                frame_mask,
                train=True,
                mutable=["batch_stats"],
            )
            out = head.apply({"params": params["head"]}, emb, labels, margin_scale=margin_scale)
            per_example = heads.head_loss(out, labels).reshape(clean_batch, views)
            per_view = per_example.mean(axis=0)  # [views]: mean(clean), mean(aug)
            return per_view.sum(), (updates["batch_stats"], emb, out.scores, per_view)

        (loss, (new_stats, emb, scores, per_view)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        new_state = state.apply_gradients(grads=grads, batch_stats={"encoder": new_stats})

        emb_norm = jnp.linalg.norm(emb, axis=-1)
        metrics = {
            "loss": loss,
            "loss_clean": per_view[0],
            "accuracy": jnp.mean(jnp.argmax(scores, axis=-1) == labels),
            "grad_norm": optax.global_norm(grads),
            "grad_norm/encoder": optax.global_norm(grads["encoder"]),
            "grad_norm/head": optax.global_norm(grads["head"]),
            "param_norm": optax.global_norm(state.params),
            "lr": jnp.asarray(lr_schedule(state.step), jnp.float32),
            "margin_scale": jnp.asarray(margin_scale, jnp.float32),
            "embedding_norm/mean": emb_norm.mean(),
            "embedding_norm/std": emb_norm.std(),
        }
        if views == 2:
            metrics["loss_aug"] = per_view[1]
        centres = _centre_table(state.params["head"], num_classes)
        if centres is not None:
            c_norm = jnp.linalg.norm(centres, axis=-1)
            metrics["centre_norm/mean"] = c_norm.mean()
            metrics["centre_norm/max"] = c_norm.max()
        if hyperbolic:
            hp = {"params": state.params["head"]}
            c = head.apply(hp, method="curvature")
            ball = head.apply(hp, jax.lax.stop_gradient(emb), method="ball_embed")
            # Radius as a fraction of the ball's radius 1/sqrt(c): 1 = on the boundary.
            metrics["curvature"] = c
            metrics["ball_radius/mean"] = jnp.mean(jnp.linalg.norm(ball, axis=-1)) * jnp.sqrt(c)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return new_state, metrics

    return train_step


def jit_train_step(
    train_step: Callable, mesh: Mesh, shardings: Any, batch_keys: tuple[str, ...]
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict]]:
    """``jax.jit`` of ``train_step`` with the step key derived in-graph, state donated.

    Returns ``step(state, batch) -> (state, metrics)`` where the key is
    ``fold_in(state.rng, state.step)``.
    """
    batch_sharding = {k: NamedSharding(mesh, P("data")) for k in batch_keys}
    replicated = NamedSharding(mesh, P())

    def step(state: TrainState, batch: dict[str, jax.Array]):
        return train_step(state, batch, jax.random.fold_in(state.rng, state.step))

    return jax.jit(
        step,
        in_shardings=(shardings, batch_sharding),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )


# --------------------------------------------------------------------------- mesh and input


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local batches (rows ``process_index * b ...``) -> one global array per key."""
    sharding = NamedSharding(mesh, P("data"))
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }


# --------------------------------------------------------------------------- data preparation


def synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``generate_corpus`` keyword arguments of ``config.data.synthetic`` (preset + overrides)."""
    from hamjax.data import synthetic

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
    from hamjax.data import tfds_builder

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
    from hamjax.data import pipeline

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


def total_steps(config: ml_collections.ConfigDict) -> int:
    """Steps of the whole run: ``train.max_steps`` or ``num_epochs * steps_per_epoch``."""
    t = config.train
    full = int(t.num_epochs) * int(t.steps_per_epoch)
    return min(full, int(t.max_steps)) if t.max_steps > 0 else full


# --------------------------------------------------------------------------- loop helpers


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


class _Preemption:
    """SIGTERM/SIGINT -> a flag the loop checks once per step (then saves and exits)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Preemption:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM,):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        log.warning("signal %d received: saving a checkpoint and exiting", signum)
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Writer:
    """TensorBoard scalars (tensorboardX) on process 0; a no-op elsewhere."""

    def __init__(self, logdir: Path, enabled: bool) -> None:
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=str(logdir), flush_secs=30)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)


# --------------------------------------------------------------------------- validation


def _validation_eer(
    config: ml_collections.ConfigDict, workdir: Path, state: TrainState, encoder: nn.Module
) -> dict[str, float]:
    """Validation EER (%) on ``config.eval.trials`` with the current weights (optional)."""
    try:
        from hamjax import eval_lib
    except ImportError:  # evaluation module not installed: skip quietly
        return {}
    fn = getattr(eval_lib, "validation_eer", None)
    if fn is None:
        return {}
    variables = {
        "params": {"encoder": state.params["encoder"]},
        "batch_stats": {"encoder": state.batch_stats["encoder"]},
    }
    return dict(fn(config, encoder, checkpointing.to_host(variables), workdir=workdir))


# --------------------------------------------------------------------------- averaging


def average_checkpoints(workdir: str | os.PathLike[str], last: int | None = None) -> Path:
    """Averages the last ``last`` epoch checkpoints of ``workdir`` into ``WORKDIR/final``.

    Parameters and BatchNorm running statistics are averaged element-wise (as the authors'
    averaging of whole ``state_dict`` s does); optimiser state is dropped.

    Args:
      workdir: a train.py work directory.
      last: how many epoch checkpoints (default ``train.average_last`` of the saved config).

    Returns:
      The ``final`` directory.

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
    epochs = checkpointing.epoch_steps(ckpt.all_steps(), spe)
    if not epochs:
        raise FileNotFoundError(
            f"{ckpt.directory}: no epoch-end checkpoint (steps that are multiples of "
            f"{spe}) to average; have {ckpt.all_steps()}"
        )
    chosen = epochs[-last:]
    num_classes = int(config.head.num_classes)
    encoder, head = build_modules(config, num_classes)
    abstract = abstract_variables(config, encoder, head, num_classes)
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
        "epochs": [s // spe for s in chosen],
        "requested": last,
    }
    if len(chosen) < last:
        log.warning("only %d epoch checkpoints to average (asked for %d)", len(chosen), last)
    return checkpointing.save_final(workdir, averaged, info)


# --------------------------------------------------------------------------- the loop


def _barrier(name: str, timeout_s: float) -> None:
    """Waits until every process gets here (the coordination service; no device collective).

    ``multihost_utils.sync_global_devices`` runs an all-reduce instead, and XLA:CPU's gloo
    collectives give up after 30 s: too short while process 0 prepares the dataset alone.
    """
    from orbax.checkpoint import multihost

    multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def _compile_then_meet(step_fn: Callable, state: TrainState, batch: dict[str, jax.Array]):
    """Compiles the step ahead of time, then waits for every process before the first run.

    Processes that compile at different speeds would otherwise reach the first gradient
    all-reduce far apart (see :func:`_barrier`).
    """
    compiled = step_fn.lower(state, batch).compile()
    _barrier("hamjax: train step compiled", timeout_s=3600)
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
      ValueError: an invalid config field (named).
      NonFiniteError: the loss or a gradient became non-finite (the step and quantity named).
    """
    from hamjax.data import pipeline

    # ---- setup: topology, validation, data, resolved config
    config_lib.validate_config(config)  # before joining a multi-process job, which can wait
    _maybe_initialize_distributed(config)
    config_lib.validate_config(config, num_devices=jax.device_count())
    workdir = Path(workdir).expanduser().absolute()
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    info = prepare_data(config) if is_main else None
    if jax.process_count() > 1:
        _barrier("hamjax: dataset prepared", timeout_s=24 * 3600)  # preparing can take hours
        if not is_main:
            info = prepare_data(config)
    config = resolve_config(config, info)
    if is_main:
        io_utils.write_json(workdir / checkpointing.CONFIG_FILE, config.to_dict())
    num_classes = int(config.head.num_classes)
    spe = int(config.train.steps_per_epoch)
    last_step = total_steps(config)

    # ---- model, optimiser, mesh
    mesh = make_mesh()
    encoder, head = build_modules(config, num_classes)
    tx, lr_schedule = make_optimizer(config, spe)
    abstract, shardings = abstract_train_state(config, encoder, head, tx, mesh, num_classes)

    # ---- checkpoints: restore or create
    ckpt = checkpointing.Checkpointer(
        workdir / checkpointing.CHECKPOINT_DIR,
        keep=config.train.keep_checkpoints,
        steps_per_epoch=spe,
        average_last=config.train.average_last,
        async_save=config.train.async_checkpointing,
    )
    iterator = pipeline.make_train_iterator(
        config,
        seed=config.seed,
        global_batch_size=config.train.global_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        dataset=info,
    )
    start = ckpt.latest_step()
    if start is not None:
        state, data_state = ckpt.restore_train_state(start, abstract)
        iterator.set_state(data_state)
        log.info("resumed from step %d in %s", start, ckpt.directory)
    else:
        state = jax.jit(_state_init_fn(config, encoder, head, tx), out_shardings=shardings)()
        start = 0
    batch_keys = ("waveform", "label") + (("waveform_aug",) if _has_aug(config) else ())
    step_fn = jit_train_step(
        make_train_step(config, encoder, head, lr_schedule, num_classes, mesh),
        mesh,
        shardings,
        batch_keys,
    )
    views = 2 if "waveform_aug" in batch_keys else 1

    # ---- loop
    writer = _Writer(workdir, enabled=is_main)
    bar = _progress(last_step, start, enabled=is_main and config.train.progress_bar)
    step = start
    last_good = ckpt.latest_step()
    pending: tuple[int, Any] | None = None  # (step, device metrics) not yet checked
    sums: dict[str, float] = {}
    count = 0
    t_log = time.perf_counter()
    preempted = False
    last_metrics: dict[str, float] = {}

    def drain() -> None:
        nonlocal pending, count, last_metrics
        if pending is None:
            return
        s, m = pending
        pending = None
        host = {k: float(v) for k, v in jax.device_get(m).items()}
        check_finite(s, host, last_good)
        last_metrics = host
        for k, v in host.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1

    try:
        with _Preemption() as preemption:
            while step < last_step:
                if preemption.requested:
                    preempted = True
                    break
                try:
                    local = next(iterator)
                except StopIteration as err:
                    raise RuntimeError(
                        f"the input pipeline ended at step {step} before the last step "
                        f"{last_step}; check train.num_epochs / steps_per_epoch"
                    ) from err
                data_state = iterator.get_state()
                batch = global_batch(local, mesh)
                if step == start and jax.process_count() > 1:
                    step_fn = _compile_then_meet(step_fn, state, batch)
                state, metrics = step_fn(state, batch)
                # Check the previous step while this one runs (one step in flight).
                drain()
                pending = (step + 1, metrics)
                step += 1
                epoch_end = step % spe == 0
                if (
                    epoch_end
                    or step == last_step
                    or (config.train.checkpoint_every_steps
                        and step % config.train.checkpoint_every_steps == 0)
                ):  # fmt: skip
                    drain()  # never checkpoint a non-finite state
                    ckpt.save(step, serialization.to_state_dict(state), data_state)
                    last_good = step
                if step % config.train.log_every_steps == 0 or step == last_step:
                    drain()
                    now = time.perf_counter()
                    means = {k: v / max(count, 1) for k, v in sums.items()}
                    rate = count / max(now - t_log, 1e-9)
                    means["steps_per_sec"] = rate
                    means["utterances_per_sec"] = rate * config.train.global_batch_size * views
                    writer.scalars(step, means)
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{means.get('loss', float('nan')):.3f}",
                            acc=f"{means.get('accuracy', float('nan')):.3f}",
                            lr=f"{means.get('lr', float('nan')):.2e}",
                            utt_s=f"{means['utterances_per_sec']:.0f}",
                            refresh=False,
                        )
                    else:
                        log.info(
                            "step %d/%d: %s",
                            step,
                            last_step,
                            ", ".join(f"{k}={v:.4g}" for k, v in sorted(means.items())),
                        )
                    sums.clear()
                    count = 0
                    t_log = now
                if bar is not None:
                    bar.update(1)
                if (
                    epoch_end
                    and config.train.eval_every_epochs
                    and (step // spe) % config.train.eval_every_epochs == 0
                    and config.eval.trials
                ):
                    drain()
                    eers = _validation_eer(config, workdir, state, encoder)
                    writer.scalars(step, {f"val/{k}": v for k, v in eers.items()})
            drain()
            if preempted and step not in ckpt.all_steps() and step > 0:
                ckpt.save(step, serialization.to_state_dict(state), iterator.get_state())
    finally:
        # Pending asynchronous saves must land before the process exits (also on errors:
        # the last good checkpoint is then complete on disk).
        ckpt.close()
        writer.close()
        if bar is not None:
            bar.close()
        iterator.close()

    final = None
    if not preempted and step >= last_step and config.train.average_last > 0:
        final = str(average_checkpoints(workdir, config.train.average_last))
    return {"step": step, "preempted": preempted, "last_metrics": last_metrics, "final": final}


def _has_aug(config: ml_collections.ConfigDict) -> bool:
    aug = config.data.augment
    return bool(aug.enabled) and str(aug.get("scheme", "authors")) == "authors"
