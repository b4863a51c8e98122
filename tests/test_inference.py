"""hamjax.inference.Verifier on a really trained (tiny) work directory: it embeds and scores
exactly as eval.py does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr
from conftest import LISTS

from hamjax import checkpointing, embedding_cache, eval_lib
from hamjax import trials as trials_lib
from hamjax.data import audio
from hamjax.inference import Verifier


@pytest.fixture(scope="module")
def evaluated(trained):
    """The work directory after a plain ``eval.py`` run (its config's settings)."""
    workdir, config = trained
    reports = eval_lib.evaluate(workdir, baseline=False, print_fn=None)
    return workdir, config, reports


def _scores_file(workdir: Path, name: str) -> list[tuple[str, str, float]]:
    rows = (workdir / "eval" / name / "scores.txt").read_text().splitlines()
    return [(r.split()[1], r.split()[2], float(r.split()[3])) for r in rows if r[0] != "#"]


def test_embed_of_a_file_equals_the_embedding_eval_used(evaluated):
    workdir, config, _ = evaluated
    verifier = Verifier.from_workdir(workdir)
    assert verifier.step == 2 and verifier.config.head.name == config.head.name
    (cache,) = [
        p for p in (workdir / "eval" / "cache").glob("*.npz") if p.name.endswith("-full.npz")
    ]
    emb, _ = embedding_cache.load_embeddings(cache)
    wav_root = Path(config.eval.wav_root)
    for name in emb.names[:4]:
        got = verifier.embed(wav_root / name)
        assert got.shape == (16,) and got.dtype == np.float32
        np.testing.assert_allclose(got, emb.select([name]).full[0], rtol=1e-5, atol=1e-5)


def test_score_equals_the_score_in_scores_txt(evaluated):
    workdir, config, reports = evaluated
    verifier = Verifier.from_workdir(workdir)
    assert (verifier.protocol, verifier.scoring) == (
        reports[LISTS[0]]["protocol"],
        reports[LISTS[0]]["scoring"],
    )
    wav_root = Path(config.eval.wav_root)
    for enroll, test, want in _scores_file(workdir, LISTS[0])[:3]:
        got = verifier.score(wav_root / enroll, wav_root / test)
        assert got == pytest.approx(want, abs=2e-6)


def test_poincare_scoring_matches_eval(evaluated):
    workdir, config, _ = evaluated
    reports = eval_lib.evaluate(workdir, score="poincare", baseline=False, print_fn=None)
    verifier = Verifier.from_workdir(workdir, scoring_kind="poincare")
    assert verifier.geometry.c == reports[LISTS[0]]["geometry"]["c"]
    wav_root = Path(config.eval.wav_root)
    for enroll, test, want in _scores_file(workdir, LISTS[0])[:2]:
        assert verifier.score(wav_root / enroll, wav_root / test) == pytest.approx(want, abs=2e-5)


def test_waveforms_batches_and_other_rates(evaluated):
    workdir, config, _ = evaluated
    verifier = Verifier.from_workdir(workdir, "latest")
    tl = trials_lib.read_trials(config.eval.trials[0])
    paths = [Path(config.eval.wav_root) / u for u in tl.utterances()[:5]]
    one_by_one = np.stack([verifier.embed(p) for p in paths])
    batch = verifier.embed_batch(paths)
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-5, atol=1e-5)
    wav = audio.load_audio(paths[0])
    np.testing.assert_allclose(verifier.embed(wav), one_by_one[0], rtol=1e-5, atol=1e-5)
    # A 48 kHz copy is resampled back to 16 kHz on the way in.
    up = soxr.resample(wav, 16_000, 48_000, quality="HQ").astype(np.float32)
    e48 = verifier.embed(up, sample_rate=48_000)
    cos = e48 @ one_by_one[0] / (np.linalg.norm(e48) * np.linalg.norm(one_by_one[0]))
    assert cos > 0.999


def test_bad_inputs_fail_with_clear_errors(evaluated, tmp_path):
    workdir, _, _ = evaluated
    verifier = Verifier.from_workdir(workdir)
    with pytest.raises(audio.AudioError, match=r"short\.wav: 0\.10 s of audio is shorter"):
        short = tmp_path / "short.wav"
        audio.write_wav(short, np.zeros(1600, np.float32) + 0.1)
        verifier.embed(short)
    with pytest.raises(audio.AudioError, match="missing.wav"):
        verifier.embed(tmp_path / "missing.wav")
    with pytest.raises(audio.AudioError, match=r"expected a mono waveform \[S\]"):
        verifier.embed(np.zeros((2, 16000), np.float32))
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 7"):
        Verifier.from_workdir(workdir, 7)
    with pytest.raises(FileNotFoundError, match="no averaged model"):
        Verifier.from_workdir(workdir, "final")
    with pytest.raises(FileNotFoundError, match="no resolved training config"):
        Verifier.from_workdir(tmp_path)
    with pytest.raises(ValueError, match="checkpoint='best'"):
        Verifier.from_workdir(workdir, "best")


def test_a_damaged_checkpoint_is_one_short_error(evaluated, tmp_path):
    import shutil

    workdir, _, _ = evaluated
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    data_files = [
        p
        for p in (copy / "checkpoints" / "2" / "state").rglob("*")
        if p.is_file() and p.stat().st_size > 1000
    ]
    for p in data_files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # truncated
    with pytest.raises(checkpointing.CheckpointError) as info:
        Verifier.from_workdir(copy, "latest")
    msg = str(info.value)
    assert "cannot restore the checkpoint" in msg and "checkpoints/2" in msg
    assert "What to do" in msg and len(msg) < 1200
