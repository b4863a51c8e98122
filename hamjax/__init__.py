"""hamjax: hyperbolic additive-margin softmax for speaker verification, in JAX/Flax.

Submodules are imported lazily so that ``from hamjax import poincare`` pulls in only the
geometry (and JAX), never TensorFlow, grain or matplotlib.

Public submodules:
  poincare   Poincaré-ball geometry with an explicit curvature ``c``.
  losses     Pure logit functions: cosine (AM/AAM/RAM) and hyperbolic (H/HAM) margins.
  heads      Flax classification heads chosen by name, margin schedules.
  frontend   JAX log-mel / Kaldi fbank features and SpecAugment.
  models     Flax encoders (ECAPA-TDNN, ResNet34) chosen by name, ``embed``.
  data       Synthetic corpus, TFDS builders, grain input pipeline, augmentation.
  metrics    EER and minDCF (numpy).
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "analysis",
    "checkpointing",
    "config_lib",
    "data",
    "eval_lib",
    "frontend",
    "heads",
    "io_utils",
    "losses",
    "metrics",
    "models",
    "poincare",
    "scoring",
    "train_lib",
    "train_state",
    "trials",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'hamjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
