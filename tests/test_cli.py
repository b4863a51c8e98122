"""The ``hamjax`` command on a really trained tiny work directory: embed, score, import-torch,
and its errors (no mocks: real audio, real orbax checkpoints)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import LISTS, REPO

from hamjax import cli, embedding_store, eval_lib
from hamjax import trials as trials_lib
from hamjax.inference import Verifier


def _hamjax(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "hamjax.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def utterances(trained):
    workdir, config = trained
    tl = trials_lib.read_trials(config.eval.trials[0])
    root = Path(config.eval.wav_root)
    return workdir, root, [root / u for u in tl.utterances()[:6]]


def test_embed_files_folders_lists_and_kaldi_output(utterances, tmp_path):
    workdir, root, files = utterances
    verifier = Verifier.from_workdir(workdir)
    want = np.stack([verifier.embed(f) for f in files])
    # Audio files given one by one.
    out = tmp_path / "emb.npz"
    _hamjax("embed", "--workdir", str(workdir), *map(str, files), "--output", str(out))
    ids, emb = embedding_store.read_embeddings(out)
    assert ids == [str(f) for f in files]
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
    # A list file ("id path") and a Kaldi wav.scp, written as Kaldi ark + scp.
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"utt{i} {f}\n" for i, f in enumerate(files[:3])))
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"scp{i} {f}\n" for i, f in enumerate(files[3:])))
    ark = tmp_path / "emb.ark"
    args = ("embed", "--workdir", str(workdir), str(lst), str(scp), "--output", str(ark))
    _hamjax(*args, "--format", "kaldi")
    ids, emb = embedding_store.read_embeddings(ark)
    assert ids == ["utt0", "utt1", "utt2", "scp0", "scp1", "scp2"]
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
    # A folder: every audio file below it, ids relative to it.
    speaker_dir = files[0].parent
    out = tmp_path / "folder.npz"
    _hamjax("embed", "--workdir", str(workdir), str(speaker_dir), "--output", str(out))
    ids, _ = embedding_store.read_embeddings(out)
    assert files[0].name in ids and all(not Path(i).is_absolute() for i in ids)


def test_embed_resumes_from_finished_chunks(utterances, tmp_path):
    workdir, _, files = utterances
    verifier = Verifier.from_workdir(workdir)
    items = [(f"u{i}", f) for i, f in enumerate(files)]
    store = embedding_store.ChunkedStore(tmp_path / "e.npz")
    calls = []

    class Stop(Exception):
        pass

    real = verifier.embed_protocol

    def once_then_stop(names, load, **kw):
        if calls:
            raise Stop  # killed after the first chunk
        calls.append(list(names))
        return real(names, load, **kw)

    verifier.embed_protocol = once_then_stop
    with pytest.raises(Stop):
        store.run(verifier, items, chunk=2)
    assert len(list(store.parts.glob("chunk-*.npz"))) == 1 and not store.output.exists()
    calls.clear()
    done = []
    verifier.embed_protocol = lambda names, load, **kw: (
        done.append(list(names)) or real(names, load, **kw)
    )
    store.run(verifier, items, chunk=2)
    assert [n for chunk in done for n in chunk] == ["u2", "u3", "u4", "u5"]  # u0, u1 kept
    ids, emb = embedding_store.read_embeddings(store.output)
    assert ids == [u for u, _ in items] and not store.parts.exists()
    np.testing.assert_allclose(emb[0], verifier.embed(files[0]), rtol=1e-5, atol=1e-5)


def test_score_prints_scores_llrs_and_decisions(trained, utterances):
    workdir, config = trained
    _, root, files = utterances
    eval_lib.evaluate(workdir, baseline=False, print_fn=None)
    proc = _hamjax("score", "--workdir", str(workdir), str(files[0]), str(files[1]),
                   str(files[0]), str(files[0]))  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("# LLR = ") and f"calibrated on {LISTS[0]}" in lines[0]
    verifier = Verifier.from_workdir(workdir)
    score = float(lines[1].split()[2])
    assert score == pytest.approx(verifier.score(files[0], files[1]), abs=2e-6)
    cal = json.loads((workdir / "eval" / LISTS[0] / "calibration.json").read_text())
    llr = float(lines[1].split()[3].split("=")[1])
    assert llr == pytest.approx(cal["slope"] * score + cal["offset"], abs=2e-3)
    assert lines[1].split()[4] == ("same" if llr > 0 else "different")
    # A file against itself: cosine 1, and the decision follows the sign of its LLR.
    self_score, self_llr = float(lines[2].split()[2]), float(lines[2].split()[3].split("=")[1])
    assert self_score == pytest.approx(1.0, abs=1e-5)
    assert lines[2].split()[4] == ("same" if self_llr > 0 else "different")


def test_user_errors_are_one_line(trained, tmp_path):
    workdir, _ = trained
    short = tmp_path / "short.wav"
    from hamjax.data import audio

    audio.write_wav(short, np.full(1000, 0.1, np.float32))
    cases = [
        (("embed", "--workdir", str(workdir), str(tmp_path / "nope.wav"), "--output", "x.npz"),
         "nope.wav: no such file or folder"),
        (("embed", "--workdir", str(workdir), str(short), "--output", str(tmp_path / "o.npz")),
         "shorter than the minimum 0.5 s"),
        (("score", "--workdir", str(tmp_path), str(short), str(short)),
         "no resolved training config"),
        (("score", "--workdir", str(workdir), str(short)), "expected pairs of audio files"),
        (("score", "--workdir", str(workdir), "--checkpoint", "99", str(short), str(short)),
         "no checkpoint at step 99"),
    ]  # fmt: skip
    for args, message in cases:
        proc = _hamjax(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 or "embedding" in proc.stderr


def test_help_pages():
    for args in ((), ("embed",), ("score",), ("export",), ("import-torch",)):
        text = cli.build_parser().format_help() if not args else None
        proc = _hamjax(*args, "--help")
        assert proc.returncode == 0 and "usage: hamjax" in proc.stdout
        if text:
            assert "import-torch" in proc.stdout


# ------------------------------------------------------------------------------ import-torch


def _torch_ecapa():
    spec = importlib.util.spec_from_file_location("torch_ecapa", REPO / "bench/torch_ecapa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_torch_reproduces_the_pytorch_reference_model(trained, tmp_path):
    torch = pytest.importorskip("torch")
    ref = _torch_ecapa().ECAPATDNN(channels=512)
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ref.eval()
    ckpt = tmp_path / "pretrain.model"
    torch.save({f"speaker_encoder.{k}": v for k, v in ref.state_dict().items()}, ckpt)
    out = tmp_path / "imported"
    _hamjax("import-torch", "--arch", "ecapa_tdnn_c512", "--state-dict", str(ckpt),
            "--output", str(out))  # fmt: skip
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["prefix"] == "speaker_encoder." and provenance["arch"] == "ecapa_tdnn_c512"
    _, config = trained
    wav_file = next(Path(config.eval.wav_root).rglob("*.wav"))
    verifier = Verifier.from_workdir(out)
    got = verifier.embed(wav_file)
    from hamjax.data import audio

    wav = torch.from_numpy(audio.load_audio(wav_file))[None]
    with torch.no_grad():
        want = ref(wav)[0].numpy()
    cosine = got @ want / (np.linalg.norm(got) * np.linalg.norm(want))
    assert cosine > 0.9999, cosine
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
    # The same model in memory, without a work directory.
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    np.testing.assert_allclose(
        Verifier.from_torch("ecapa_tdnn_c512", sd).embed(wav_file), got, rtol=1e-5, atol=1e-5
    )
    # Another architecture's weights: the key and shapes are named.
    proc = _hamjax("import-torch", "--arch", "ecapa_tdnn_c1024", "--state-dict", str(ckpt),
                   "--output", str(tmp_path / "wrong"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "has shape" in proc.stderr and "Traceback" not in proc.stderr
