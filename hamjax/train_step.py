"""The training step: one pure, sharded update of the whole model.

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

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hamjax import frontend, heads
from hamjax.model_builder import feature_kwargs
from hamjax.train_state import TrainState

__all__ = ["global_batch", "jit_train_step", "make_mesh", "make_train_step"]


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
    *,
    margin_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, dict]]:
    """Builds the pure ``train_step(state, batch, rng) -> (state, metrics)``.

    Args:
      config: the training config.
      encoder, head: from :func:`hamjax.model_builder.build_modules`.
      lr_schedule: logged as ``lr``.
      num_classes: ``C``.
      mesh: when given, the concatenated clean+augmented batch is constrained to stay split
        over ``data`` (each device keeps its own rows; no reshuffle).
      margin_fn: the margin warm-up ``step -> scale`` (default: :func:`hamjax.heads.margin_schedule`
        of ``head.margin_warmup_steps``; a sweep passes one with traced warm-up steps).

    The batch is ``{"waveform": [B, S] float32, "label": [B] int32}`` and optionally
    ``"waveform_aug": [B, S]``. With it, rows are interleaved ``(clean_0, aug_0, clean_1, ...)``
    so each device's clean and augmented rows stay on that device, and

    .. math:: L = \\frac1B\\sum_i \\ell(x_i) + \\frac1B\\sum_i \\ell(\\tilde x_i)

    (the authors' ``mean(clean) + mean(aug)``); without it ``L = mean(clean)``.
    """
    feat_kwargs = feature_kwargs(config)
    spec = config.features.spec_augment.to_dict()
    spec_on = bool(spec.pop("enabled", True))
    if margin_fn is None:
        margin_fn = heads.margin_schedule(int(config.head.margin_warmup_steps))
    hyperbolic = heads.is_hyperbolic(config.head.name)
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
