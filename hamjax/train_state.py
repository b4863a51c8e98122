"""Model, optimiser and train state: what the trainer builds before its first step.

* :func:`build_modules`: the encoder and head of a config (used by the trainer, by
  :func:`hamjax.checkpointing.load_inference` and by evaluation);
* :func:`make_optimizer`: ``torch.optim.Adam(lr, weight_decay)`` as optax, with the authors'
  per-epoch staircase decay;
* :class:`TrainState` and :func:`create_train_state`: the state created directly in its
  shardings (``jax.jit(init, out_shardings=...)``, shapes from ``jax.eval_shape``).

All names are re-exported by :mod:`hamjax.train_lib`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hamjax import checkpointing

# Keys of the features section that are not keyword arguments of frontend.compute_features.
_NON_FEATURE_KEYS = ("spec_augment",)
# Keys of the head section the trainer consumes itself (not passed to heads.create_head).
_TRAINER_HEAD_KEYS = ("name", "num_classes", "shard_centres")
# Keys of the model section that are not encoder keyword arguments.
_NON_MODEL_KEYS = ("name",)


# --------------------------------------------------------------------------- modules


def feature_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``frontend.compute_features`` keyword arguments from ``config.features``."""
    return {k: v for k, v in config.features.to_dict().items() if k not in _NON_FEATURE_KEYS}


def build_modules(
    config: ml_collections.ConfigDict, num_classes: int
) -> tuple[nn.Module, nn.Module]:
    """The encoder and head modules of ``config`` (unbound Flax modules).

    Args:
      config: a training config (``model`` and ``head`` sections).
      num_classes: number of training speakers ``C``.

    Returns:
      ``(encoder, head)``.
    """
    from hamjax import heads, models

    # One model section serves every encoder: fields another registered encoder understands
    # (e.g. ECAPA's ``dilations`` for a ResNet) are dropped; unknown ones reach create_encoder,
    # which names them in its error.
    accepted = set(models.ENCODERS.get(config.model.name, (None, ()))[1])
    known = set().union(*(set(spec[1]) for spec in models.ENCODERS.values()))
    model_kwargs = {
        k: v
        for k, v in config.model.to_dict().items()
        if k not in _NON_MODEL_KEYS and (k in accepted or k not in known)
    }
    encoder = models.create_encoder(config.model.name, **model_kwargs)
    head_kwargs = {k: v for k, v in config.head.to_dict().items() if k not in _TRAINER_HEAD_KEYS}
    head = heads.create_head(config.head.name, int(num_classes), **head_kwargs)
    return encoder, head


def _init_inputs(config: ml_collections.ConfigDict) -> jax.ShapeDtypeStruct:
    from hamjax import frontend

    feats = frontend.num_features(**feature_kwargs(config))
    # Parameter shapes do not depend on the batch or the number of frames: a short input is
    # enough (BatchNorm needs batch > 1 to stay finite during init).
    return jax.ShapeDtypeStruct((2, min(int(config.data.crop_frames), 64), feats), jnp.float32)


def init_variables(
    config: ml_collections.ConfigDict, encoder: nn.Module, head: nn.Module, rng: jax.Array
) -> dict[str, Any]:
    """Fresh ``{"params": {"encoder", "head"}, "batch_stats": {"encoder"}}`` (jittable).

    Args:
      config: the training config.
      encoder: from :func:`build_modules`.
      head: from :func:`build_modules`.
      rng: PRNG key ``[2]`` uint32.
    """
    spec = _init_inputs(config)
    feats = jnp.zeros(spec.shape, spec.dtype)
    k_enc, k_head = jax.random.split(rng)
    enc_vars = encoder.init(k_enc, feats, None, train=False)
    emb = jax.eval_shape(lambda v: encoder.apply(v, feats, None, train=False), enc_vars)
    head_vars = head.init(
        k_head, jnp.zeros(emb.shape, jnp.float32), jnp.zeros(emb.shape[:1], jnp.int32)
    )
    return {
        "params": {"encoder": enc_vars["params"], "head": head_vars["params"]},
        "batch_stats": {"encoder": enc_vars.get("batch_stats", {})},
    }


def abstract_variables(
    config: ml_collections.ConfigDict, encoder: nn.Module, head: nn.Module, num_classes: int
) -> dict[str, Any]:
    """``jax.ShapeDtypeStruct`` tree of :func:`init_variables` (no computation)."""
    del num_classes  # the head module already carries it
    return jax.eval_shape(lambda: init_variables(config, encoder, head, jax.random.PRNGKey(0)))


# --------------------------------------------------------------------------- optimiser


def make_lr_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """The authors' schedule: ``lr0 * decay ** floor(step / steps_per_epoch)``, optional warm-up.

    Args:
      config: reads ``optim.learning_rate``, ``optim.lr_decay``, ``optim.warmup_steps``.
      steps_per_epoch: staircase width.
    """
    o = config.optim
    decay = optax.exponential_decay(
        init_value=o.learning_rate,
        transition_steps=max(int(steps_per_epoch), 1),
        decay_rate=o.lr_decay,
        staircase=True,
    )
    if o.warmup_steps <= 0:
        return decay
    warm = optax.linear_schedule(0.0, o.learning_rate, int(o.warmup_steps))
    return lambda step: jnp.where(step < o.warmup_steps, warm(step), decay(step))


def make_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``torch.optim.Adam(lr, weight_decay=wd)`` as optax, and its lr schedule.

    torch's Adam adds ``wd * theta`` to the gradient *before* the moment estimates (coupled L2,
    unlike AdamW's decoupled decay):

    .. math::
        g_t \\leftarrow g_t + \\lambda\\theta_{t-1},\\quad
        \\theta_t = \\theta_{t-1} - \\eta_t\\,\\hat m_t / (\\sqrt{\\hat v_t} + \\epsilon)

    so the chain is ``add_decayed_weights(wd) -> scale_by_adam -> scale_by_learning_rate``. The
    decay applies to every parameter (BatchNorm scales, biases and class centres included), as
    in the authors' ``Adam(self.parameters(), ...)``.
    """
    o = config.optim
    schedule = make_lr_schedule(config, steps_per_epoch)
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.weight_decay > 0:
        parts.append(optax.add_decayed_weights(o.weight_decay))
    parts += [
        optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
        optax.scale_by_learning_rate(schedule),
    ]
    return optax.chain(*parts), schedule


# --------------------------------------------------------------------------- train state


class TrainState(train_state.TrainState):
    """``flax`` TrainState plus BatchNorm statistics and the run's base PRNG key.

    Attributes:
      batch_stats: ``{"encoder": ...}`` running BatchNorm statistics.
      rng: ``[2]`` uint32 base key; the step's key is ``fold_in(rng, step)``.
    """

    batch_stats: Any = None
    rng: jax.Array | None = None


def state_shardings(
    abstract_state: Any, mesh: Mesh, *, shard_centres: bool = False, num_classes: int = -1
) -> Any:
    """A sharding for every leaf of the state: replicated, except (optionally) class centres.

    With ``shard_centres`` every ``[C, D]`` head parameter (class centres / weights, and the
    matching Adam moments) is split over ``data`` so each device stores ``1/devices`` of it:
    on the class axis when ``C`` divides by the device count, else on the embedding axis
    (``D = 192`` divides by 2..64 devices, while VoxCeleb2's ``C = 5994`` does not divide by 8;
    jax refuses uneven shards). XLA inserts the gathers / reductions the logits need.

    Raises:
      ValueError: ``shard_centres`` is on but neither axis divides by the device count.
    """
    replicated = NamedSharding(mesh, P())
    n = mesh.devices.size

    def pick(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        if not shard_centres or getattr(leaf, "ndim", 0) != 2:
            return replicated
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        if "head" not in keys or leaf.shape[0] != num_classes:
            return replicated
        if leaf.shape[0] % n == 0:
            return NamedSharding(mesh, P("data", None))
        if leaf.shape[1] % n == 0:
            return NamedSharding(mesh, P(None, "data"))
        raise ValueError(
            f"config.head.shard_centres = True cannot split the head's {tuple(leaf.shape)} "
            f"class table over {n} devices: expected num_classes ({leaf.shape[0]}) or the "
            f"embedding size ({leaf.shape[1]}) to be a multiple of {n}"
        )

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


def _state_init_fn(
    config: ml_collections.ConfigDict,
    encoder: nn.Module,
    head: nn.Module,
    tx: optax.GradientTransformation,
) -> Callable[[], TrainState]:
    def init() -> TrainState:
        rng = jax.random.PRNGKey(config.seed)
        # Initialisation draws from a key the step keys (fold_in(rng, step)) never produce.
        variables = init_variables(config, encoder, head, jax.random.fold_in(rng, 2**31 - 1))
        return TrainState.create(
            apply_fn=None,
            params=variables["params"],
            tx=tx,
            batch_stats=variables["batch_stats"],
            rng=rng,
        )

    return init


def abstract_train_state(
    config: ml_collections.ConfigDict,
    encoder: nn.Module,
    head: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    num_classes: int,
) -> tuple[TrainState, Any]:
    """``(abstract state with shardings, shardings)``: restore targets, no computation."""
    abstract = jax.eval_shape(_state_init_fn(config, encoder, head, tx))
    shardings = state_shardings(
        abstract, mesh, shard_centres=config.head.shard_centres, num_classes=num_classes
    )
    return checkpointing.abstract_like(abstract, shardings), shardings


def create_train_state(
    config: ml_collections.ConfigDict,
    encoder: nn.Module,
    head: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    num_classes: int,
) -> tuple[TrainState, Any]:
    """A fresh state created directly in its shardings, and those shardings.

    Shapes come from ``jax.eval_shape``; the initialiser runs under ``jax.jit`` with
    ``out_shardings``, so no device ever holds more than its shard.
    """
    _, shardings = abstract_train_state(config, encoder, head, tx, mesh, num_classes)
    state = jax.jit(_state_init_fn(config, encoder, head, tx), out_shardings=shardings)()
    return state, shardings
