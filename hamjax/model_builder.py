"""Model building: the modules and variables a config describes, for training and inference.

Both the trainer and the inference layer (:mod:`hamjax.inference`) build a model from a config
here, so the two can never disagree on what a config means::

    config  --model-->  encoder   features [B, T, F] -> embeddings [B, E]
            --head--->  head      embeddings [B, E]  -> logits [B, C]
            --features->  feature_kwargs (the frontend's options, computed on device)

Variables have one layout everywhere (training state, checkpoints, ``final/``)::

    {"params": {"encoder": ..., "head": ...}, "batch_stats": {"encoder": ...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hamjax import frontend, heads, models


def feature_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``frontend.compute_features`` keyword arguments of ``config.features``."""
    return frontend.feature_kwargs(config.features)


def build_modules(
    config: ml_collections.ConfigDict, num_classes: int | None = None
) -> tuple[nn.Module, nn.Module]:
    """The encoder and head modules of ``config`` (unbound Flax modules).

    Args:
      config: a config with ``model`` and ``head`` sections.
      num_classes: training speakers ``C``; None = ``config.head.num_classes`` (resolved
        configs, e.g. a work directory's ``config.json``).

    Returns:
      ``(encoder, head)``.
    """
    if num_classes is None:
        num_classes = int(config.head.num_classes)
    return models.from_config(config.model), heads.from_config(config.head, num_classes)


def _init_inputs(config: ml_collections.ConfigDict) -> jax.ShapeDtypeStruct:
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
    config: ml_collections.ConfigDict, encoder: nn.Module, head: nn.Module
) -> dict[str, Any]:
    """``jax.ShapeDtypeStruct`` tree of :func:`init_variables` (no computation)."""
    return jax.eval_shape(lambda: init_variables(config, encoder, head, jax.random.PRNGKey(0)))


def encoder_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder's ``{"params", "batch_stats"}`` out of the model's variables.

    Args:
      variables: ``{"params": {"encoder", "head"}, "batch_stats": {"encoder"}}`` (the
        checkpoint layout; ``head`` may be absent).

    Raises:
      ValueError: another layout (the keys found are named).
    """
    try:
        return {
            "params": variables["params"]["encoder"],
            "batch_stats": variables.get("batch_stats", {}).get("encoder", {}),
        }
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            "model variables: expected {'params': {'encoder', 'head'}, 'batch_stats': "
            f"{{'encoder'}}}}, got keys {list(variables)} ({err})"
        ) from err
