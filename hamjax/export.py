"""Portable exports of a trained model's embedding function: waveforms -> embeddings.

The exported function is the one :class:`hamjax.inference.Verifier` runs
(:meth:`~hamjax.inference.Verifier.embed_waveforms_fn`), features included, with the weights
baked in as constants::

    embed(waveforms [B, S] float32 at 16 kHz, mask [B, S] bool) -> embeddings [B, E] float32

``mask`` is True on each row's valid samples, which form a prefix of the row; what lies past
them is ignored (pad with anything), so a row's embedding does not depend on the batch it is
in. Three formats, each written beside a ``contract.json`` that states the inputs, the
embedding size, how to score two embeddings and the decision threshold:

==============  ==========================================  ===============================
format          file(s)                                      shapes
==============  ==========================================  ===============================
``stablehlo``   ``embed.stablehlo`` (``jax.export``)         symbolic ``b``, ``s``
``savedmodel``  ``saved_model/`` (``jax2tf``), signature     symbolic ``b``, ``s`` (or static
                ``serving_default(waveforms, mask)``         for TFLite)
``onnx``        ``embed.onnx`` (``jax2onnx``)                static ``[batch, samples]``
==============  ==========================================  ===============================

The StableHLO file runs with ``jax`` alone (no hamjax, no flax)::

    import json, jax, numpy as np
    exported = jax.export.deserialize(open("embed.stablehlo", "rb").read())
    contract = json.load(open("contract.json"))            # sample_rate, shapes, scoring ...
    wavs = [np.zeros(16000, np.float32), np.zeros(24000, np.float32)]  # 16 kHz float32
    batch = np.zeros((len(wavs), max(map(len, wavs))), np.float32)
    mask = np.zeros(batch.shape, bool)
    for i, w in enumerate(wavs):
        batch[i, : len(w)], mask[i, : len(w)] = w, True
    emb = np.asarray(exported.call(batch, mask))           # [2, E] float32

The SavedModel with TensorFlow alone::

    import tensorflow as tf
    model = tf.saved_model.load("saved_model")
    emb = model.signatures["serving_default"](waveforms=batch, mask=mask)["embeddings"]

The ONNX model with onnxruntime alone (pad rows to the contract's fixed length and batch)::

    import onnxruntime as ort
    emb = ort.InferenceSession("embed.onnx").run(None, {"waveforms": batch, "mask": mask})[0]

Why the formats differ (details and measured speeds in ``docs/EXPORT.md``): ``jax2tf`` emits
the StableHLO module as one ``XlaCallModule`` op, which tf2onnx cannot read, so ONNX comes from
``jax2onnx``; jax2onnx 0.13 cannot lower symbolic dimensions (its ``lax.pad`` lowering turns a
JAX dimension expression into an ``int``), so the ONNX model has static shapes. TFLite converts
the SavedModel only when both its batch and its length are static: a symbolic dimension makes
the frontend's gathers (``take_along_axis`` of the log-mel reflect padding, slices with
symbolic bounds) dynamic-shaped, which the TFLite converter refuses.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from hamjax import __version__, io_utils, model_builder
from hamjax.constants import SAMPLE_RATE, seconds_to_samples

if TYPE_CHECKING:
    from hamjax.inference import Verifier

__all__ = [
    "CONTRACT_FILE",
    "FORMATS",
    "ONNX_FILE",
    "SAVEDMODEL_DIR",
    "STABLEHLO_FILE",
    "contract",
    "export",
    "export_onnx",
    "export_savedmodel",
    "export_stablehlo",
    "min_samples",
]

log = logging.getLogger(__name__)

FORMATS = ("stablehlo", "savedmodel", "onnx")
CONTRACT_FILE = "contract.json"
STABLEHLO_FILE = "embed.stablehlo"
SAVEDMODEL_DIR = "saved_model"
ONNX_FILE = "embed.onnx"
INPUT_NAMES = ("waveforms", "mask")
OUTPUT_NAME = "embeddings"
#: Platforms the StableHLO module and the SavedModel are lowered for (cross-lowering needs no
#: GPU here; the module picks the one it runs on).
DEFAULT_PLATFORMS = ("cpu", "cuda")
#: The ONNX model's fixed input length (padded with mask False; longer audio must be cut).
DEFAULT_ONNX_SECONDS = 10.0
#: ONNX opset: 20+ has the DFT form jax2onnx emits (axis as an input).
ONNX_OPSET = 23


# --------------------------------------------------------------------------- the function


def min_samples(verifier: Verifier) -> int:
    """The shortest padded length ``S`` the frontend accepts: one frame.

    ``logmel`` (centred STFT) needs ``S > n_fft // 2``; ``fbank`` (snip_edges) one whole window.
    This is the exported functions' ``s >= ...`` constraint. (Each row should still hold at
    least ``verifier.min_seconds`` of audio: shorter audio gives a meaningless embedding, and
    :class:`~hamjax.inference.Verifier` refuses it.)
    """
    kwargs = dict(model_builder.feature_kwargs(verifier.config))
    kind = kwargs.pop("kind", "logmel")
    if kind == "logmel":
        return int(kwargs.get("n_fft", 512)) // 2 + 1
    rate = kwargs.get("sample_rate", SAMPLE_RATE)
    return int(rate * float(kwargs.get("frame_length_ms", 25.0)) * 0.001)


def _embed_fn(verifier: Verifier) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``f(waveforms, mask) -> [B, E]`` with the encoder's variables closed over (constants)."""
    embed = verifier.embed_waveforms_fn()
    variables = verifier.encoder_variables

    def f(waveforms: jax.Array, mask: jax.Array) -> jax.Array:
        return embed(variables, waveforms, mask)

    return f


def _input_specs(
    verifier: Verifier, batch_size: int | None, num_samples: int | None
) -> tuple[list[jax.ShapeDtypeStruct], list[Any], list[str]]:
    """Input specs (symbolic where None), the JSON shape ``[b, s]`` and the constraints."""
    low = min_samples(verifier)
    if num_samples is not None and int(num_samples) < low:
        raise ValueError(
            f"num_samples={num_samples}: the frontend needs at least {low} samples per row"
        )
    names = ("b" if batch_size is None else str(int(batch_size))) + ", "
    names += "s" if num_samples is None else str(int(num_samples))
    constraints = [f"s >= {low}"] if num_samples is None else []
    dims = jax.export.symbolic_shape(names, constraints=tuple(constraints))
    specs = [
        jax.ShapeDtypeStruct(dims, jnp.float32),
        jax.ShapeDtypeStruct(dims, jnp.bool_),
    ]
    shape = [d if isinstance(d, int) else str(d) for d in dims]
    return specs, shape, constraints


def _embedding_size(verifier: Verifier) -> int:
    spec = jax.ShapeDtypeStruct((1, SAMPLE_RATE), jnp.float32)
    out = jax.eval_shape(_embed_fn(verifier), spec, jax.ShapeDtypeStruct(spec.shape, jnp.bool_))
    return int(out.shape[-1])


# --------------------------------------------------------------------------- the contract


def _first_report(verifier: Verifier) -> tuple[float | None, dict[str, Any] | None]:
    """``eer_threshold`` of ``WORKDIR/eval/<first trial list>/report.json`` and its origin."""
    workdir = getattr(verifier, "workdir", None)
    trials = verifier.config.get("eval", {}).get("trials", ())
    if workdir is None or not trials:
        return None, None
    name = Path(str(trials[0])).stem
    path = Path(workdir) / "eval" / name / "report.json"
    if not path.is_file():
        return None, None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s); the contract's threshold is null", path, err)
        return None, None
    threshold = report.get("eer_threshold")
    source = {
        "report": str(path),
        "trial_list": name,
        "protocol": report.get("protocol"),
        "scoring": report.get("scoring"),
        "normalisation": (report.get("normalisation") or {}).get("kind"),
        "step": (report.get("checkpoint") or {}).get("step"),
    }
    return (None if threshold is None else float(threshold)), source


def contract(
    verifier: Verifier,
    *,
    fmt: str,
    files: Mapping[str, str],
    shape: Sequence[Any],
    constraints: Sequence[str] = (),
    platforms: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``contract.json`` of an export: what goes in, what comes out, how to score it.

    Args:
      verifier: the exported model.
      fmt: one of :data:`FORMATS`.
      files: role -> file name inside the export directory.
      shape: the inputs' shape, ``["b", "s"]`` (symbolic) or ``[batch, samples]``.
      constraints: constraints on the symbolic dimensions (``"s >= 257"``).
      platforms: platforms the module was lowered for (StableHLO, SavedModel).

    Returns:
      A JSON-serialisable dict. ``threshold`` is the EER threshold of the work directory's
      first trial list (``eval/<list>/report.json``) when eval.py has written one, else None;
      ``threshold_source`` says which report, protocol and scoring it belongs to.
    """
    threshold, source = _first_report(verifier)
    size = _embedding_size(verifier)
    poincare = None
    if verifier.scoring == "poincare":
        g = verifier.geometry
        poincare = {
            "c": float(g.c),
            "mode": g.mode,
            "head": g.head_name,
            "feature_clip": float(g.feature_clip),
            "feature_scale": None if g.feature_scale is None else float(g.feature_scale),
            "score": "-distance between the embeddings mapped into the head's ball: "
            "hamjax.losses.hyperbolic_logits(v(x), v(y), None, c=c, scale=1, mode=mode) with "
            "v = hamjax.losses.tangent_features(., c=c, clip=feature_clip, scale=feature_scale) "
            "when either is set, else v(x) = x",
        }
    inputs = [
        {
            "name": INPUT_NAMES[0],
            "shape": list(shape),
            "dtype": "float32",
            "description": f"mono audio in [-1, 1] at {SAMPLE_RATE} Hz, rows padded",
        },
        {
            "name": INPUT_NAMES[1],
            "shape": list(shape),
            "dtype": "bool",
            "description": "True on each row's valid samples (a prefix of the row)",
        },
    ]
    return {
        "format": fmt,
        "files": dict(files),
        "hamjax_version": __version__,
        "step": int(verifier.step),
        "checkpoint": str(getattr(verifier, "checkpoint", "")),
        "sample_rate": SAMPLE_RATE,
        "inputs": inputs,
        "constraints": list(constraints),
        "min_seconds": float(verifier.min_seconds),
        "outputs": [{"name": OUTPUT_NAME, "shape": [shape[0], size], "dtype": "float32"}],
        "embedding_size": size,
        "features": {k: v for k, v in model_builder.feature_kwargs(verifier.config).items()},
        "model": str(verifier.config.model.name),
        "protocol": "full",
        "scoring": verifier.scoring,
        "poincare": poincare,
        "platforms": list(platforms),
        "threshold": threshold,
        "threshold_source": source,
    }


def _fresh_dir(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------- StableHLO


def export_stablehlo(
    verifier: Verifier,
    out_dir: str | os.PathLike[str],
    *,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> Path:
    """Writes ``embed.stablehlo`` (``jax.export``, symbolic ``b`` and ``s``) and its contract.

    The module is lowered for ``platforms`` with batch ``b`` and length ``s >=``
    :func:`min_samples` symbolic, the weights as constants; ``jax.export.deserialize(data)
    .call(waveforms, mask)`` runs it with JAX alone (one compilation per distinct shape).

    Returns:
      The path of ``embed.stablehlo``.
    """
    out = _fresh_dir(out_dir)
    specs, shape, constraints = _input_specs(verifier, None, None)
    exported = jax.export.export(jax.jit(_embed_fn(verifier)), platforms=tuple(platforms))(*specs)
    path = out / STABLEHLO_FILE
    io_utils.write_bytes(path, bytes(exported.serialize()))
    io_utils.write_json(
        out / CONTRACT_FILE,
        contract(
            verifier,
            fmt="stablehlo",
            files={"module": STABLEHLO_FILE},
            shape=shape,
            constraints=constraints,
            platforms=exported.platforms,
        ),
    )
    return path


# --------------------------------------------------------------------------- SavedModel


def export_savedmodel(
    verifier: Verifier,
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    num_samples: int | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> Path:
    """Writes a TensorFlow SavedModel (``jax2tf``) to ``out_dir/saved_model`` and its contract.

    The signature ``serving_default(waveforms, mask) -> {"embeddings": [B, E]}`` runs the
    StableHLO module of :func:`export_stablehlo` inside one ``XlaCallModule`` op (TF Serving,
    ``tf.saved_model.load``).

    Args:
      verifier: the model.
      out_dir: the export directory.
      batch_size: None = symbolic ``b``; an int fixes it.
      num_samples: None = symbolic ``s``; an int fixes it. Fix both for a model that
        ``tf.lite.TFLiteConverter`` converts (with builtin ops only): TFLite refuses the
        dynamic-shaped gathers a symbolic dimension gives the frontend (``docs/EXPORT.md``).
      platforms: platforms the module is lowered for.

    Returns:
      The SavedModel directory.
    """
    import tensorflow as tf
    from jax.experimental import jax2tf

    out = _fresh_dir(out_dir)
    _, shape, constraints = _input_specs(verifier, batch_size, num_samples)
    poly = "(" + ", ".join(str(d) for d in shape) + ")"
    tf_embed = jax2tf.convert(
        _embed_fn(verifier),
        polymorphic_shapes=[poly, poly],
        polymorphic_constraints=tuple(constraints),
        with_gradient=False,
        native_serialization_platforms=tuple(platforms),
    )
    tf_shape = [d if isinstance(d, int) else None for d in shape]
    module = tf.Module()
    module.embed = tf.function(
        lambda waveforms, mask: {OUTPUT_NAME: tf_embed(waveforms, mask)},
        autograph=False,
        input_signature=[
            tf.TensorSpec(tf_shape, tf.float32, name=INPUT_NAMES[0]),
            tf.TensorSpec(tf_shape, tf.bool, name=INPUT_NAMES[1]),
        ],
    )
    target = out / SAVEDMODEL_DIR
    # Written beside the target and renamed, so a failed export leaves no half SavedModel.
    tmp = out / f".{SAVEDMODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tf.saved_model.save(
            module, str(tmp), signatures={"serving_default": module.embed.get_concrete_function()}
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    io_utils.write_json(
        out / CONTRACT_FILE,
        contract(
            verifier,
            fmt="savedmodel",
            files={"saved_model": SAVEDMODEL_DIR, "signature": "serving_default"},
            shape=shape,
            constraints=constraints,
            platforms=platforms,
        ),
    )
    return target


# --------------------------------------------------------------------------- ONNX


def export_onnx(
    verifier: Verifier,
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 1,
    num_samples: int | None = None,
) -> Path:
    """Writes ``embed.onnx`` (``jax2onnx``, static ``[batch_size, num_samples]``) and its contract.

    Rows shorter than ``num_samples`` are padded (mask False); longer audio must be cut by the
    caller. Shapes are static because jax2onnx cannot lower the function with a symbolic
    dimension (see the module docstring); runs on onnxruntime (opset :data:`ONNX_OPSET`).

    Args:
      verifier: the model.
      out_dir: the export directory.
      batch_size: rows per call.
      num_samples: samples per row; None = :data:`DEFAULT_ONNX_SECONDS` at 16 kHz.

    Raises:
      ImportError: jax2onnx is not installed (``pip install 'hamjax[export]'``).
    """
    try:
        import jax2onnx
    except ImportError as err:
        raise ImportError(
            "export_onnx needs jax2onnx (Python >= 3.11): pip install 'hamjax[export]'"
        ) from err
    import jax.extend

    if num_samples is None:
        num_samples = seconds_to_samples(DEFAULT_ONNX_SECONDS)
    out = _fresh_dir(out_dir)
    specs, shape, _ = _input_specs(verifier, int(batch_size), int(num_samples))
    # Traced by JAX first; jax2onnx then sees only the jaxpr's primitives. (Tracing the
    # verifier's jitted function under jax2onnx's patches of jax.numpy would leave that trace
    # in the jit cache, breaking later calls of the same shapes.)
    run = jax.extend.core.jaxpr_as_fun(jax.make_jaxpr(_embed_fn(verifier))(*specs))
    # jax2onnx 0.13 logs a traceback for each of its dm_pix plugins that fails to import under
    # this JAX (jax.interpreters.batching.not_mapped is gone); we use none of them.
    plugins = logging.getLogger("jax2onnx.plugins.plugin_system")
    level = plugins.level
    plugins.setLevel(logging.ERROR)
    try:
        model = jax2onnx.to_onnx(
            lambda waveforms, mask: run(waveforms, mask)[0],
            specs,
            model_name="hamjax_embed",
            opset=ONNX_OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
        )
    finally:
        plugins.setLevel(level)
    path = out / ONNX_FILE
    io_utils.write_bytes(path, model.SerializeToString())
    io_utils.write_json(
        out / CONTRACT_FILE,
        contract(
            verifier,
            fmt="onnx",
            files={"model": ONNX_FILE},
            shape=shape,
            platforms=(),
        )
        | {"onnx_opset": ONNX_OPSET},
    )
    return path


# --------------------------------------------------------------------------- all formats


def export(
    verifier: Verifier,
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = FORMATS,
    onnx_batch_size: int = 1,
    onnx_num_samples: int | None = None,
) -> dict[str, Path]:
    """Exports ``verifier`` in each of ``formats`` to ``out_dir/<format>/`` (``hamjax export``).

    Returns:
      ``{format: path}`` (the module file, the SavedModel directory, the ONNX file).

    Raises:
      ValueError: an unknown format (the valid ones are named).
      ImportError: a converter is missing (the message names the extra).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}: expected some of {list(FORMATS)}")
    out = Path(out_dir).expanduser()
    paths: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "stablehlo":
            paths[fmt] = export_stablehlo(verifier, out / fmt)
        elif fmt == "savedmodel":
            paths[fmt] = export_savedmodel(verifier, out / fmt)
        else:
            paths[fmt] = export_onnx(
                verifier, out / fmt, batch_size=onnx_batch_size, num_samples=onnx_num_samples
            )
        log.info("exported %s to %s", fmt, paths[fmt])
    return paths
