"""hamjax: hyperbolic additive-margin softmax for speaker verification, in JAX/Flax.

Submodules are imported lazily so that ``from hamjax import poincare`` pulls in only the
geometry (and JAX), never TensorFlow, grain or matplotlib.

Public names: ``hamjax.Verifier`` (load a trained model, embed and score audio; see
:mod:`hamjax.inference`).

Public submodules, in import order (each imports only those above it):
  poincare, lorentz  hyperbolic geometry with an explicit curvature ``c``.
  optim, nn          Riemannian optax optimisers; hyperbolic Flax layers.
  losses, heads      logit functions and Flax classification heads chosen by name.
  frontend, models   JAX features; Flax encoders (ECAPA-TDNN, ResNet) chosen by name.
  data               corpora, TFDS builders, grain input pipeline, augmentation.
  model_builder      the modules and variables a config describes.
  train_lib          the trainer (train_state, train_step, checkpointing beneath it).
  inference          ``Verifier``: the one load -> features -> embed -> score chain.
  eval_lib           evaluation stages (scoring, asnorm, metrics, reports, plots).
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "analysis",
    "asnorm",
    "checkpointing",
    "config_lib",
    "constants",
    "data",
    "embedding_cache",
    "embeddings",
    "eval_lib",
    "eval_settings",
    "frontend",
    "heads",
    "inference",
    "io_utils",
    "lorentz",
    "losses",
    "metrics",
    "model_builder",
    "models",
    "nn",
    "optim",
    "plots",
    "poincare",
    "reports",
    "scoring",
    "train_lib",
    "train_state",
    "train_step",
    "trials",
    "validation",
)
_EXPORTS = {"Verifier": "inference"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'hamjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, *_EXPORTS])
