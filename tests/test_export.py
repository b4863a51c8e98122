"""hamjax.export on a really trained (tiny) work directory: each exported artifact, loaded in a
fresh interpreter without hamjax or flax, embeds real files of different lengths as
``Verifier.embed`` does; the contract says what a caller needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf
from conftest import LISTS

from hamjax import export, scoring
from hamjax.embeddings import Embeddings
from hamjax.inference import Verifier

# Float32 throughout. The exported function is the Verifier's own jitted function, called on
# another [B, S] (one padded batch instead of one length bucket per file) and, for the
# SavedModel, compiled by TensorFlow's XLA, for ONNX run by onnxruntime (its DFT instead of
# XLA's FFT). Measured on the tiny model (embedding norms 2.3-3.5): at most 3e-7 (StableHLO),
# 6e-7 (SavedModel), 8e-7 (ONNX), so the 1e-5 holds with a wide margin.
ATOL = 1e-5

_CHILD_CHECK = """
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("hamjax", "flax"))
assert not leaked, f"the loader imported {leaked}"
"""

STABLEHLO_CHILD = (
    """
import sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
data = np.load(sys.argv[2])
out = {}
for key in ("batch", "single"):
    out[key] = np.asarray(exported.call(data[key + "_waveforms"], data[key + "_mask"]))
np.savez(sys.argv[3], **out)
"""
    + _CHILD_CHECK
)

SAVEDMODEL_CHILD = (
    """
import sys
import numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
data = np.load(sys.argv[2])
out = {}
for key in ("batch", "single"):
    w, m = data[key + "_waveforms"], data[key + "_mask"]
    res = serve(waveforms=tf.constant(w), mask=tf.constant(m))
    out[key] = res["embeddings"].numpy()
np.savez(sys.argv[3], **out)
"""
    + _CHILD_CHECK
)

ONNX_CHILD = (
    """
import sys
import numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
data = np.load(sys.argv[2])
feeds = {"waveforms": data["batch_waveforms"], "mask": data["batch_mask"]}
emb = session.run(["embeddings"], feeds)
np.savez(sys.argv[3], batch=emb[0])
"""
    + _CHILD_CHECK
)


@pytest.fixture(scope="module")
def verifier(trained):
    workdir, _ = trained
    return Verifier.from_workdir(workdir)


@pytest.fixture(scope="module")
def utterances(trained, verifier):
    """Three real files of different lengths, their waveforms and ``Verifier.embed`` of each."""
    _, config = trained
    files = sorted(Path(config.eval.wav_root).rglob("*.wav"))
    files = sorted(files, key=lambda f: sf.info(str(f)).frames)
    paths = [files[0], files[len(files) // 2], files[-1]]
    waves = [verifier.load(p) for p in paths]
    assert len({len(w) for w in waves}) == 3
    reference = np.stack([verifier.embed(p) for p in paths])
    return paths, waves, reference


def _batch(waves, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows padded with noise (the mask, not the padding value, marks what is audio)."""
    length = length or max(len(w) for w in waves)
    rng = np.random.default_rng(0)
    batch = rng.uniform(-0.5, 0.5, (len(waves), length)).astype(np.float32)
    mask = np.zeros(batch.shape, bool)
    for i, w in enumerate(waves):
        batch[i, : len(w)], mask[i, : len(w)] = w, True
    return batch, mask


def _run_fresh(tmp: Path, code: str, artifact: Path, waves, length: int | None = None):
    """Runs ``code`` in a new isolated interpreter (no PYTHONPATH, another cwd) on the batch."""
    batch, mask = _batch(waves, length)
    single_w, single_m = _batch(waves[:1])
    inputs = tmp / "inputs.npz"
    np.savez(
        inputs,
        batch_waveforms=batch,
        batch_mask=mask,
        single_waveforms=single_w,
        single_mask=single_m,
    )
    script, outputs = tmp / "child.py", tmp / "outputs.npz"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(artifact), str(inputs), str(outputs)],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(np.load(outputs))


def _check_contract(ctr: dict, verifier: Verifier, fmt: str, shape: list) -> None:
    assert ctr["format"] == fmt
    assert ctr["sample_rate"] == 16000
    assert [(i["name"], i["shape"], i["dtype"]) for i in ctr["inputs"]] == [
        ("waveforms", shape, "float32"),
        ("mask", shape, "bool"),
    ]
    assert ctr["embedding_size"] == 16  # the tiny config's model.embed_dim
    assert ctr["outputs"] == [{"name": "embeddings", "shape": [shape[0], 16], "dtype": "float32"}]
    assert ctr["scoring"] == "cosine" and ctr["poincare"] is None
    assert ctr["protocol"] == "full"
    assert ctr["hamjax_version"] == "0.1.0"
    assert ctr["step"] == verifier.step == 2
    assert ctr["threshold"] is None  # eval.py has not run in this work directory


def test_stablehlo_runs_with_jax_alone(verifier, utterances, tmp_path):
    paths, waves, reference = utterances
    path = export.export_stablehlo(verifier, tmp_path / "stablehlo")
    assert path == tmp_path / "stablehlo" / "embed.stablehlo"
    ctr = json.loads((path.parent / "contract.json").read_text())
    _check_contract(ctr, verifier, "stablehlo", ["b", "s"])
    assert ctr["constraints"] == [f"s >= {export.min_samples(verifier)}"] == ["s >= 257"]
    assert set(ctr["platforms"]) == {"cpu", "cuda"}

    # Symbolic b and s: a batch of three padded past the longest file, then one file alone.
    length = len(max(waves, key=len)) + 1234
    out = _run_fresh(tmp_path, STABLEHLO_CHILD, path, waves, length)
    np.testing.assert_allclose(out["batch"], reference, atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["single"], reference[:1], atol=ATOL, rtol=0)


def test_savedmodel_runs_with_tensorflow_alone(verifier, utterances, tmp_path):
    paths, waves, reference = utterances
    path = export.export_savedmodel(verifier, tmp_path / "tf", platforms=("cpu",))
    assert path == tmp_path / "tf" / "saved_model" and (path / "saved_model.pb").is_file()
    assert not list(path.parent.glob(".*tmp"))
    ctr = json.loads((path.parent / "contract.json").read_text())
    _check_contract(ctr, verifier, "savedmodel", ["b", "s"])
    assert ctr["files"] == {"saved_model": "saved_model", "signature": "serving_default"}

    out = _run_fresh(tmp_path, SAVEDMODEL_CHILD, path, waves, len(max(waves, key=len)) + 999)
    np.testing.assert_allclose(out["batch"], reference, atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["single"], reference[:1], atol=ATOL, rtol=0)


def test_onnx_runs_with_onnxruntime_alone(verifier, utterances, tmp_path):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    paths, waves, reference = utterances
    length = len(max(waves, key=len)) + 500
    path = export.export_onnx(verifier, tmp_path / "onnx", batch_size=3, num_samples=length)
    ctr = json.loads((path.parent / "contract.json").read_text())
    _check_contract(ctr, verifier, "onnx", [3, length])
    assert ctr["onnx_opset"] == export.ONNX_OPSET and ctr["constraints"] == []

    out = _run_fresh(tmp_path, ONNX_CHILD, path, waves, length)
    np.testing.assert_allclose(out["batch"], reference, atol=ATOL, rtol=0)
    # The conversion traced the Verifier's function; its later calls are unaffected.
    np.testing.assert_array_equal(verifier.embed(paths[0]), reference[0])


def test_contract_threshold_comes_from_the_first_lists_report(verifier, trained):
    workdir, _ = trained
    kwargs = dict(fmt="stablehlo", files={"module": "embed.stablehlo"}, shape=["b", "s"])
    assert export.contract(verifier, **kwargs)["threshold"] is None
    report = workdir / "eval" / LISTS[0] / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(
        json.dumps(
            {
                "eer_threshold": 0.4375,
                "protocol": "full",
                "scoring": "cosine",
                "normalisation": {"kind": "none"},
                "checkpoint": {"which": "latest", "step": 2},
            }
        )
    )
    # Another list's report is not the first list's.
    (workdir / "eval" / LISTS[1]).mkdir()
    (workdir / "eval" / LISTS[1] / "report.json").write_text('{"eer_threshold": 9.0}')
    try:
        ctr = export.contract(verifier, **kwargs)
    finally:
        report.unlink()
    assert ctr["threshold"] == 0.4375
    assert ctr["threshold_source"]["trial_list"] == LISTS[0]
    assert ctr["threshold_source"]["scoring"] == "cosine"
    assert ctr["threshold_source"]["step"] == 2


def test_poincare_contract_scores_like_the_verifier(trained, utterances):
    """The contract's curvature and mode are all a caller needs to score as the Verifier."""
    workdir, config = trained
    paths, _, reference = utterances
    hyperbolic = Verifier.from_workdir(workdir, scoring_kind="poincare")
    ctr = export.contract(hyperbolic, fmt="stablehlo", files={}, shape=["b", "s"])
    assert ctr["scoring"] == "poincare"
    assert ctr["poincare"]["c"] == pytest.approx(config.head.c)
    assert ctr["poincare"]["mode"] == config.head.mode
    geometry = scoring.BallGeometry(c=ctr["poincare"]["c"], mode=ctr["poincare"]["mode"])
    emb = Embeddings(("a", "b"), reference[:2])
    score = scoring.score_trials(
        emb, np.array([0]), np.array([1]), score="poincare", geometry=geometry
    )
    assert score[0] == pytest.approx(hyperbolic.score(paths[0], paths[1]), abs=1e-5)


def test_bad_requests_fail_with_clear_errors(verifier, tmp_path):
    with pytest.raises(ValueError, match=r"unknown export format\(s\) \['tflite'\]"):
        export.export(verifier, tmp_path, formats=["tflite"])
    with pytest.raises(ValueError, match="num_samples=100: the frontend needs at least 257"):
        export.export_savedmodel(verifier, tmp_path, batch_size=1, num_samples=100)


def test_stablehlo_symbolic_length_with_fbank(verifier, tmp_path):
    """The other frontend (Kaldi fbank, snip_edges framing) exports with a symbolic length too;
    one module serves lengths that are and are not multiples of the hop. (The trained weights
    fit: both frontends give 80 features. A ResNet encoder exports the same way; it is left out
    here for its compile time.)"""
    config = verifier.config.copy_and_resolve_references()
    config.features.kind = "fbank"
    model = Verifier(config, verifier.variables)
    path = export.export_stablehlo(model, tmp_path / "fbank", platforms=("cpu",))
    ctr = json.loads((path.parent / "contract.json").read_text())
    assert ctr["constraints"] == ["s >= 400"] and ctr["features"]["kind"] == "fbank"
    exported = jax.export.deserialize(path.read_bytes())
    rng = np.random.default_rng(1)
    waves = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (8000, 5999)]
    want = np.asarray(model.embed_waveforms_fn()(model.encoder_variables, *_batch(waves)))
    for length in (8000, 12345):  # the same rows, padded to two lengths
        got = np.asarray(exported.call(*_batch(waves, length)))
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
