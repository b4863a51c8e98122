"""Speaker encoders chosen by name, and the evaluation ``embed`` function.

Every encoder is a Flax Linen module called as::

    variables = encoder.init(rng, feats, frame_mask)                   # {"params", "batch_stats"}
    emb = encoder.apply(variables, feats [B, T, F], frame_mask [B, T] | None, train=False)
    emb, updates = encoder.apply(variables, feats, frame_mask, train=True,
                                 mutable=["batch_stats"])              # emb: [B, E] float32

Padded frames (``frame_mask`` False) do not change an utterance's embedding in eval mode, and
in train mode BatchNorm statistics are taken over valid frames only. Checkpoints of the
reference PyTorch models (the authors' ECAPA-TDNN, WeSpeaker's ResNet) load with
:func:`hamjax.models.convert.from_torch_state_dict`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from hamjax import models
    >>> enc = models.create_encoder("ecapa_tdnn", channels=64)
    >>> feats = jnp.zeros((2, 50, 80))
    >>> variables = enc.init(jax.random.key(0), feats)
    >>> enc.apply(variables, feats).shape
    (2, 192)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hamjax.constants import SAMPLE_RATE
from hamjax.models import convert, layers
from hamjax.models.ecapa_tdnn import ECAPATDNN
from hamjax.models.resnet import ResNet, resnet18, resnet34

__all__ = [
    "ECAPATDNN",
    "ENCODERS",
    "ResNet",
    "convert",
    "create_encoder",
    "from_config",
    "layers",
    "make_embed_fn",
    "num_params",
]


def _ecapa(**kwargs: Any) -> ECAPATDNN:
    return ECAPATDNN(**kwargs)


def _preset(factory: Callable[..., nn.Module], name: str, **fixed: Any) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        # Agreeing values are fine (a config always carries model.channels); only a
        # contradiction is an error.
        clash = sorted(k for k in set(fixed) & set(kwargs) if kwargs[k] != fixed[k])
        if clash:
            raise ValueError(
                f"encoder {name!r} fixes {', '.join(f'{k}={fixed[k]!r}' for k in clash)}; "
                f"got {', '.join(f'{k}={kwargs[k]!r}' for k in clash)} (use 'ecapa_tdnn' "
                "to choose them freely)"
            )
        return factory(**{**kwargs, **fixed})

    build.__doc__ = f"Preset {name!r}: {factory.__name__} with {fixed}."
    return build


# name -> (factory, accepted keyword arguments). Factories return unbound Linen modules.
_ECAPA_KWARGS = (
    "channels",
    "embed_dim",
    "scale",
    "kernel_size",
    "dilations",
    "se_bottleneck",
    "mfa_channels",
    "attention_channels",
    "dtype",
)
_RESNET_KWARGS = ("m_channels", "embed_dim", "dtype")

ENCODERS: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "ecapa_tdnn": (_ecapa, _ECAPA_KWARGS),
    "ecapa_tdnn_c512": (
        _preset(_ecapa, "ecapa_tdnn_c512", channels=512),
        _ECAPA_KWARGS,  # "channels" is accepted so that the preset can explain the clash
    ),
    "ecapa_tdnn_c1024": (
        _preset(_ecapa, "ecapa_tdnn_c1024", channels=1024),
        _ECAPA_KWARGS,  # "channels" is accepted so that the preset can explain the clash
    ),
    "resnet34": (resnet34, _RESNET_KWARGS),
    "resnet18": (resnet18, _RESNET_KWARGS),
}


def create_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Builds an encoder by registry name.

    Names: ``ecapa_tdnn`` (``channels=1024``, ``embed_dim=192``, ...), ``ecapa_tdnn_c512``,
    ``ecapa_tdnn_c1024``, ``resnet34`` (``embed_dim=256``, ``m_channels=32``), ``resnet18``.
    Every encoder takes ``dtype`` (compute dtype, a dtype or its name such as ``"bfloat16"``;
    parameters are always float32).

    Args:
      name: registry name (see :data:`ENCODERS`).
      **kwargs: the encoder's hyper-parameters.

    Returns:
      An unbound ``flax.linen.Module``.

    Raises:
      ValueError: unknown name (the message lists the valid ones), an unknown keyword argument
        (listing the accepted ones) or an invalid value (naming the field and the value).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid names: {', '.join(sorted(ENCODERS))}")
    factory, accepted = ENCODERS[name]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"encoder {name!r} got unexpected argument(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    if "dtype" in kwargs:
        layers.check_dtype(name, kwargs["dtype"])
        kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    if "dilations" in kwargs:
        kwargs["dilations"] = tuple(kwargs["dilations"])  # config lists -> hashable tuple
    return factory(**kwargs)


#: Compute dtypes a config may ask for (float16 would need loss scaling, which hamjax omits).
COMPUTE_DTYPES = ("float32", "bfloat16")


def _config_kwargs(model: Any) -> dict[str, Any]:
    """Encoder keyword arguments of a config's ``model`` section.

    One section serves every encoder: fields that only another registered encoder understands
    (e.g. ECAPA's ``dilations`` for a ResNet) are dropped, while fields no encoder knows are
    kept so that :func:`create_encoder` names them in its error (a typo is caught).
    """
    items = model.to_dict() if hasattr(model, "to_dict") else dict(model)
    name = items.pop("name")
    accepted = set(ENCODERS.get(name, (None, ()))[1])
    known = set().union(*(set(spec[1]) for spec in ENCODERS.values()))
    return {k: v for k, v in items.items() if k in accepted or k not in known}


def from_config(model: Any) -> nn.Module:
    """The encoder of a config's ``model`` section (``name`` and its hyper-parameters)."""
    return create_encoder(model["name"], **_config_kwargs(model))


def validate_config(model: Any) -> None:
    """Checks a config's ``model`` section by building its (unbound) encoder.

    Raises:
      ValueError: ``config.model.<field>``, the value and what was expected.
    """
    name = model.get("name")
    if name not in ENCODERS:
        raise ValueError(
            f"config.model.name = {name!r} is invalid: expected one of {sorted(ENCODERS)}"
        )
    dtype = model.get("dtype", "float32")
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"config.model.dtype = {dtype!r} is invalid: expected one of {COMPUTE_DTYPES} (the "
            "compute dtype; parameters stay float32)"
        )
    if "channels" in model and not (isinstance(model["channels"], int) and model["channels"] > 0):
        raise ValueError(
            f"config.model.channels = {model['channels']!r} is invalid: expected a positive integer"
        )
    try:
        from_config(model)
    except ValueError as err:
        raise ValueError(f"config.model: {err}") from err


def num_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree (arrays or ``jax.ShapeDtypeStruct``)."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def make_embed_fn(
    encoder: nn.Module, feature_kwargs: Mapping[str, Any] | None = None
) -> Callable[[Any, jax.Array, jax.Array | None], jax.Array]:
    """Returns ``embed(variables, waveforms [B, S], mask [B, S] | None) -> [B, E]`` float32.

    Features are computed inside with
    ``hamjax.frontend.compute_features(waveforms, mask, **feature_kwargs)`` and the encoder runs
    in eval mode (running BatchNorm statistics), so the function is pure and can be wrapped in
    ``jax.jit`` (recompiling per distinct ``[B, S]``). A ``spec_augment`` entry in
    ``feature_kwargs`` (the config's ``features`` section carries one) is training-only and
    ignored here.

    Args:
      encoder: a module from :func:`create_encoder`.
      feature_kwargs: keyword arguments of ``compute_features`` (``kind`` and the frontend's
        options); a ``ConfigDict`` or any mapping. None = the frontend's defaults.

    Returns:
      The ``embed`` function.
    """
    if feature_kwargs is None:
        feature_kwargs = {}
    if hasattr(feature_kwargs, "to_dict"):  # ml_collections.ConfigDict
        feature_kwargs = feature_kwargs.to_dict()
    if not isinstance(feature_kwargs, Mapping):
        raise ValueError(
            f"make_embed_fn: feature_kwargs must be a mapping, got {type(feature_kwargs).__name__}"
        )
    from hamjax import frontend  # imported here: the frontend is only needed at call time

    kwargs = frontend.feature_kwargs(feature_kwargs)

    # Fail now, with the frontend's own message, on a bad kind or option: trace the features of
    # one second of silence (shapes only, nothing is computed).
    jax.eval_shape(
        lambda w: frontend.compute_features(w, None, **kwargs),
        jax.ShapeDtypeStruct((1, SAMPLE_RATE), jnp.float32),
    )

    def embed(variables: Any, waveforms: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``waveforms [B, S]`` float32 at 16 kHz, ``mask [B, S]`` bool -> ``[B, E]`` float32."""
        feats, frame_mask = frontend.compute_features(waveforms, mask, **kwargs)
        emb = encoder.apply(variables, feats, frame_mask, train=False)
        return emb.astype(jnp.float32)

    return embed
