"""Work directories from PyTorch checkpoints of the reference encoders.

:func:`import_torch` turns a state dict of the authors' / TaoRuijie's ECAPA-TDNN or
WeSpeaker's ResNet into an ordinary hamjax work directory::

    OUTPUT/config.json        the recipe of the architecture (features, model, a cosine head)
    OUTPUT/final/             the encoder's weights (orbax; final_info.json inside)
    OUTPUT/provenance.json    where they came from: file, sha256, architecture, key prefix

so that ``eval.py``, the ``hamjax`` command (embed, score, export) and fine-tuning
(``train.py --config.train.init_from=OUTPUT``) work on it. The weights are ported by
:func:`hamjax.models.convert.from_torch_state_dict`; the checkpoint's classification head (its
training speakers) is not imported: scoring is cosine, and fine-tuning trains a new head.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from hamjax import checkpointing, config_lib, frontend, io_utils, model_builder, models

__all__ = [
    "ARCHITECTURES",
    "config_for",
    "import_torch",
    "load_state_dict",
    "variables_from_torch",
]

#: ``--arch`` -> (model section, features section): the encoder and the features it was
#: trained with (the authors' ECAPA-TDNN: their log-mel; WeSpeaker's ResNets: Kaldi fbank).
ARCHITECTURES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ecapa_tdnn_c1024": (dict(name="ecapa_tdnn", channels=1024, embed_dim=192), {"kind": "logmel"}),
    "ecapa_tdnn_c512": (dict(name="ecapa_tdnn", channels=512, embed_dim=192), {"kind": "logmel"}),
    "resnet34": (dict(name="resnet34", embed_dim=256, m_channels=32), {"kind": "fbank"}),
    "resnet18": (dict(name="resnet18", embed_dim=256, m_channels=32), {"kind": "fbank"}),
}
# Keys whose presence identifies each family's prefix ("speaker_encoder.", "module." ...).
_ANCHORS = ("conv1.weight", "layer1.conv1.weight", "seg_1.weight", "fc6.weight")


def config_for(arch: str) -> ml_collections.ConfigDict:
    """The resolved config of an imported ``arch``: its encoder and features, a cosine head.

    Raises:
      ValueError: an unknown ``arch`` (the valid ones are named).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"--arch {arch!r} is unknown; expected one of {sorted(ARCHITECTURES)}")
    model, features = ARCHITECTURES[arch]
    config = config_lib.base_config()
    config.model.update(model)
    config.features.kind = features["kind"]
    # Scoring is cosine (no class table is imported); a 1-class head keeps the layout.
    config.head.name = "softmax_scaled"
    config.head.scale = 30.0
    config.head.num_classes = 1
    config.train.steps_per_epoch = 1
    config.eval.protocol = "full"
    config.eval.score = "cosine"
    return config


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A state dict from a PyTorch file (``torch.load``, CPU) or an ``.npz`` of arrays.

    A checkpoint that wraps the weights (``{"state_dict": ...}``, ``{"model": ...}``) is
    unwrapped.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a state dict (the file is named), or torch is needed and missing.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    try:
        import torch
    except ImportError as err:
        raise ValueError(
            f"{path}: reading a PyTorch checkpoint needs torch (pip install torch), or save it "
            "as .npz: numpy.savez(f, **{k: v.numpy() for k, v in state_dict.items()})"
        ) from err
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch raises many kinds for a bad file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(blob, Mapping) and isinstance(blob.get(key), Mapping):
            blob = blob[key]
    if not isinstance(blob, Mapping) or not blob:
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(blob)}")
    return {k: v.detach().cpu().numpy() for k, v in blob.items() if hasattr(v, "detach")}


def _prefix(state_dict: Mapping[str, Any]) -> str:
    """The key prefix in front of the encoder's names (``""``, ``"speaker_encoder."`` ...)."""
    for key in sorted(state_dict, key=len):
        for anchor in _ANCHORS:
            if key.endswith(anchor):
                return key[: -len(anchor)]
    raise ValueError(
        "state dict: found none of the encoder keys "
        f"{', '.join(_ANCHORS)} (with any prefix); is this an ECAPA-TDNN or ResNet checkpoint?"
    )


def variables_from_torch(
    config: ml_collections.ConfigDict, state_dict: Mapping[str, Any], *, prefix: str | None = None
) -> dict[str, Any]:
    """Model variables of ``config`` with the encoder from ``state_dict`` and a fresh head.

    Raises:
      ValueError: a missing key or a shape mismatch (named by
        :func:`hamjax.models.convert.from_torch_state_dict`), or no encoder keys at all.
    """
    prefix = _prefix(state_dict) if prefix is None else prefix
    encoder, head = model_builder.build_modules(config)
    feats = model_builder.feature_kwargs(config)
    enc_vars = models.convert.from_torch_state_dict(
        encoder, state_dict, num_features=frontend.num_features(**feats), prefix=prefix
    )
    fresh = model_builder.init_variables(config, encoder, head, jax.random.PRNGKey(0))
    return {
        "params": {"encoder": enc_vars["params"], "head": fresh["params"]["head"]},
        "batch_stats": {"encoder": enc_vars.get("batch_stats", {})},
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_torch(
    arch: str,
    state_dict_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    prefix: str | None = None,
) -> Path:
    """Writes a work directory holding the encoder of a PyTorch checkpoint.

    Args:
      arch: a key of :data:`ARCHITECTURES`.
      state_dict_path: the checkpoint (see :func:`load_state_dict`).
      output: the work directory to create (must not hold a config.json yet).
      prefix: the encoder's key prefix; None = detected.

    Returns:
      ``output``.

    Raises:
      ValueError: unknown arch, a checkpoint of another architecture or size (the key and the
        shapes are named), an existing work directory.
    """
    config = config_for(arch)
    output = Path(output).expanduser().absolute()
    if (output / checkpointing.CONFIG_FILE).exists():
        raise ValueError(f"{output} is already a work directory; choose another --output")
    src = Path(state_dict_path).expanduser().absolute()
    state_dict = load_state_dict(src)
    prefix = _prefix(state_dict) if prefix is None else prefix
    variables = variables_from_torch(config, state_dict, prefix=prefix)
    output.mkdir(parents=True, exist_ok=True)
    checkpointing.save_final(output, variables, {"step": 0, "imported_from": str(src)})
    io_utils.write_json(
        output / "provenance.json",
        {
            "source": str(src),
            "sha256": _sha256(src),
            "arch": arch,
            "prefix": prefix,
            "num_tensors": len(state_dict),
            "imported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "note": "encoder weights only; the checkpoint's classification head is not imported",
        },
    )
    io_utils.write_json(output / checkpointing.CONFIG_FILE, config.to_dict())  # last: complete
    return output
