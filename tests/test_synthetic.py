"""Tests of the built-in synthetic hierarchical corpus (hamjax.data.synthetic)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hamjax.data import synthetic

# Smallest corpus that still has every split and trial list: used where content is not the point.
MICRO = dict(
    num_families=1,
    bases_per_family=2,
    speakers_per_base=2,
    sessions_per_speaker=1,
    utterances_per_session=2,
    heldout_base_fraction=0.5,
    heldout_speaker_fraction=0.0,
    min_duration=0.4,
    max_duration=0.5,
    trials_per_speaker=1,
)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "tiny"
    meta = synthetic.generate_corpus(root, num_workers=1, **synthetic.TINY)
    return root, meta


def test_layout_and_hierarchy(tiny):
    root, meta = tiny
    assert json.loads((root / "metadata.json").read_text()) == meta
    spk = meta["speakers"]
    n = synthetic.TINY
    assert len(spk) == n["num_families"] * n["bases_per_family"] * n["speakers_per_base"]
    assert len(meta["bases"]) == n["num_families"] * n["bases_per_family"]
    for name, s in spk.items():
        base = meta["bases"][s["base"]]
        assert base["family"] == s["family"] and s["base"].startswith(s["family"])
        assert name in base["speakers"] and s["base"] in meta["families"][s["family"]]["bases"]
        # A held-out base holds out every one of its speakers; seen bases hold out a fraction.
        assert (s["split"] == "heldout_base") == (base["split"] == "heldout_base")
        sessions = sorted(p.name for p in (root / "wav" / name).iterdir())
        assert sessions == sorted(s["sessions"]) and len(sessions) == n["sessions_per_speaker"]
    for fam in meta["families"].values():
        held = [b for b in fam["bases"] if meta["bases"][b]["split"] == "heldout_base"]
        assert len(held) == round(n["heldout_base_fraction"] * n["bases_per_family"])
    for b, base in meta["bases"].items():
        if base["split"] == "train":
            held = [s for s in base["speakers"] if spk[s]["split"] == "heldout_speaker"]
            assert len(held) == round(n["heldout_speaker_fraction"] * n["speakers_per_base"]), b
    assert sorted(sum(meta["splits"].values(), [])) == sorted(spk)

    wavs = sorted(root.glob("wav/*/*/*.wav"))
    assert len(wavs) == meta["summary"]["num_utterances"] == len(spk) * 4
    all_list = (root / "all_list.txt").read_text().split("\n")[:-1]
    assert sorted(line.split()[1] for line in all_list) == sorted(
        str(p.relative_to(root / "wav")) for p in wavs
    )
    for p in wavs[:6]:
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert n["min_duration"] - 1e-3 <= info.duration <= n["max_duration"] + 1e-3
        x, _ = sf.read(str(p))
        assert 0.001 < np.sqrt(np.mean(x**2)) and np.max(np.abs(x)) < 1.0


def test_train_list(tiny):
    root, meta = tiny
    lines = (root / "train_list.txt").read_text().split("\n")[:-1]
    train = set(meta["splits"]["train"])
    assert {line.split()[0] for line in lines} == train
    for line in lines:
        spk, path = line.split()
        assert path.split("/")[0] == spk and (root / "wav" / path).is_file()
    assert len(lines) == meta["summary"]["num_train_utterances"] == 4 * len(train)


def test_trials(tiny):
    root, meta = tiny
    spk = meta["speakers"]
    expected_split = {"heldout_speakers": {"heldout_speaker"}, "heldout_bases": {"heldout_base"}}
    assert sorted(meta["trials"]) == sorted(synthetic.TRIAL_LISTS)
    for name, t in meta["trials"].items():
        lines = [line.split() for line in (root / t["path"]).read_text().splitlines()]
        assert len({tuple(x) for x in lines}) == len(lines)  # no duplicate trials
        labels = [x[0] for x in lines]
        assert set(labels) == {"0", "1"}
        assert labels.count("1") == labels.count("0") == t["num_target"] == t["num_nontarget"]
        for label, enrol, test in lines:
            a, b = enrol.split("/")[0], test.split("/")[0]
            assert (root / "wav" / enrol).is_file() and (root / "wav" / test).is_file()
            assert spk[a]["split"] != "train" and spk[b]["split"] != "train"
            assert spk[a]["split"] in expected_split.get(name, {"heldout_speaker", "heldout_base"})
            assert (a == b) == (label == "1")
            if label == "1":  # target trials cross sessions
                assert enrol.split("/")[1] != test.split("/")[1]
            if name == "within_family":
                assert spk[a]["family"] == spk[b]["family"]
        assert 0.0 <= t["pitch_only_eer"] <= 1.0 and 0.0 <= t["cepstrum_eer"] <= 1.0


def test_same_output_for_any_worker_count_and_reuse(tmp_path):
    one = synthetic.generate_corpus(tmp_path / "w1", num_workers=1, **MICRO)
    two = synthetic.generate_corpus(tmp_path / "w2", num_workers=2, **MICRO)
    assert one == two and _tree(tmp_path / "w1") == _tree(tmp_path / "w2")
    # No temporary folder left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1", "w2"]
    # Reuse: same arguments -> nothing rewritten.
    stamp = (tmp_path / "w2" / "metadata.json").stat().st_mtime_ns
    assert synthetic.generate_corpus(tmp_path / "w2", num_workers=2, **MICRO) == two
    assert (tmp_path / "w2" / "metadata.json").stat().st_mtime_ns == stamp


def test_seed_changes_content_not_structure(tmp_path):
    a = synthetic.generate_corpus(tmp_path / "a", seed=1, num_workers=1, **MICRO)
    b = synthetic.generate_corpus(tmp_path / "b", seed=2, num_workers=1, **MICRO)
    assert a["summary"]["num_utterances"] == b["summary"]["num_utterances"] == 8
    wa = {h for k, h in _tree(tmp_path / "a").items() if k.endswith(".wav")}
    wb = {h for k, h in _tree(tmp_path / "b").items() if k.endswith(".wav")}
    assert len(wa) == 8 and not wa & wb


def test_different_args_raise_or_overwrite(tmp_path):
    root = tmp_path / "c"
    synthetic.generate_corpus(root, num_workers=1, **MICRO)
    with pytest.raises(ValueError, match="differing: seed"):
        synthetic.generate_corpus(root, seed=5, num_workers=1, **MICRO)
    meta = synthetic.generate_corpus(root, seed=5, num_workers=1, overwrite=True, **MICRO)
    assert meta["args"]["seed"] == 5
    assert json.loads((root / "metadata.json").read_text())["args"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def broken(job):
        calls.append(job)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(job)

    real = synthetic._render
    monkeypatch.setattr(synthetic, "_render", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.generate_corpus(tmp_path / "d", num_workers=1, **MICRO)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a hamjax synthetic corpus"):
        synthetic.generate_corpus(tmp_path / "e", num_workers=1, **MICRO)
    assert (tmp_path / "e" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "override, match",
    [
        (dict(num_families=0), "num_families=0"),
        (dict(speakers_per_base=2.5), "speakers_per_base=2.5"),
        (dict(sessions_per_speaker=1, utterances_per_session=1), "expected >= 2"),
        (dict(heldout_base_fraction=1.0), "heldout_base_fraction=1.0"),
        (dict(heldout_speaker_fraction=-0.1), "heldout_speaker_fraction=-0.1"),
        (dict(speakers_per_base=2, heldout_speaker_fraction=0.9), "holds out all 2 speakers"),
        (dict(min_duration=3.0, max_duration=2.0), "min_duration=3.0"),
        (dict(snr_range=(10.0, 5.0)), "snr_range"),
        (dict(reverb_prob=2.0), "reverb_prob=2.0"),
        (dict(sample_rate=8000), "sample_rate=8000"),
        (dict(seed=-1), "seed=-1"),
        (dict(num_workers=-1), "num_workers=-1"),
        (dict(trials_per_speaker=0), "trials_per_speaker=0"),
    ],
)
def test_bad_arguments(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        synthetic.generate_corpus(tmp_path / "x", **{**MICRO, **override})
    assert not (tmp_path / "x").exists()


def _voice(**changes):
    family = synthetic.sample_family(np.random.default_rng(0))
    base = synthetic.sample_base_voice(family, np.random.default_rng(1))
    fields = {**base.__dict__, "jitter": 0.0, "breathiness": 0.0, **changes}
    return family, synthetic.VoiceParams(**fields)


def _centroid(wav: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(wav)) ** 2
    return float(np.sum(np.fft.rfftfreq(len(wav), 1 / 16000) * power) / np.sum(power))


def test_synthesis_follows_voice_parameters():
    # F0 register: the median YIN F0 of a dry utterance tracks the voice's f0_hz.
    for f0 in (100.0, 180.0):
        family, voice = _voice(f0_hz=f0, f0_range=0.05)
        wav = synthetic.synthesize_utterance(family, voice, np.random.default_rng(2), 24000)
        assert wav.dtype == np.float32 and wav.shape == (24000,) and np.all(np.isfinite(wav))
        est = synthetic._utterance_stats(wav, 16000)[0]
        assert abs(np.log(est / f0)) < 0.15, (est, f0)
    # Vocal-tract length: a shorter tract (smaller scale) moves spectral energy up.
    centroids = []
    for vtl in (0.85, 1.15):
        family, voice = _voice(vtl_scale=vtl)
        wav = synthetic.synthesize_utterance(family, voice, np.random.default_rng(3), 24000)
        centroids.append(_centroid(wav))
    assert centroids[0] > 1.1 * centroids[1]


def test_rir_and_noise_helpers():
    rng = np.random.default_rng(0)
    rir = synthetic.synthetic_rir(rng, 0.5)
    assert rir[0] == 1.0 and rir.shape == (int(np.ceil(1.2 * 0.5 * 16000)),)
    energy = rir[1:] ** 2
    tenth = len(energy) // 10
    # 60 dB per RT60: the last tenth of a 1.2 x RT60 tail is > 40 dB below the first.
    assert energy[-tenth:].sum() < 1e-4 * energy[:tenth].sum()
    with pytest.raises(ValueError, match="rt60=0"):
        synthetic.synthetic_rir(rng, 0)
    for exponent in (0.0, 2.0):
        x = synthetic.coloured_noise(rng, 32001, exponent)
        assert x.shape == (32001,) and abs(np.sqrt(np.mean(x**2)) - 1) < 1e-3
        f = np.fft.rfftfreq(len(x))[10:4000]
        p = np.abs(np.fft.rfft(x))[10:4000] ** 2
        slope = np.polyfit(np.log(f), np.log(p), 1)[0]
        assert abs(slope + exponent) < 0.2, slope


@pytest.mark.parametrize("f0", [55.0, 130.0, 410.0])
def test_yin_f0_on_harmonic_tones(f0):
    t = np.arange(24000) / 16000
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 9))
    est, rms = synthetic.yin_f0(x, 16000)
    assert est.shape == rms.shape and len(est) > 50
    np.testing.assert_allclose(np.median(est), f0, rtol=2e-3)
    assert synthetic.yin_f0(x[:100], 16000)[0].size == 0


def test_eer():
    labels = np.array([True, True, False, False])
    assert synthetic._eer(np.array([4.0, 3.0, 2.0, 1.0]), labels) == 0.0
    assert synthetic._eer(np.array([1.0, 2.0, 3.0, 4.0]), labels) == 1.0
    assert synthetic._eer(np.array([4.0, 2.0, 3.0, 1.0]), labels) == 0.5


def test_cli(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "make_synthetic_corpus.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_corpus", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    sets = [f"--set={k}={v!r}" for k, v in MICRO.items()]
    assert cli.main(["--root", str(tmp_path / "f"), "--num_workers", "1", *sets]) == 0
    assert "8 utterances" in capsys.readouterr().out
    assert cli.main(["--root", str(tmp_path / "g"), *sets, "--set", "num_families=0"]) == 2
    assert "num_families=0" in capsys.readouterr().err
