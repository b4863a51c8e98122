"""Tests of waveform augmentation (hamjax.data.augment)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hamjax.data import augment
from hamjax.data.audio import write_wav

N = 8000  # half-second crops keep every test fast


def _clean(seed: int = 0) -> np.ndarray:
    t = np.arange(N) / 16000
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.01 * rng.standard_normal(N)).astype(np.float32)


def _snr(clean: np.ndarray, out: np.ndarray) -> float:
    c = clean.astype(np.float64)
    return float(10 * np.log10(np.mean(c**2) / np.mean((out.astype(np.float64) - c) ** 2)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A MUSAN-layout folder and an SLR28 simulated_rirs folder with a few tiny WAVs."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    musan = root / "musan"
    write_wav(musan / "noise" / "free-sound" / "noise-0001.wav", 0.1 * rng.standard_normal(3000))
    write_wav(musan / "noise" / "n2.wav", 0.2 * rng.standard_normal(20000))  # longer than a crop
    write_wav(musan / "music" / "jamendo" / "music-0001.wav", 0.1 * rng.standard_normal(40000))
    write_wav(musan / "music" / "m2.wav", 0.1 * rng.standard_normal(6000))  # shorter: looped
    for i in range(4):
        write_wav(
            musan / "speech" / "librivox" / f"speech-{i}.wav", 0.1 * rng.standard_normal(9000)
        )
    rirs = root / "RIRS_NOISES" / "simulated_rirs"
    for room, delay in (("smallroom", 0), ("mediumroom", 37), ("largeroom", 120)):
        rir = np.zeros(2000)
        rir[delay] = 0.5  # the direct path
        rir[delay + 1 :] = (
            0.05
            * rng.standard_normal(2000 - delay - 1)
            * np.exp(-np.arange(2000 - delay - 1) / 300)
        )
        write_wav(rirs / room / "Room001" / f"Room001-{delay:05d}.wav", rir)
    delay_only = root / "delay_rirs"
    impulse = np.zeros(500)
    impulse[77] = 0.8
    write_wav(delay_only / "d.wav", impulse)
    return musan, root / "RIRS_NOISES", delay_only


@pytest.mark.parametrize("kind, key", [("noise", "snr_noise"), ("music", "snr_music")])
@pytest.mark.parametrize("use_folders", [False, True])
def test_measured_snr_in_range(folders, kind, key, use_folders):
    snr_range = (3.0, 9.0)
    aug = augment.Augmenter(
        {"kinds": (kind,), key: snr_range, "num_builtin_clips": 2},
        musan_dir=folders[0] if use_folders else None,
    )
    clean = _clean()
    for seed in range(12):
        out, info = aug.augment(clean, np.random.default_rng(seed), return_info=True)
        assert info["kind"] == kind and len(info["snr_db"]) == len(info["sources"]) == 1
        assert out.shape == clean.shape and out.dtype == np.float32
        measured = _snr(clean, out / info["gain"])
        assert snr_range[0] - 0.01 <= measured <= snr_range[1] + 0.01
        assert measured == pytest.approx(info["snr_db"][0], abs=0.01)
        assert info["sources"][0].startswith(str(folders[0]) if use_folders else "synthetic:")


@pytest.mark.parametrize("use_folders", [False, True])
def test_babble(folders, use_folders):
    aug = augment.Augmenter(
        {"kinds": ("babble",), "babble_speakers": (3, 5), "num_builtin_clips": 4},
        musan_dir=folders[0] if use_folders else None,
    )
    clean = _clean()
    counts = set()
    for seed in range(10):
        out, info = aug.augment(clean, np.random.default_rng(seed), return_info=True)
        counts.add(len(info["snr_db"]))
        assert 3 <= len(info["snr_db"]) <= 5
        assert all(13.0 <= s <= 20.0 for s in info["snr_db"])
        if use_folders:  # independent noise "talkers": their powers add
            expected = -10 * np.log10(np.sum(10 ** (-np.array(info["snr_db"]) / 10)))
            assert _snr(clean, out / info["gain"]) == pytest.approx(expected, abs=1.0)
    assert len(counts) > 1


def test_reverb_keeps_length_timing_and_level(folders):
    clean = _clean()
    # A pure delay RIR: direct-path alignment and unit gain give back the input exactly.
    delay = augment.Augmenter({"kinds": ("reverb",)}, rir_dir=folders[2])
    out = delay.augment(clean, np.random.default_rng(0))
    np.testing.assert_allclose(out, clean, atol=1e-6)
    for rir_dir in (folders[1], None):
        aug = augment.Augmenter({"kinds": ("reverb",), "rt60": (0.3, 0.6)}, rir_dir=rir_dir)
        impulse = np.zeros(N, np.float32)
        impulse[100] = 0.5
        for seed in range(4):
            out, info = aug.augment(impulse, np.random.default_rng(seed), return_info=True)
            assert out.shape == (N,) and out.dtype == np.float32 and np.all(np.isfinite(out))
            assert out[100] == pytest.approx(0.5, abs=1e-3) and np.all(np.abs(out[:100]) < 1e-6)
            assert np.sum(out[101:] ** 2) > 0  # a reverberant tail
            assert info["snr_db"] == [] and info["kind"] == "reverb"
        out = aug.augment(clean, np.random.default_rng(9))
        assert out.shape == clean.shape and np.all(np.isfinite(out))
    rooms = {
        augment.Augmenter(rir_dir=folders[1])._rir(np.random.default_rng(s))[1] for s in range(20)
    }
    assert len(rooms) == 3 and all("simulated_rirs" in r for r in rooms)


def test_deterministic_given_rng_and_picklable(folders):
    aug = augment.Augmenter(musan_dir=folders[0], rir_dir=folders[1], seed=3)
    clone = pickle.loads(pickle.dumps(aug))
    clean = _clean()
    kinds, outputs = set(), set()
    for seed in range(12):
        a, info = aug.augment(clean, np.random.default_rng(seed), return_info=True)
        b = clone.augment(clean, np.random.default_rng(seed))
        np.testing.assert_array_equal(a, b)
        kinds.add(info["kind"])
        outputs.add(a.tobytes())
    assert kinds == set(augment.KINDS)  # uniform choice over the four kinds
    assert len(outputs) >= 10  # (reverb with one of 3 RIRs is the only repeatable draw)
    assert len(pickle.dumps(aug)) < 20_000  # file lists only; audio caches are per process


def test_loud_input_stays_in_range():
    aug = augment.Augmenter({"kinds": ("noise",), "snr_noise": (0.0, 0.0)})
    loud = np.full(N, 0.99, np.float32) * np.sign(np.sin(np.arange(N) / 5.0)).astype(np.float32)
    out, info = aug.augment(loud, np.random.default_rng(0), return_info=True)
    assert np.max(np.abs(out)) == pytest.approx(1.0) and info["gain"] < 1.0
    assert _snr(loud, out / info["gain"]) == pytest.approx(0.0, abs=0.01)


def test_trainer_config_section():
    from hamjax import config_lib

    section = config_lib.base_config().data.augment
    aug = augment.Augmenter(section)
    assert aug.config.snr_noise == tuple(section.snr_noise)
    assert aug.config.kinds == augment.KINDS


def test_missing_or_empty_folders(tmp_path, folders):
    with pytest.raises(ValueError, match=r"no such folder.*noise,music,speech"):
        augment.Augmenter(musan_dir=tmp_path / "nowhere")
    (tmp_path / "musan" / "noise").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"musan/noise: no \.wav files"):
        augment.Augmenter(musan_dir=tmp_path / "musan")
    # Only the sub-folders of the requested kinds are required.
    write_wav(tmp_path / "musan" / "noise" / "a.wav", np.ones(100) * 0.1)
    with pytest.raises(ValueError, match=r"musan/music: missing"):
        augment.Augmenter({"kinds": ("noise", "music")}, musan_dir=tmp_path / "musan")
    assert augment.Augmenter({"kinds": ("noise",)}, musan_dir=tmp_path / "musan").files["noise"]
    (tmp_path / "rirs").mkdir()
    with pytest.raises(ValueError, match=r"rirs.*no \.wav files.*smallroom"):
        augment.Augmenter(rir_dir=tmp_path / "rirs")
    with pytest.raises(ValueError, match="rir_dir=.*nothing.*no such folder"):
        augment.Augmenter(rir_dir=tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"\['reverb'\] have no source"):
        augment.Augmenter({"synthetic": False}, musan_dir=folders[0])


def test_unreadable_source_names_file(tmp_path):
    bad = tmp_path / "musan" / "noise" / "bad.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not audio")
    aug = augment.Augmenter({"kinds": ("noise",)}, musan_dir=tmp_path / "musan")
    with pytest.raises(augment.audio.AudioError, match="bad.wav"):
        aug.augment(_clean(), np.random.default_rng(0))


@pytest.mark.parametrize(
    "config, match",
    [
        ({"kinds": ("noise", "wind")}, "augment.kinds"),
        ({"kinds": ()}, "augment.kinds"),
        ({"weights": (1.0, 2.0)}, "augment.weights"),
        ({"snr_noise": (10.0, 5.0)}, "augment.snr_noise"),
        ({"rt60": (0.0, 0.5)}, "augment.rt60"),
        ({"babble_speakers": (0, 3)}, "augment.babble_speakers"),
        ({"snr_nosie": (0.0, 5.0)}, r"unknown key\(s\) \['snr_nosie'\]"),
        ("loud", "expected a mapping"),
    ],
)
def test_bad_config(config, match):
    with pytest.raises(ValueError, match=match):
        augment.Augmenter(config)


def test_bad_inputs():
    aug = augment.Augmenter({"kinds": ("noise",)})
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"wav: shape \(2, 10\)"):
        aug.augment(np.zeros((2, 10), np.float32), rng)
    with pytest.raises(ValueError, match="wav: shape"):
        aug.augment(np.zeros(10, np.int16), rng)
    with pytest.raises(ValueError, match="non-finite"):
        aug.augment(np.array([0.0, np.nan], np.float32), rng)
    with pytest.raises(ValueError, match="rng: got int"):
        aug.augment(_clean(), 0)
    with pytest.raises(ValueError, match="non-silent"):
        augment.reverberate(_clean(), np.zeros(10))
    # A silent input stays silent instead of dividing by zero.
    np.testing.assert_array_equal(aug.augment(np.zeros(N, np.float32), rng), np.zeros(N))
