"""Tests for hamjax.frontend: log-mel vs librosa, Kaldi fbank vs a numpy Kaldi transcription,
padding invariance, SpecAugment, jit/vmap, dtypes and every error message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from hamjax import frontend as fe

SR = 16_000
CROP = 32_240  # the authors' 2-s training crop: 200 frames + 240 samples


def real_like(num_samples: int, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """A linear chirp 100 Hz -> 6 kHz plus white noise: broadband, non-stationary, seeded."""
    rng = np.random.default_rng(seed)
    chirp = librosa.chirp(fmin=100, fmax=6000, sr=SR, length=num_samples, linear=True)
    return (0.5 * chirp + noise * rng.standard_normal(num_samples)).astype(np.float32)


# ----------------------------------------------------------------------------- references


def librosa_logmel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' features from librosa: (normalised log-mel [T, 80], mel [T, 80])."""
    # The authors' PreEmphasis reflect-pads one sample: y[0] = x[0] - 0.97 x[1].
    y = np.concatenate([x[:1] - 0.97 * x[1:2], x[1:] - 0.97 * x[:-1]])
    # librosa.stft + librosa.filters.mel in the input's precision (melspectrogram would use
    # float32 filters even for float64 audio).
    power = (
        np.abs(
            librosa.stft(
                y,
                n_fft=512,
                hop_length=160,
                win_length=400,
                window="hamming",
                center=True,
                pad_mode="reflect",
            )
        )
        ** 2
    )
    filters = librosa.filters.mel(
        sr=SR, n_fft=512, n_mels=80, fmin=20, fmax=7600, htk=True, norm=None, dtype=y.dtype
    )
    mel = (filters @ power).T
    logmel = np.log(mel + 1e-6)
    return logmel - logmel.mean(axis=0), mel


def numpy_kaldi_fbank(x: np.ndarray, window: str = "hamming") -> tuple[np.ndarray, np.ndarray]:
    """An independent float64 transcription of Kaldi's compute-fbank-feats (dither 0), followed
    by CMN. Written frame by frame after Kaldi's C++: src/feat/feature-window.cc
    (FeatureWindowFunction, ProcessWindow: DC removal, Preemphasize with s[0] -= a s[0]) and
    src/feat/mel-computations.cc (MelBanks::MelBanks: mel = 1127 ln(1 + f/700), strict
    left < mel < right triangles), with torchaudio.compliance.kaldi.fbank's log floor
    (float32 eps). Returns (normalised log-fbank [T, 80], mel energies [T, 80])."""
    wave = x.astype(np.float64) * 32768.0
    win, shift, n_fft, bins = 400, 160, 512, 80
    a = 2 * np.pi / (win - 1)
    i = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(a * i)
    wfun = {"hamming": 0.54 - 0.46 * np.cos(a * i), "povey": hann**0.85}[window]

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    mel_low, mel_high = mel(20.0), mel(SR / 2)
    delta = (mel_high - mel_low) / (bins + 1)
    banks = np.zeros((bins, n_fft // 2 + 1))
    for b in range(bins):
        left, centre, right = (
            mel_low + b * delta,
            mel_low + (b + 1) * delta,
            mel_low + (b + 2) * delta,
        )
        for k in range(n_fft // 2):
            m = mel(k * SR / n_fft)
            if left < m < right:
                banks[b, k] = (
                    (m - left) / (centre - left) if m <= centre else (right - m) / (right - centre)
                )
    frames = 1 + (len(wave) - win) // shift
    energies = np.empty((frames, bins))
    for t in range(frames):
        frame = wave[t * shift : t * shift + win].copy()
        frame -= frame.mean()
        for j in range(win - 1, 0, -1):
            frame[j] -= 0.97 * frame[j - 1]
        frame[0] -= 0.97 * frame[0]
        padded = np.zeros(n_fft)
        padded[:win] = frame * wfun
        energies[t] = banks @ (np.abs(np.fft.rfft(padded)) ** 2)
    logfb = np.log(np.maximum(energies, np.finfo(np.float32).eps))
    return logfb - logfb.mean(axis=0), energies


def assert_close_within_dynamic_range(got, want, energies, *, atol=1e-4, loose=3e-3):
    """float32 FFT roundoff is ~eps * |frame|: bands within 60 dB of their frame's loudest band
    must match to ``atol``; quieter bands only to ``loose``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    err = np.abs(got - want)
    loud = energies >= 1e-6 * energies.max(axis=1, keepdims=True)
    assert loud.mean() > 0.75, "the test signal should be mostly within 60 dB"
    assert err[loud].max() <= atol, f"max error {err[loud].max()} on bands within 60 dB"
    assert err.max() <= loose, f"max error {err.max()} overall"


# ----------------------------------------------------------------------------- log-mel


@pytest.fixture(scope="module")
def chirp() -> np.ndarray:
    return real_like(CROP)


def test_logmel_matches_librosa_float32(chirp):
    feats, frame_mask = fe.logmel(chirp[None])
    assert feats.dtype == jnp.float32 and frame_mask.dtype == jnp.bool_
    want, mel = librosa_logmel(chirp)
    assert feats.shape == (1, fe.num_frames(CROP), 80) == (1, 202, 80)
    assert bool(frame_mask.all())
    assert_close_within_dynamic_range(feats[0], want, mel)


def test_logmel_matches_librosa_float64_exactly(chirp):
    # In float64 there is no FFT roundoff to hide behind: the algorithm itself must agree.
    x = chirp.astype(np.float64)
    with jax.enable_x64(True):
        feats, _ = fe.logmel(jnp.asarray(x)[None])
        assert feats.dtype == jnp.float64
        feats = np.asarray(feats[0])
    want, _ = librosa_logmel(x)
    np.testing.assert_allclose(feats, want, atol=1e-9)


def test_logmel_on_synthetic_corpus_file(tmp_path):
    from hamjax.data import synthetic
    from hamjax.data.audio import load_audio

    synthetic.generate_corpus(
        tmp_path,
        seed=0,
        num_families=1,
        bases_per_family=1,
        speakers_per_base=1,
        sessions_per_speaker=1,
        utterances_per_session=2,
        min_duration=1.5,
        max_duration=2.0,
        num_workers=0,  # in process: no worker start-up inside a unit test
    )
    wav = load_audio(sorted((tmp_path / "wav").rglob("*.wav"))[0])
    feats, _ = fe.logmel(wav[None])
    want, mel = librosa_logmel(wav)
    assert_close_within_dynamic_range(feats[0], want, mel)


# ----------------------------------------------------------------------------- Kaldi fbank


@pytest.mark.parametrize("window", ["hamming", "povey"])
def test_fbank_matches_numpy_kaldi(window):
    x = real_like(8000, seed=1)
    want, energies = numpy_kaldi_fbank(x, window)
    feats, frame_mask = fe.fbank(x[None], window=window)
    assert feats.shape == (1, fe.num_frames(8000, "fbank"), 80) == (1, 48, 80)
    assert bool(frame_mask.all())
    assert_close_within_dynamic_range(feats[0], want, energies)
    with jax.enable_x64(True):
        exact = np.asarray(fe.fbank(jnp.asarray(x, jnp.float64)[None], window=window)[0][0])
    np.testing.assert_allclose(exact, want, atol=1e-8)


def test_fbank_matches_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank", reason="the test extra installs it")
    x = real_like(8000, seed=2)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    online = knf.OnlineFbank(opts)
    online.accept_waveform(SR, (x * 32768.0).tolist())
    online.input_finished()
    want = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    want = want - want.mean(axis=0)
    _, energies = numpy_kaldi_fbank(x)
    feats, _ = fe.fbank(x[None])
    assert_close_within_dynamic_range(feats[0], want, energies)


def test_kaldi_mel_banks_shape_and_edges():
    banks = fe.kaldi_mel_banks(80, 512, 16000.0, 20.0, 0.0)
    assert banks.shape == (80, 257)
    assert np.all(banks[:, -1] == 0)  # Kaldi leaves the Nyquist bin out
    assert np.all(banks[:, 0] == 0)  # 0 Hz is below the 20 Hz edge
    assert np.all(banks.max(axis=1) > 0.25)  # no empty band at 512-point resolution
    assert np.all(np.diff(banks.argmax(axis=1)) >= 0)  # centres rise with the band index


# ----------------------------------------------------------------------------- padding


@pytest.mark.parametrize("kind", ["logmel", "fbank"])
def test_padding_invariance(kind):
    lengths = [CROP, 20_000, 5_000]
    rng = np.random.default_rng(3)
    # Padding is loud noise, not zeros, so any leak into the valid frames would show.
    batch = rng.uniform(-1, 1, (3, CROP)).astype(np.float32)
    utts = [real_like(n, seed=10 + i) for i, n in enumerate(lengths)]
    for i, u in enumerate(utts):
        batch[i, : len(u)] = u
    mask = np.arange(CROP)[None, :] < np.array(lengths)[:, None]
    feats, frame_mask = fe.compute_features(batch, mask, kind=kind)
    assert feats.shape[1] == fe.num_frames(CROP, kind)
    for i, u in enumerate(utts):
        alone, alone_mask = fe.compute_features(u[None], kind=kind)
        t = fe.num_frames(len(u), kind)
        assert alone.shape[1] == t == int(frame_mask[i].sum())
        np.testing.assert_array_equal(np.asarray(frame_mask[i, :t]), True)
        np.testing.assert_allclose(feats[i, :t], alone[0], atol=2e-5, err_msg=f"utterance {i}")
        np.testing.assert_array_equal(np.asarray(feats[i, t:]), 0.0)


# ----------------------------------------------------------------------------- jit / vmap / dtype


def test_jit_equals_eager_and_vmap(chirp):
    x = np.stack([chirp, real_like(CROP, seed=5)])
    eager = fe.compute_features(x)
    jitted = jax.jit(fe.compute_features, static_argnames="kind")(jnp.asarray(x))
    # Different fusion changes float32 FFT roundoff: quiet bands differ at the ~1e-4 level.
    energies = np.exp(np.asarray(fe.logmel(x, mean_norm=False)[0]))
    for b in range(2):
        assert_close_within_dynamic_range(jitted[0][b], eager[0][b], energies[b], atol=2e-5)
    np.testing.assert_array_equal(jitted[1], eager[1])
    mapped = jax.jit(jax.vmap(lambda w: fe.logmel(w[None])[0][0]))(jnp.asarray(x))
    for b in range(2):
        assert_close_within_dynamic_range(mapped[b], eager[0][b], energies[b], atol=2e-5)


def test_bfloat16_input(chirp):
    low = jnp.asarray(chirp[None], jnp.bfloat16)
    feats, _ = fe.logmel(low)
    assert feats.dtype == jnp.float32
    # Upcast first, so bf16 audio gives exactly the float32 features of the rounded audio ...
    np.testing.assert_allclose(feats, fe.logmel(low.astype(jnp.float32))[0], atol=1e-6)
    # ... which stay close to full-precision features (bf16 keeps ~8 bits of each sample).
    ref, _ = fe.logmel(chirp[None])
    assert float(jnp.mean(jnp.abs(feats - ref))) < 0.05


def test_num_frames_and_features():
    assert fe.num_frames(16_000) == 101
    assert fe.num_frames(CROP) == 202
    assert fe.num_frames(160_000) == 1001
    assert fe.num_frames(CROP, "fbank") == 200
    assert fe.num_frames(399, "fbank") == 0
    assert fe.num_frames(400, "fbank") == 1
    assert fe.num_frames(1000, "logmel", hop_length=100, n_mels=40) == 11
    assert fe.num_features() == 80 and fe.num_features("fbank", num_mel_bins=64) == 64


def test_fbank_dither_is_seeded():
    x = real_like(4000, seed=4)[None]
    a = fe.fbank(x, dither=1.0, rng=jax.random.key(0))[0]
    b = fe.fbank(x, dither=1.0, rng=jax.random.key(0))[0]
    c = fe.fbank(x, dither=1.0, rng=jax.random.key(1))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Dither of one 16-bit step barely moves a signal of ~10^4 steps.
    np.testing.assert_allclose(a, fe.fbank(x)[0], atol=0.2)


# ----------------------------------------------------------------------------- SpecAugment


def _bands(drop_1d: np.ndarray) -> list[tuple[int, int]]:
    """(start, width) of each run of True."""
    edges = np.diff(np.concatenate([[0], drop_1d.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts, ends - starts, strict=True))


def test_spec_augment_limits_and_determinism():
    batch, frames, bins = 64, 50, 80
    feats = jnp.ones((batch, frames, bins))
    valid = np.random.default_rng(0).integers(5, frames + 1, batch)
    frame_mask = np.arange(frames)[None, :] < valid[:, None]
    aug = jax.jit(fe.spec_augment)
    out = np.asarray(aug(feats, jax.random.key(7), frame_mask=frame_mask))
    np.testing.assert_array_equal(out, aug(feats, jax.random.key(7), frame_mask=frame_mask))
    assert not np.array_equal(out, aug(feats, jax.random.key(8), frame_mask=frame_mask))
    time_widths, freq_widths = [], []
    for b in range(batch):
        dropped_frames = (out[b] == 0).all(axis=1)
        dropped_bins = (out[b] == 0).all(axis=0)
        t_bands, f_bands = _bands(dropped_frames), _bands(dropped_bins)
        assert len(t_bands) <= 1 and len(f_bands) <= 1
        for start, width in t_bands:
            assert width <= 10 and start + width <= valid[b], (b, start, width, valid[b])
        for _, width in f_bands:
            assert width <= 8
        # Everything else is untouched.
        keep = ~dropped_frames[:, None] & ~dropped_bins[None, :]
        assert (out[b][keep] == 1).all()
        time_widths.append(sum(w for _, w in t_bands))
        freq_widths.append(sum(w for _, w in f_bands))
    # Widths are drawn from 0..max inclusive: over 64 draws both ends show up.
    assert min(freq_widths) == 0 and max(freq_widths) == 8
    assert min(time_widths) == 0 and max(time_widths) >= 9


def test_spec_augment_counts_and_identity():
    feats = jax.random.normal(jax.random.key(0), (4, 100, 40), jnp.bfloat16)
    same = fe.spec_augment(feats, jax.random.key(1), max_time_width=0, max_freq_width=0)
    assert same.dtype == jnp.bfloat16
    np.testing.assert_array_equal(same, feats)
    many = np.asarray(
        fe.spec_augment(
            jnp.ones((4, 100, 40)),
            jax.random.key(2),
            num_time_masks=3,
            max_time_width=5,
            num_freq_masks=0,
        )
    )
    assert not (many == 0).all(axis=1).any()  # no frequency band when num_freq_masks=0
    assert ((many == 0).all(axis=2).sum(axis=1) <= 15).all()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fe.logmel(np.zeros(1000, np.float32)), r"\[batch, samples\].*\(1000,\)"),
        (lambda: fe.logmel(np.zeros((1, 1000), np.int16)), "floating point.*int16"),
        (lambda: fe.logmel(np.zeros((1, 1000)), np.ones((2, 1000), bool)), "mask shape"),
        (lambda: fe.logmel(np.zeros((1, 200))), "200 samples.*256"),
        (lambda: fe.logmel(np.zeros((1, 1000)), fmax=9000.0), "fmax=9000"),
        (lambda: fe.logmel(np.zeros((1, 1000)), win_length=600), "win_length=600"),
        (lambda: fe.logmel(np.zeros((1, 1000)), hop_length=0), "hop_length must be"),
        (lambda: fe.fbank(np.zeros((1, 300))), "fewer than one 400-sample frame"),
        (lambda: fe.fbank(np.zeros((1, 1000)), window="hann"), "window must be one of"),
        (lambda: fe.fbank(np.zeros((1, 1000)), dither=1.0), "needs an rng"),
        (lambda: fe.fbank(np.zeros((1, 1000)), high_freq=9000.0), "high_freq=9000"),
        (lambda: fe.compute_features(np.zeros((1, 1000)), kind="mfcc"), "'fbank', 'logmel'"),
        (lambda: fe.num_frames(-1), "num_samples must be >= 0"),
        (lambda: fe.num_frames(1.5), "must be an int"),
        (lambda: fe.spec_augment(np.zeros((2, 3)), jax.random.key(0)), r"\[batch, frames, bins\]"),
        (
            lambda: fe.spec_augment(np.zeros((2, 3, 4)), jax.random.key(0), max_time_width=-1),
            "max_time_width must be a non-negative integer",
        ),
        (
            lambda: fe.spec_augment(
                np.zeros((2, 3, 4)), jax.random.key(0), frame_mask=np.ones((2, 4), bool)
            ),
            r"frame_mask shape \(2, 4\)",
        ),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
