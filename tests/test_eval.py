"""End-to-end tests of hamjax.eval_lib / eval.py on a really trained (tiny) checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import LISTS, REPO

from hamjax import (
    calibration,
    config_lib,
    eval_lib,
    eval_settings,
    inference,
    metrics,
    reports,
    validation,
)
from hamjax import trials as trials_lib
from hamjax.inference import Verifier


@pytest.fixture(scope="module")
def first_run(trained):
    """The config's default settings plus authors protocol and AS-norm: every output."""
    workdir, _ = trained
    lines: list[str] = []
    reports = eval_lib.evaluate(workdir, protocol="authors", norm="asnorm", print_fn=lines.append)
    return reports, lines


def test_evaluate_writes_every_output(trained, first_run):
    workdir, config = trained
    reports, lines = first_run
    assert sorted(reports) == sorted(LISTS)
    assert len(lines) == 2
    for name, line in zip(LISTS, sorted(lines, key=lambda s: LISTS.index(s.split(":")[0])),
                          strict=True):  # fmt: skip
        out = workdir / "eval" / name
        report = json.loads((out / "report.json").read_text())
        assert report == json.loads(json.dumps(reports[name]))
        tl = trials_lib.read_trials(Path(config.eval.wav_root).parent / "trials" / f"{name}.txt")
        assert report["trial_list"]["sha256"] == hashlib.sha256(tl.path.read_bytes()).hexdigest()
        assert report["trial_list"]["num_trials"] == len(tl)
        assert report["trial_list"]["num_target"] == tl.num_target
        assert report["checkpoint"] == {"workdir": str(workdir), "which": "latest", "step": 2}
        assert (report["protocol"], report["scoring"]) == ("authors", "cosine")
        assert report["normalisation"]["kind"] == "asnorm"
        assert report["normalisation"]["top_k"] == 3
        assert report["normalisation"]["cohort_speakers"] >= 3
        assert "TFDS dataset tiny" in report["normalisation"]["cohort_source"]
        assert 0.0 <= report["eer"] <= 1.0
        assert report["eer_percent"] == pytest.approx(100 * report["eer"])
        assert set(report["min_dcf"]) == {"0.01", "0.05"}
        assert report["baseline"]["eer"] is not None
        # Calibration: stored beside the report, with Cllr and actual DCF beside minDCF.
        cal = calibration.Calibration.from_dict(json.loads((out / "calibration.json").read_text()))
        assert cal.slope == pytest.approx(report["calibration"]["slope"]) and cal.source == name
        assert report["cllr"] >= 0 and set(report["act_dcf"]) == {"0.01", "0.05"}
        for p in ("0.01", "0.05"):  # the actual cost of Bayes decisions is never below minDCF
            assert report["act_dcf"][p] >= report["min_dcf"][p]["value"] - 1e-9
        # The score file holds the list's trials in order, and reproduces the reported EER.
        rows = [r.split() for r in (out / "scores.txt").read_text().splitlines() if r[0] != "#"]
        assert [r[1] for r in rows] == tl.enroll.tolist()
        assert [int(r[0]) for r in rows] == tl.labels.tolist()
        scores = np.array([float(r[3]) for r in rows])
        assert metrics.eer(scores, tl.labels)[0] == pytest.approx(report["eer"], abs=1e-3)
        for png in ("det.png", "score_hist.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
        assert line.startswith(f"{name}: EER {report['eer_percent']:.3f}% ")
        assert "authors/cosine/asnorm" in line and "log-mel baseline EER" in line


def test_rescoring_reuses_cached_embeddings(trained, first_run, monkeypatch):
    workdir, config = trained

    def no_extraction(*args, **kwargs):
        raise AssertionError("embeddings were re-extracted instead of read from the cache")

    monkeypatch.setattr(inference, "extract_protocol", no_extraction)
    monkeypatch.setattr(eval_lib, "extract_protocol", no_extraction)
    # Another normalisation, and the full protocol served by the authors' cache.
    raw = eval_lib.evaluate(workdir, protocol="authors", norm="none", print_fn=None)
    full = eval_lib.evaluate(workdir, protocol="full", norm="none", print_fn=None)
    for name in LISTS:
        assert raw[name]["normalisation"] == {"kind": "none"}
        assert full[name]["protocol"] == "full"
        # The written scores reproduce the report's EER.
        tl = trials_lib.read_trials(config.eval.trials[LISTS.index(name)])
        rows = [
            r.split()
            for r in (workdir / "eval" / name / "scores.txt").read_text().splitlines()
            if r[0] != "#"
        ]
        assert full[name]["eer"] == pytest.approx(
            metrics.eer(np.array([float(r[3]) for r in rows]), tl.labels)[0], abs=1e-3
        )
    cache = list((workdir / "eval" / "cache").glob("*.npz"))
    assert len(cache) == 3  # trial (authors), cohort (full), baseline


def test_poincare_scoring_uses_the_ham_head(trained, first_run, monkeypatch):
    workdir, _ = trained
    monkeypatch.setattr(inference, "extract_protocol", None)  # must come from the cache
    reports = eval_lib.evaluate(
        workdir, protocol="full", score="poincare", baseline=False, print_fn=None,
        reports_dir="eval_poincare",
    )  # fmt: skip
    r = reports[LISTS[0]]
    assert r["scoring"] == "poincare"
    assert r["geometry"] == {"c": 3.0, "mode": "clip", "feature_clip": 0.0, "feature_scale": None}
    assert "baseline" not in r
    # Beside the cosine reports, not over them.
    saved = json.loads((workdir / "eval_poincare" / LISTS[0] / "report.json").read_text())
    assert saved["scoring"] == "poincare"
    assert json.loads((workdir / "eval" / LISTS[0] / "report.json").read_text())["scoring"] == (
        "cosine"
    )
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="expected one folder name"):
            eval_lib.evaluate(workdir, reports_dir=bad, print_fn=None)


def test_validation_eer_matches_the_full_cosine_report(trained, first_run):

    workdir, config = trained
    inf = Verifier.from_workdir(workdir, "latest")
    got = validation.validation_eer(inf.config, inf.variables)
    reports = eval_lib.evaluate(workdir, protocol="full", baseline=False, print_fn=None)
    assert sorted(got) == sorted(f"{n}_eer" for n in LISTS)
    for name in LISTS:
        assert got[f"{name}_eer"] == pytest.approx(reports[name]["eer_percent"], abs=1e-3)


def test_eval_script_end_to_end(trained, first_run):
    workdir, _ = trained
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"--workdir={workdir}", "--protocol=full",
         "--nobaseline", "--checkpoint=latest"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if ": EER " in line]
    assert [line.split(":")[0] for line in summary] == list(LISTS)
    assert all("latest step 2 full/cosine/none" in line for line in summary)


def test_missing_audio_is_reported_with_names_and_count(trained, tmp_path):
    workdir, _ = trained
    bad = tmp_path / "bad.txt"
    bad.write_text("".join(f"{i % 2} spk/x/{i}.wav spk/y/{i}.wav\n" for i in range(6)))
    with pytest.raises(trials_lib.TrialListError) as info:
        eval_lib.evaluate(workdir, trials=str(bad), print_fn=None)
    msg = str(info.value)
    assert f"{bad}: 12 of 12 audio file(s) missing" in msg and "spk/x/0.wav" in msg


def test_resolve_settings_errors(tmp_path):
    config = config_lib.base_config()
    with pytest.raises(ValueError, match="no trial lists: pass --trials"):
        eval_settings.resolve_settings(tmp_path, config)
    lst = tmp_path / "t.txt"
    lst.write_text("1 a b\n0 a c\n")
    for field, value, match in (
        ("protocol", "crops", "protocol='crops': expected one of authors, full"),
        ("score", "dot", "score='dot': expected one of cosine, poincare"),
        ("norm", "znorm", "norm='znorm': expected one of none, asnorm"),
        ("checkpoint", "best", "checkpoint='best': expected 'latest', 'final' or a step"),
        ("top_k", 0, "top_k=0: expected >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            eval_settings.resolve_settings(tmp_path, config, trials=str(lst), **{field: value})
    with pytest.raises(trials_lib.TrialListError, match="trial list 'nope.txt' not found"):
        eval_settings.resolve_settings(tmp_path, config, trials="nope.txt")
    st = eval_settings.resolve_settings(tmp_path, config, trials=f"{lst},{lst}", checkpoint="7")
    assert st.trials == (lst, lst) and st.checkpoint == 7
    # The config default "final" falls back to "latest" when there is no averaged model.
    assert eval_settings.resolve_settings(tmp_path, config, trials=str(lst)).checkpoint == "latest"


def test_baseline_statistics_are_mask_aware():
    from hamjax import frontend

    rng = np.random.default_rng(0)
    wav = rng.uniform(-0.5, 0.5, 20_000).astype(np.float32)
    embed = reports.baseline_embed_fn()
    padded = np.zeros((1, 32_000), np.float32)
    padded[0, :20_000] = wav
    mask = np.arange(32_000)[None] < 20_000
    got = np.asarray(embed(None, jnp.asarray(padded), jnp.asarray(mask)))[0]
    feats, _ = frontend.logmel(jnp.asarray(wav[None]), mean_norm=False)
    feats = np.asarray(feats[0], np.float64)
    ref = np.concatenate([feats.mean(0), feats.std(0)])
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


def _first_score(workdir: Path, name: str) -> float:
    lines = (workdir / "eval" / name / "scores.txt").read_text().splitlines()
    return float([r.split() for r in lines if r[0] != "#"][0][3])


def test_an_overwritten_audio_file_is_embedded_again(trained, tmp_path, monkeypatch):
    workdir, config = trained
    wav_root = tmp_path / "wav"
    shutil.copytree(config.eval.wav_root, wav_root)  # private copy: the corpus is shared
    trials = config.eval.trials[0]
    kw = dict(trials=trials, wav_root=str(wav_root), protocol="full", baseline=False)
    eval_lib.evaluate(workdir, print_fn=None, **kw)
    before = _first_score(workdir, LISTS[0])
    tl = trials_lib.read_trials(trials)
    victim, donor = wav_root / tl.enroll[0], wav_root / tl.test[-1]
    assert victim != donor
    shutil.copyfile(donor, victim)  # same name, other audio (new size or mtime)
    calls = []
    real = inference.extract_protocol
    monkeypatch.setattr(
        inference, "extract_protocol", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    eval_lib.evaluate(workdir, print_fn=None, **kw)
    assert calls, "the stale cached embeddings were reused"
    assert _first_score(workdir, LISTS[0]) != pytest.approx(before, abs=1e-6)


def test_too_short_audio_is_an_error_naming_the_file(trained, tmp_path):
    from hamjax.data import audio

    workdir, config = trained
    (tmp_path / "a").mkdir()
    audio.write_wav(tmp_path / "a" / "short.wav", np.full(2000, 0.1, np.float32))
    some = trials_lib.read_trials(config.eval.trials[0]).enroll[0]
    shutil.copyfile(Path(config.eval.wav_root) / some, tmp_path / "a" / "long.wav")
    lst = tmp_path / "short.txt"
    shutil.copyfile(tmp_path / "a" / "long.wav", tmp_path / "a" / "long2.wav")
    lst.write_text("1 a/long.wav a/short.wav\n0 a/long.wav a/long2.wav\n")
    with pytest.raises(audio.AudioError, match=r"a/short\.wav: 0\.1\d s of audio is shorter"):
        eval_lib.evaluate(workdir, trials=str(lst), wav_root=str(tmp_path), print_fn=None)
