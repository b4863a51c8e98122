"""Optimiser and train state: what the trainer builds before its first step.

* :func:`make_optimizer`: ``torch.optim.Adam(lr, weight_decay)`` as optax, with the authors'
  per-epoch staircase decay;
* :class:`TrainState` and :func:`create_train_state`: the state created directly in its
  shardings (``jax.jit(init, out_shardings=...)``, shapes from ``jax.eval_shape``);
* :func:`validate_config`: the ``optim`` section's checks.

The modules and variables come from :mod:`hamjax.model_builder`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hamjax import checkpointing, heads, optim
from hamjax.model_builder import init_variables

# --------------------------------------------------------------------------- optimiser


def _require(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.optim.{field} = {value!r} is invalid: expected {expected}")


def validate_config(optim: ml_collections.ConfigDict) -> None:
    """Checks a config's ``optim`` section (raises ``ValueError`` naming the field)."""
    o = optim
    _require(o.learning_rate > 0, "learning_rate", o.learning_rate, "a value > 0")
    _require(o.weight_decay >= 0, "weight_decay", o.weight_decay, "a value >= 0")
    _require(0 < o.lr_decay <= 1, "lr_decay", o.lr_decay, "a factor in (0, 1]")
    _require(0 <= o.b1 < 1 and 0 <= o.b2 < 1, "b1/b2", (o.b1, o.b2), "values in [0, 1)")
    _require(o.warmup_steps >= 0, "warmup_steps", o.warmup_steps, "an integer >= 0")
    _require(o.grad_clip_norm >= 0, "grad_clip_norm", o.grad_clip_norm, ">= 0 (0 = off)")
    m = o.get("encoder_lr_multiplier", 1.0)
    _require(0 <= m <= 100, "encoder_lr_multiplier", m, "a factor in [0, 100] (0 = frozen)")


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


def param_manifolds(config: ml_collections.ConfigDict) -> Callable[[Any], Any]:
    """``params -> manifold tree`` for ``head.centres = "ball"``: the centres on the ball.

    The hyperbolic head's ``centres`` leaf (``params["head"]...["centres"]``) is
    ``PoincareBall(c)`` with ``c`` the head's :meth:`~hamjax.heads.HyperbolicHead.centre_curvature`
    read from the parameters at every step (a learnt curvature moves the ball); every other
    leaf is :class:`~hamjax.optim.Euclidean`.
    """
    head = heads.from_config(config.head, max(int(config.head.num_classes), 1))
    ball = optim.PoincareBall(
        c=lambda params: head.apply({"params": params["head"]}, method="centre_curvature")
    )
    euclidean = optim.Euclidean()

    def manifolds(params: Any) -> Any:
        def pick(path: tuple[Any, ...], _: Any) -> optim.Manifold:
            keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
            return ball if keys[:1] == ["head"] and keys[-1] == "centres" else euclidean

        return jax.tree_util.tree_map_with_path(pick, params)

    return manifolds


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
    in the authors' ``Adam(self.parameters(), ...)``. With ``optim.encoder_lr_multiplier`` != 1
    (fine-tuning) the encoder's updates are scaled by it.

    With ``head.centres = "ball"`` the last two links are one
    :func:`hamjax.optim.riemannian_adam` over :func:`param_manifolds`: Riemannian Adam on the
    centres (``PoincareBall``: Riemannian gradient, one second moment per centre, momentum
    transported, ``exp`` step, projection), exactly Adam on every other leaf, the same lr
    schedule on both; the decay is masked to the Euclidean leaves (``wd * w`` is no tangent
    vector of the ball). It is the last transform of its chain (it returns displacements,
    ``new point - old point``); the fine-tuning multiplier after it scales encoder leaves only.
    """
    o = config.optim
    schedule = make_lr_schedule(config, steps_per_epoch)
    ball = config.head.get("centres", "euclidean") == "ball"
    manifolds = param_manifolds(config) if ball else None
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    # A swept (traced) decay is always in the chain: its structure must not depend on the value.
    if isinstance(o.weight_decay, jax.Array) or o.weight_decay > 0:
        mask = optim.euclidean_mask(manifolds) if ball else None
        parts.append(optax.add_decayed_weights(o.weight_decay, mask=mask))
    if ball:
        parts.append(optim.riemannian_adam(schedule, manifolds, b1=o.b1, b2=o.b2, eps=o.eps))
    else:
        parts += [
            optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
            optax.scale_by_learning_rate(schedule),
        ]
    multiplier = float(o.get("encoder_lr_multiplier", 1.0))
    if multiplier != 1.0:
        # Fine-tuning: the encoder moves `multiplier` times as far as the (new) head.
        parts.append(
            optax.multi_transform(
                {"encoder": optax.scale(multiplier), "head": optax.identity()},
                lambda params: {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()},
            )
        )
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
        if leaf.shape[1] == 1:
            return replicated  # Riemannian Adam's one second moment per ball centre: [C, 1]
        if leaf.shape[1] % n == 0:
            return NamedSharding(mesh, P(None, "data"))
        raise ValueError(
            f"config.head.shard_centres = True cannot split the head's {tuple(leaf.shape)} "
            f"class table over {n} devices: expected num_classes ({leaf.shape[0]}) or the "
            f"embedding size ({leaf.shape[1]}) to be a multiple of {n}"
        )

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


def seed_array(config: ml_collections.ConfigDict) -> np.ndarray:
    """``config.seed`` as the int32 argument of the state initialiser."""
    return np.asarray(config.seed, np.int32)


def _state_init_fn(
    config: ml_collections.ConfigDict,
    encoder: nn.Module,
    head: nn.Module,
    tx: optax.GradientTransformation,
) -> Callable[[jax.Array], TrainState]:
    """``init(seed) -> TrainState``: the seed is an argument, not a constant of the program,
    so one compilation serves every seed (a resumed run, a new seed, each variant of a seed
    sweep); ``PRNGKey`` of a traced seed equals ``PRNGKey`` of the Python integer."""

    def init(seed: jax.Array) -> TrainState:
        rng = jax.random.PRNGKey(seed)
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
    abstract = jax.eval_shape(_state_init_fn(config, encoder, head, tx), seed_array(config))
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
    init = jax.jit(_state_init_fn(config, encoder, head, tx), out_shardings=shardings)
    state = init(seed_array(config))
    return state, shardings
