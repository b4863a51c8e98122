"""Port PyTorch checkpoints of the reference encoders into hamjax variables.

Supported: the HAM-Softmax authors' / TaoRuijie's ``ECAPA_TDNN`` (keys ``conv1.weight``,
``layer1.convs.0.weight``, ``layer1.se.se.1.weight``, ``attention.0.weight``, ``fc6.weight``,
...) and WeSpeaker's ``ResNet`` (``layer2.0.shortcut.0.weight``, ``seg_1.weight``, ...). The
front-end buffers and the classification head in those checkpoints are ignored.

Layout: a PyTorch weight ``[out, in, *kernel]`` becomes a flax kernel by reversing all axes:
``Conv1d [out, in, k] -> [k, in, out]``, ``Linear [out, in] -> [in, out]`` and, because
WeSpeaker's image is ``[B, 1, F, T]`` while ours is ``[B, T, F, 1]``,
``Conv2d [out, in, kF, kT] -> [kT, kF, in, out]``. BatchNorm ``weight/bias`` become
``scale/bias`` and ``running_mean/running_var`` become ``batch_stats`` ``mean/var``.

Example (no torch import needed by hamjax itself)::

    sd = {k: v.numpy() for k, v in torch.load("pretrain.model").items()}
    enc = models.create_encoder("ecapa_tdnn_c1024")
    variables = convert.from_torch_state_dict(enc, sd, prefix="speaker_encoder.")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hamjax.models.ecapa_tdnn import ECAPATDNN
from hamjax.models.resnet import ResNet

# flax module name -> torch attribute path, for the names that differ.
_ECAPA_RENAMES = (
    (r"^(layer\d+)\.convs_(\d+)$", r"\1.convs.\2"),
    (r"^(layer\d+)\.bns_(\d+)$", r"\1.bns.\2"),
    (r"^(layer\d+)\.se\.conv1$", r"\1.se.se.1"),  # Sequential(pool, conv, relu, conv, sigmoid)
    (r"^(layer\d+)\.se\.conv2$", r"\1.se.se.3"),
    (r"^attention\.conv1$", "attention.0"),  # Sequential(conv, relu, bn, tanh, conv, softmax)
    (r"^attention\.bn$", "attention.2"),
    (r"^attention\.conv2$", "attention.4"),
)
_RESNET_RENAMES = (
    (r"^(layer\d+)_(\d+)\.shortcut_conv$", r"\1.\2.shortcut.0"),
    (r"^(layer\d+)_(\d+)\.shortcut_bn$", r"\1.\2.shortcut.1"),
    (r"^(layer\d+)_(\d+)\.", r"\1.\2."),
)
_PARAM_NAMES = {"kernel": "weight", "bias": "bias", "scale": "weight"}
_STAT_NAMES = {"mean": "running_mean", "var": "running_var"}


def _torch_module_path(encoder: nn.Module, flax_path: str) -> str:
    renames = _ECAPA_RENAMES if isinstance(encoder, ECAPATDNN) else _RESNET_RENAMES
    for pattern, repl in renames:
        flax_path = re.sub(pattern, repl, flax_path)
    return flax_path


def from_torch_state_dict(
    encoder: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    num_features: int = 80,
    prefix: str = "",
) -> dict[str, Any]:
    """Builds ``{"params", "batch_stats"}`` for ``encoder`` from a PyTorch ``state_dict``.

    Args:
      encoder: an :class:`ECAPATDNN` or :class:`ResNet` from ``create_encoder``; its
        hyper-parameters must match the checkpoint's.
      state_dict: name -> array (numpy arrays, or anything ``np.asarray`` accepts, e.g. CPU
        torch tensors).
      num_features: feature bins ``F`` the checkpoint was trained on (80).
      prefix: stripped from every key before matching (``"speaker_encoder."`` for the
        authors' checkpoints, ``"module."`` for DDP-saved ones).

    Returns:
      Variables with float32 leaves, ready for ``encoder.apply``.

    Raises:
      ValueError: a needed key is missing (naming it) or a shape differs (naming key, both
        shapes); ``encoder`` is not a supported type.
    """
    if not isinstance(encoder, ECAPATDNN | ResNet):
        raise ValueError(
            f"from_torch_state_dict: unsupported encoder {type(encoder).__name__}; "
            "expected ECAPATDNN or ResNet"
        )
    sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    target = jax.eval_shape(
        lambda: encoder.init(jax.random.key(0), jnp.zeros((1, 8, num_features), jnp.float32))
    )

    def fetch(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        keys = [p.key for p in path]
        collection, modules, name = keys[0], keys[1:-1], keys[-1]
        torch_name = (_PARAM_NAMES if collection == "params" else _STAT_NAMES)[name]
        key = f"{_torch_module_path(encoder, '.'.join(modules))}.{torch_name}"
        if key not in sd:
            raise ValueError(
                f"from_torch_state_dict: key {prefix + key!r} (for flax "
                f"{collection}/{'/'.join(modules)}/{name}) is missing from the state_dict"
            )
        value = np.asarray(sd[key], dtype=np.float32)
        if name == "kernel":
            value = np.transpose(value, tuple(range(value.ndim))[::-1])
        if value.shape != tuple(leaf.shape):
            raise ValueError(
                f"from_torch_state_dict: {prefix + key!r} has shape {value.shape} after layout "
                f"conversion, but the encoder expects {tuple(leaf.shape)}; do the encoder's "
                "hyper-parameters (channels, embed_dim, num_features) match the checkpoint?"
            )
        return jnp.asarray(value)

    return jax.tree_util.tree_map_with_path(fetch, target)
