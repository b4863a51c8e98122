"""Audio front end in pure JAX: the authors' log-mel, Kaldi-style fbank, SpecAugment.

Features are computed from raw 16 kHz waveforms inside the jitted training step, so the host CPU
(scarce on TPU hosts) only decodes and crops audio. Every function here is jit/vmap-able and
padding-aware: with a sample mask (valid samples form a prefix), an utterance padded in a batch
gets exactly the features it gets alone, frames past its end are zeroed and masked out.

Two feature kinds, chosen by name in :func:`compute_features`:

* ``"logmel"`` -- the authors' features (TaoRuijie-style ECAPA-TDNN ``torchfbank``): pre-emphasis
  0.97 with the first sample reflect-padded, a centred STFT (reflect padding, as ``torch.stft``)
  with a 400-sample periodic Hamming window, hop 160, n_fft 512; power spectrum; 80 HTK mel bands
  20-7600 Hz without normalisation (torchaudio ``MelSpectrogram`` defaults, filters from
  ``librosa.filters.mel``); ``log(x + 1e-6)``; per-utterance mean subtraction over time.
* ``"fbank"`` -- Kaldi ``compute-fbank-feats`` as ``torchaudio.compliance.kaldi.fbank`` computes
  it, with WeSpeaker's settings (``wespeaker/dataset/processor.py:compute_fbank``): waveform
  scaled by 2^15, 25 ms / 10 ms frames with ``snip_edges``, DC removal, per-frame pre-emphasis
  0.97, Hamming window, zero padding to 512, power spectrum, 80 Kaldi mel bins (triangles in the
  mel domain, 20 Hz to Nyquist), ``log(max(e, float32 eps))``, then per-utterance CMN
  (WeSpeaker's ``apply_cmvn``).

Shapes: waveforms ``[B, S]`` float (bfloat16/float16 are upcast to float32), sample mask
``[B, S]`` bool; features ``[B, T, F]`` float32 with a frame mask ``[B, T]`` bool. (Under
``jax_enable_x64`` a float64 input is computed and returned in float64.)

Precision: in float32 the FFT's roundoff is about ``eps * |frame|``, so a mel band 60-90 dB
below the loudest band of its frame carries a relative error of ~1e-3 in its log; bands within
60 dB of it match a float64 reference to ~1e-4. Every float32 implementation shares this limit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import scipy.signal
from jax.typing import ArrayLike

from hamjax.constants import HOP_SAMPLES, SAMPLE_RATE, WINDOW_SAMPLES

__all__ = [
    "FEATURES",
    "compute_features",
    "fbank",
    "feature_kwargs",
    "kaldi_mel_banks",
    "logmel",
    "num_features",
    "num_frames",
    "spec_augment",
]

# torch.finfo(torch.float32).eps: the floor torchaudio's kaldi.fbank takes before the log.
_KALDI_LOG_FLOOR = float(np.finfo(np.float32).eps)
_KALDI_WINDOWS = ("hamming", "povey", "hanning", "rectangular", "blackman")


# --------------------------------------------------------------------------- input checks


def _check_waveforms(
    waveforms: ArrayLike, mask: ArrayLike | None, fn: str
) -> tuple[jax.Array, jax.Array | None]:
    """Validates ``waveforms [B, S]`` (float) and ``mask [B, S]``; returns float32 / bool."""
    waveforms = jnp.asarray(waveforms)
    if waveforms.ndim != 2:
        raise ValueError(
            f"{fn}: waveforms must be [batch, samples], got shape {tuple(waveforms.shape)}"
        )
    if not jnp.issubdtype(waveforms.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: waveforms must be floating point in [-1, 1], got dtype {waveforms.dtype}"
            " (divide integer PCM by 2**15 first)"
        )
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != waveforms.shape:
            raise ValueError(
                f"{fn}: mask shape {tuple(mask.shape)} must equal waveforms shape "
                f"{tuple(waveforms.shape)}"
            )
        mask = mask.astype(bool)
    # bfloat16 audio has ~3 significant digits; the STFT and log need at least float32.
    # float64 (only under jax_enable_x64) is kept: it is how the tests check the algorithm
    # exactly, free of float32 FFT roundoff.
    return waveforms.astype(jnp.promote_types(waveforms.dtype, jnp.float32)), mask


def _positive_int(value: Any, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{fn}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _lengths(mask: jax.Array | None, batch: int, samples: int) -> jax.Array:
    """Valid samples per utterance ``[B]`` int32 (the mask's prefix length)."""
    if mask is None:
        return jnp.full((batch,), samples, jnp.int32)
    return jnp.sum(mask, axis=1, dtype=jnp.int32)


# --------------------------------------------------------------------------- shared pieces


def _frame(signal: jax.Array, frame_length: int, hop: int, frames: int) -> jax.Array:
    """Frames ``signal [B, N]`` into ``[B, frames, frame_length]``; frame t starts at t * hop.

    Built from ``ceil(frame_length / hop)`` shifted views of the signal reshaped into hop-sized
    chunks, so no gather is needed (gathers are slow on TPU).
    """
    batch, n = signal.shape
    chunks = -(-frame_length // hop)
    needed = (frames + chunks - 1) * hop
    if jax.export.is_symbolic_dim(n):
        # A symbolic length (jax.export): ``needed > n`` is undecidable; pad by a static bound.
        signal = jnp.pad(signal, ((0, 0), (0, chunks * hop)))
    elif needed > n:  # samples past the end only ever land in the discarded tail of a view
        signal = jnp.pad(signal, ((0, 0), (0, needed - n)))
    blocks = signal[:, :needed].reshape(batch, frames + chunks - 1, hop)
    views = [blocks[:, i : i + frames] for i in range(chunks)]
    return jnp.concatenate(views, axis=-1)[..., :frame_length]


def _power_spectrum(frames: jax.Array, window: np.ndarray, n_fft: int) -> jax.Array:
    """``|rfft(frames * window, n_fft)|^2``: ``[B, T, W] -> [B, T, n_fft // 2 + 1]``."""
    spec = jnp.fft.rfft(frames * jnp.asarray(window, frames.dtype), n=n_fft, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def _mel(power: jax.Array, filters: np.ndarray) -> jax.Array:
    """Applies ``filters [F, K]`` to ``power [B, T, K]``; full float32 precision on TPU too."""
    return jnp.einsum(
        "btk,fk->btf", power, jnp.asarray(filters, power.dtype), precision=jax.lax.Precision.HIGHEST
    )


def _known_frame_mask(mask: jax.Array | None, frame_mask: jax.Array) -> jax.Array | np.ndarray:
    """The frame mask to return: without a sample mask every frame is valid, and that is said
    with a concrete numpy array of True (known while tracing), so that an encoder called inside
    the same jitted function skips all masking work
    (:func:`hamjax.models.layers.known_all_valid`). A symbolic shape (``jax.export``) keeps the
    computed mask."""
    if mask is not None or not all(isinstance(d, int) for d in frame_mask.shape):
        return frame_mask
    return np.ones(frame_mask.shape, bool)


def _normalise(
    feats: jax.Array, valid_frames: jax.Array, mean_norm: bool
) -> tuple[jax.Array, jax.Array]:
    """Subtracts each utterance's mean over its valid frames; zeroes frames past its end.

    .. math:: \\hat x_{t,f} = x_{t,f} - \\frac{1}{T_b} \\sum_{t' < T_b} x_{t',f}

    ``jnp.where`` (not a multiply) keeps whatever the padding produced (even inf/NaN) out.
    """
    frame_mask = jnp.arange(feats.shape[1])[None, :] < valid_frames[:, None]
    feats = jnp.where(frame_mask[..., None], feats, 0.0)
    if mean_norm:
        count = jnp.maximum(valid_frames, 1).astype(feats.dtype)[:, None, None]
        feats = feats - jnp.sum(feats, axis=1, keepdims=True) / count
        feats = jnp.where(frame_mask[..., None], feats, 0.0)
    return feats, frame_mask


# --------------------------------------------------------------------------- log-mel


@functools.lru_cache(maxsize=16)
def _librosa_mel(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """HTK mel filters without area normalisation, ``[n_mels, n_fft // 2 + 1]`` (torchaudio's
    ``melscale_fbanks(norm=None, mel_scale="htk")``, which the authors' MelSpectrogram uses)."""
    fb = librosa.filters.mel(
        sr=sample_rate,
        n_fft=n_fft,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        htk=True,
        norm=None,
        dtype=np.float64,
    )
    fb.setflags(write=False)
    return fb


def logmel(
    waveforms: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = 512,
    win_length: int = WINDOW_SAMPLES,
    hop_length: int = HOP_SAMPLES,
    n_mels: int = 80,
    fmin: float = 20.0,
    fmax: float = 7600.0,
    preemphasis: float = 0.97,
    log_offset: float = 1e-6,
    mean_norm: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """The authors' log-mel features (TaoRuijie ECAPA-TDNN ``torchfbank``), padding-aware.

    Per utterance of ``L`` valid samples:

    .. math::
        y_n = x_n - a\\,x_{n-1}\\ (x_{-1} := x_1),\\qquad
        P_{t,k} = \\Big|\\sum_{j} w_j\\, \\tilde y_{tH + j - W/2}\\, e^{-2\\pi i jk/N}\\Big|^2,

        M_{t,f} = \\log\\Big(\\sum_k B_{f,k} P_{t,k} + \\epsilon\\Big),\\qquad
        \\text{feat}_{t,f} = M_{t,f} - \\tfrac{1}{T}\\sum_{t'} M_{t',f},

    where ``\\tilde y`` is ``y`` reflect-padded by ``n_fft // 2`` at both ends *of the
    utterance* (so the end padding reflects its own last samples, not the batch padding), ``w``
    the periodic Hamming window zero-padded centrally to ``n_fft``, ``B`` the HTK mel filters
    of ``librosa.filters.mel(..., htk=True, norm=None)`` and ``T = 1 + L // hop_length``.

    Args:
      waveforms: ``[B, S]`` float audio in [-1, 1] at ``sample_rate`` (bfloat16 is upcast).
      mask: optional ``[B, S]`` bool, True on valid samples (a prefix of each row). Utterances
        shorter than ``n_fft // 2 + 1`` samples (torch.stft refuses them) are clamped at their
        ends instead of reflected.
      sample_rate: Hz.
      n_fft: FFT size (>= ``win_length``).
      win_length: Hamming window length in samples (25 ms).
      hop_length: frame shift in samples (10 ms).
      n_mels: mel bands.
      fmin: lowest band edge, Hz.
      fmax: highest band edge, Hz (<= sample_rate / 2).
      preemphasis: coefficient ``a``; 0 disables it.
      log_offset: ``epsilon`` added before the log.
      mean_norm: subtract each utterance's mean over its valid frames.

    Returns:
      ``(feats [B, T, n_mels] float32, frame_mask [B, T] bool)`` with
      ``T = num_frames(S, "logmel")``; frames past an utterance's end are 0 and masked out.

    Raises:
      ValueError: bad shapes, dtypes or parameters (the message names which).

    Example:
      >>> feats, fmask = logmel(jnp.zeros((2, 32240)) + 0.1)
      >>> feats.shape, fmask.shape
      ((2, 202, 80), (2, 202))
    """
    fn = "frontend.logmel"
    waveforms, mask = _check_waveforms(waveforms, mask, fn)
    for name, value in (
        ("sample_rate", sample_rate),
        ("n_fft", n_fft),
        ("win_length", win_length),
        ("hop_length", hop_length),
        ("n_mels", n_mels),
    ):
        _positive_int(value, name, fn)
    if win_length > n_fft:
        raise ValueError(f"{fn}: win_length={win_length} must be <= n_fft={n_fft}")
    if not 0.0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"{fn}: need 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}, "
            f"got fmin={fmin}, fmax={fmax}"
        )
    if not log_offset > 0:
        raise ValueError(f"{fn}: log_offset must be > 0, got {log_offset}")
    batch, samples = waveforms.shape
    pad = n_fft // 2
    if samples <= pad:
        raise ValueError(
            f"{fn}: waveforms have {samples} samples; the centred STFT needs more than "
            f"n_fft // 2 = {pad}"
        )

    feats, frame_mask = _logmel_core(
        waveforms,
        mask,
        sample_rate=int(sample_rate),
        n_fft=int(n_fft),
        win_length=int(win_length),
        hop_length=int(hop_length),
        n_mels=int(n_mels),
        fmin=float(fmin),
        fmax=float(fmax),
        preemphasis=float(preemphasis),
        log_offset=float(log_offset),
        mean_norm=bool(mean_norm),
    )
    return feats, _known_frame_mask(mask, frame_mask)


# Validation stays in Python (clear errors, static values); the arithmetic is one jitted
# computation per configuration and shape, so eager callers do not pay op-by-op dispatch, and
# inside a jitted training step it simply inlines.
@functools.partial(
    jax.jit,
    static_argnames=(
        "sample_rate",
        "n_fft",
        "win_length",
        "hop_length",
        "n_mels",
        "fmin",
        "fmax",
        "preemphasis",
        "log_offset",
        "mean_norm",
    ),
)
def _logmel_core(
    waveforms: jax.Array,
    mask: jax.Array | None,
    *,
    sample_rate: int,
    n_fft: int,
    win_length: int,
    hop_length: int,
    n_mels: int,
    fmin: float,
    fmax: float,
    preemphasis: float,
    log_offset: float,
    mean_norm: bool,
) -> tuple[jax.Array, jax.Array]:
    batch, samples = waveforms.shape
    pad = n_fft // 2

    x = waveforms
    if preemphasis:
        # The authors' PreEmphasis: F.pad(x, (1, 0), "reflect") then conv with [-a, 1], so the
        # first output is x[0] - a * x[1].
        prev = jnp.concatenate([x[:, 1:2], x[:, :-1]], axis=1)
        x = x - preemphasis * prev

    lengths = _lengths(mask, batch, samples)
    if mask is None:
        padded = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    else:
        # Reflect about each utterance's own end: position p maps to 2(L-1) - p past it.
        pos = jnp.arange(samples + 2 * pad, dtype=jnp.int32)[None, :] - pad
        last = (lengths - 1)[:, None]
        pos = jnp.abs(pos)
        pos = jnp.where(pos > last, 2 * last - pos, pos)
        pos = jnp.clip(pos, 0, last)
        padded = jnp.take_along_axis(x, pos, axis=1)

    frames_total = num_frames(samples, "logmel", hop_length=hop_length)
    # torch.stft zero-pads the window centrally to n_fft; |DFT|^2 is invariant to the circular
    # shift this implies, so frames of win_length samples starting at the offset suffice.
    offset = (n_fft - win_length) // 2
    frames = _frame(padded[:, offset:], win_length, hop_length, frames_total)
    window = scipy.signal.get_window("hamming", win_length, fftbins=True)  # torch periodic
    power = _power_spectrum(frames, window, n_fft)
    filters = _librosa_mel(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax))
    feats = jnp.log(_mel(power, filters) + log_offset)
    valid = 1 + lengths // hop_length
    return _normalise(feats, valid, mean_norm)


# --------------------------------------------------------------------------- Kaldi fbank


def _kaldi_mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(freq / 700.0)


@functools.lru_cache(maxsize=16)
def kaldi_mel_banks(
    num_bins: int, padded_window_size: int, sample_rate: float, low_freq: float, high_freq: float
) -> np.ndarray:
    """Kaldi's mel filterbank ``[num_bins, padded_window_size // 2 + 1]`` (no VTLN).

    Triangles are linear in the mel domain ``mel(f) = 1127 ln(1 + f / 700)``, with
    ``num_bins + 2`` equally spaced edges from ``mel(low_freq)`` to ``mel(high_freq)``; the
    Nyquist column is zero. Follows Kaldi ``feat/mel-computations.cc`` (``MelBanks::MelBanks``)
    and ``torchaudio.compliance.kaldi.get_mel_banks``; librosa has no mel-domain triangles, so
    this is the one filterbank written here. ``high_freq <= 0`` means Nyquist + ``high_freq``.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(
            f"frontend.fbank: need 0 <= low_freq < high_freq <= Nyquist = {nyquist}, got "
            f"low_freq={low_freq}, high_freq={high_freq}"
        )
    num_fft_bins = padded_window_size // 2
    mel_low, mel_high = _kaldi_mel(np.float64(low_freq)), _kaldi_mel(np.float64(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + delta * np.arange(num_bins, dtype=np.float64)[:, None]
    centre, right = left + delta, left + 2.0 * delta
    mel = _kaldi_mel(sample_rate / padded_window_size * np.arange(num_fft_bins))[None, :]
    banks = np.maximum(0.0, np.minimum((mel - left) / (centre - left), (right - mel) / delta))
    banks = np.pad(banks, ((0, 0), (0, 1)))  # float64; cast to the compute dtype at use
    banks.setflags(write=False)
    return banks


def _kaldi_window(kind: str, length: int) -> np.ndarray:
    """Kaldi's symmetric windows (``feature-window.cc``), from scipy where scipy has them."""
    if kind == "hamming":
        return scipy.signal.get_window("hamming", length, fftbins=False)
    if kind == "hanning":
        return scipy.signal.get_window("hann", length, fftbins=False)
    if kind == "povey":  # Kaldi's default: a Hann window raised to 0.85
        return scipy.signal.get_window("hann", length, fftbins=False) ** 0.85
    if kind == "blackman":  # Kaldi's blackman_coeff 0.42 is scipy's classic Blackman
        return scipy.signal.get_window("blackman", length, fftbins=False)
    if kind == "rectangular":
        return np.ones(length)
    raise ValueError(f"frontend.fbank: window must be one of {_KALDI_WINDOWS}, got {kind!r}")


def fbank(
    waveforms: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    sample_rate: int = SAMPLE_RATE,
    num_mel_bins: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    preemphasis: float = 0.97,
    window: str = "hamming",
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    scale: float = float(1 << 15),
    dither: float = 0.0,
    rng: jax.Array | None = None,
    mean_norm: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Kaldi-style log mel filterbank as WeSpeaker computes it, padding-aware.

    Reproduces ``torchaudio.compliance.kaldi.fbank(waveform * 2**15, num_mel_bins=80,
    frame_length=25, frame_shift=10, dither=0, window_type="hamming", use_energy=False)``
    followed by WeSpeaker's ``apply_cmvn`` (mean only). Per frame ``t`` of ``W`` samples
    starting at ``t * shift`` (``snip_edges``: only whole frames inside the utterance):

    .. math::
        z = s\\,x_{tH:tH+W};\\quad z \\leftarrow z - \\bar z;\\quad
        z_j \\leftarrow z_j - a\\,z_{\\max(j-1, 0)};\\quad
        E_f = \\sum_k B_{f,k} |\\mathrm{rfft}_N(w \\odot z)_k|^2;\\quad
        \\text{feat}_{t,f} = \\log\\max(E_f, \\epsilon_{32}) - \\text{mean}_t,

    with ``B`` from :func:`kaldi_mel_banks` and ``N`` the next power of two >= ``W``.
    (Kaldi's own default window is ``"povey"``; WeSpeaker passes ``"hamming"``.)

    Args:
      waveforms: ``[B, S]`` float audio in [-1, 1] (bfloat16 is upcast).
      mask: optional ``[B, S]`` bool, True on valid samples (a prefix of each row).
      sample_rate: Hz.
      num_mel_bins: mel bins.
      frame_length_ms: frame length in ms (25 ms = 400 samples at 16 kHz).
      frame_shift_ms: frame shift in ms (10 ms = 160 samples).
      low_freq: lowest mel edge, Hz.
      high_freq: highest mel edge, Hz; ``<= 0`` is an offset from Nyquist (Kaldi's rule).
      preemphasis: coefficient ``a`` (per frame, first sample replicated); 0 disables it.
      window: one of ``"hamming"`` (WeSpeaker), ``"povey"`` (Kaldi), ``"hanning"``,
        ``"rectangular"``, ``"blackman"``.
      remove_dc_offset: subtract each frame's mean before pre-emphasis.
      round_to_power_of_two: zero-pad frames to the next power of two for the FFT.
      scale: waveform multiplier (WeSpeaker feeds 16-bit magnitudes: 2**15).
      dither: standard deviation of Gaussian noise added to each frame (after scaling), as
        Kaldi's dither; WeSpeaker trains with 1.0 and extracts with 0. Needs ``rng`` when > 0.
      rng: PRNG key for the dither.
      mean_norm: subtract each utterance's mean over its valid frames (CMN).

    Returns:
      ``(feats [B, T, num_mel_bins] float32, frame_mask [B, T] bool)``, ``T =
      num_frames(S, "fbank")``; an utterance of ``L`` samples has ``1 + (L - W) // H`` valid
      frames (none when ``L < W``).

    Raises:
      ValueError: bad shapes, dtypes or parameters, or fewer samples than one frame.
    """
    fn = "frontend.fbank"
    waveforms, mask = _check_waveforms(waveforms, mask, fn)
    _positive_int(sample_rate, "sample_rate", fn)
    _positive_int(num_mel_bins, "num_mel_bins", fn)
    win, hop = _kaldi_frame_sizes(sample_rate, frame_length_ms, frame_shift_ms, fn)
    if window not in _KALDI_WINDOWS:
        raise ValueError(f"{fn}: window must be one of {_KALDI_WINDOWS}, got {window!r}")
    if dither < 0:
        raise ValueError(f"{fn}: dither must be >= 0, got {dither}")
    if dither > 0 and rng is None:
        raise ValueError(f"{fn}: dither={dither} needs an rng key")
    batch, samples = waveforms.shape
    frames_total = num_frames(
        samples,
        "fbank",
        sample_rate=sample_rate,
        frame_length_ms=frame_length_ms,
        frame_shift_ms=frame_shift_ms,
    )
    if frames_total == 0:
        raise ValueError(
            f"{fn}: waveforms have {samples} samples, fewer than one {win}-sample frame"
        )
    n_fft = 1 << (win - 1).bit_length() if round_to_power_of_two else win
    kaldi_mel_banks(  # validates the band edges now, with a clear error
        int(num_mel_bins), int(n_fft), float(sample_rate), float(low_freq), float(high_freq)
    )
    feats, frame_mask = _fbank_core(
        waveforms,
        mask,
        rng if dither > 0 else None,
        sample_rate=int(sample_rate),
        num_mel_bins=int(num_mel_bins),
        win=win,
        hop=hop,
        n_fft=n_fft,
        low_freq=float(low_freq),
        high_freq=float(high_freq),
        preemphasis=float(preemphasis),
        window=window,
        remove_dc_offset=bool(remove_dc_offset),
        scale=float(scale),
        dither=float(dither),
        mean_norm=bool(mean_norm),
    )
    return feats, _known_frame_mask(mask, frame_mask)


@functools.partial(
    jax.jit,
    static_argnames=(
        "sample_rate",
        "num_mel_bins",
        "win",
        "hop",
        "n_fft",
        "low_freq",
        "high_freq",
        "preemphasis",
        "window",
        "remove_dc_offset",
        "scale",
        "dither",
        "mean_norm",
    ),
)
def _fbank_core(
    waveforms: jax.Array,
    mask: jax.Array | None,
    rng: jax.Array | None,
    *,
    sample_rate: int,
    num_mel_bins: int,
    win: int,
    hop: int,
    n_fft: int,
    low_freq: float,
    high_freq: float,
    preemphasis: float,
    window: str,
    remove_dc_offset: bool,
    scale: float,
    dither: float,
    mean_norm: bool,
) -> tuple[jax.Array, jax.Array]:
    batch, samples = waveforms.shape
    frames_total = 1 + (samples - win) // hop
    banks = kaldi_mel_banks(
        int(num_mel_bins), int(n_fft), float(sample_rate), float(low_freq), float(high_freq)
    )

    frames = _frame(waveforms * scale, win, hop, frames_total)
    if dither > 0:
        frames = frames + dither * jax.random.normal(rng, frames.shape, frames.dtype)
    if remove_dc_offset:
        frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    if preemphasis:
        prev = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
        frames = frames - preemphasis * prev
    power = _power_spectrum(frames, _kaldi_window(window, win), n_fft)
    feats = jnp.log(jnp.maximum(_mel(power, banks), _KALDI_LOG_FLOOR))
    lengths = _lengths(mask, batch, samples)
    valid = jnp.where(lengths >= win, 1 + (lengths - win) // hop, 0)
    return _normalise(feats, valid, mean_norm)


def _kaldi_frame_sizes(
    sample_rate: int, frame_length_ms: float, frame_shift_ms: float, fn: str
) -> tuple[int, int]:
    # torchaudio: int(sample_frequency * frame_length * MILLISECONDS_TO_SECONDS).
    win = int(sample_rate * frame_length_ms * 0.001)
    hop = int(sample_rate * frame_shift_ms * 0.001)
    if win <= 0 or hop <= 0:
        raise ValueError(
            f"{fn}: frame_length_ms={frame_length_ms} and frame_shift_ms={frame_shift_ms} must "
            f"each give at least one sample at {sample_rate} Hz"
        )
    return win, hop


# --------------------------------------------------------------------------- dispatch

FEATURES: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {
    "logmel": logmel,
    "fbank": fbank,
}


def _check_kind(kind: str, fn: str) -> None:
    if kind not in FEATURES:
        raise ValueError(f"{fn}: kind must be one of {sorted(FEATURES)}, got {kind!r}")


def compute_features(
    waveforms: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    kind: str = "logmel",
    **kwargs: Any,
) -> tuple[jax.Array, jax.Array]:
    """Features of kind ``"logmel"`` (the authors') or ``"fbank"`` (Kaldi / WeSpeaker).

    Args:
      waveforms: ``[B, S]`` float audio in [-1, 1] at 16 kHz.
      mask: optional ``[B, S]`` bool sample mask (True = valid, a prefix of each row).
      kind: a key of :data:`FEATURES`.
      **kwargs: passed to :func:`logmel` or :func:`fbank`.

    Returns:
      ``(feats [B, T, F] float32, frame_mask [B, T] bool)``. Without ``mask`` the frame mask
      is a numpy array of True (a constant even under ``jit``: encoders then skip masking).

    Raises:
      ValueError: unknown ``kind`` (the valid ones are listed) or bad input.
    """
    _check_kind(kind, "frontend.compute_features")
    return FEATURES[kind](waveforms, mask, **kwargs)


def num_frames(num_samples: int, kind: str = "logmel", **kwargs: Any) -> int:
    """Frames :func:`compute_features` returns for ``num_samples`` samples.

    ``logmel`` (centred): ``1 + S // hop_length``; ``fbank`` (snip_edges):
    ``1 + (S - W) // H`` or 0 when ``S < W``. E.g. the authors' 2-s crop of 32240 samples gives
    202 log-mel frames and 200 fbank frames.

    Args:
      num_samples: samples per utterance (>= 0).
      kind: ``"logmel"`` or ``"fbank"``.
      **kwargs: the frame settings of that kind (``hop_length`` for logmel; ``sample_rate``,
        ``frame_length_ms``, ``frame_shift_ms`` for fbank); others are ignored so that a
        feature config can be passed whole.

    Returns:
      The frame count.
    """
    fn = "frontend.num_frames"
    _check_kind(kind, fn)
    # A symbolic dimension (jax.export with a symbolic length) is an int for these formulas.
    if jax.export.is_symbolic_dim(num_samples):
        pass
    elif isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise ValueError(f"{fn}: num_samples must be an int, got {num_samples!r}")
    else:
        num_samples = int(num_samples)
    if num_samples < 0:
        raise ValueError(f"{fn}: num_samples must be >= 0, got {num_samples}")
    if kind == "logmel":
        hop = _positive_int(kwargs.get("hop_length", 160), "hop_length", fn)
        return 1 + num_samples // hop
    win, hop = _kaldi_frame_sizes(
        kwargs.get("sample_rate", SAMPLE_RATE),
        kwargs.get("frame_length_ms", 25.0),
        kwargs.get("frame_shift_ms", 10.0),
        fn,
    )
    return 0 if num_samples < win else 1 + (num_samples - win) // hop


def num_features(kind: str = "logmel", **kwargs: Any) -> int:
    """Feature dimension ``F`` of :func:`compute_features` (``n_mels`` / ``num_mel_bins``)."""
    _check_kind(kind, "frontend.num_features")
    return int(kwargs.get("n_mels" if kind == "logmel" else "num_mel_bins", 80))


#: Keys of a config's ``features`` section that are not :func:`compute_features` arguments
#: (training-time augmentation, read by the trainer).
TRAIN_ONLY_KEYS = ("spec_augment",)


def feature_kwargs(features: Any) -> dict[str, Any]:
    """:func:`compute_features` keyword arguments of a config's ``features`` section.

    Args:
      features: the ``features`` section (a ``ConfigDict`` or a mapping): ``kind`` and the
        frontend's options, plus the training-only :data:`TRAIN_ONLY_KEYS`, which are dropped.
    """
    items = features.to_dict() if hasattr(features, "to_dict") else dict(features)
    return {k: v for k, v in items.items() if k not in TRAIN_ONLY_KEYS}


def validate_config(features: Any) -> None:
    """Checks a config's ``features`` section (raises ``ValueError`` naming the field).

    The frontend is traced on one second of silence with the section's options, so a bad kind
    or option fails here with the frontend's own message, before any training.
    """
    kind = features.get("kind", "logmel")
    if kind not in FEATURES:
        raise ValueError(
            f"config.features.kind = {kind!r} is invalid: expected one of {sorted(FEATURES)}"
        )
    kwargs = feature_kwargs(features)
    try:
        jax.eval_shape(
            lambda w: compute_features(w, None, **kwargs),
            jax.ShapeDtypeStruct((1, SAMPLE_RATE), jnp.float32),
        )
    except TypeError as err:
        raise ValueError(f"config.features: {err}") from err


# --------------------------------------------------------------------------- SpecAugment


def _band_mask(
    rng: jax.Array, batch: int, size: int, limit: jax.Array, count: int, max_width: int
) -> jax.Array:
    """``[batch, size]`` bool: ``count`` bands per row, each of width ~ U{0..max_width} (capped
    at ``limit``) starting uniformly so that it lies within the first ``limit`` positions."""
    if count == 0 or max_width == 0:
        return jnp.zeros((batch, size), bool)
    k_width, k_start = jax.random.split(rng)
    width = jax.random.randint(k_width, (batch, count), 0, max_width + 1)
    width = jnp.minimum(width, limit[:, None])
    room = (limit[:, None] - width + 1).astype(jnp.float32)  # start in {0, .., limit - width}
    start = jnp.floor(jax.random.uniform(k_start, (batch, count)) * room).astype(jnp.int32)
    start = jnp.minimum(start, limit[:, None] - width)
    pos = jnp.arange(size)[None, None, :]
    band = (pos >= start[..., None]) & (pos < (start + width)[..., None])
    return jnp.any(band, axis=1)


def spec_augment(
    feats: ArrayLike,
    rng: jax.Array,
    *,
    frame_mask: ArrayLike | None = None,
    num_time_masks: int = 1,
    max_time_width: int = 10,
    num_freq_masks: int = 1,
    max_freq_width: int = 8,
) -> jax.Array:
    """SpecAugment as the authors use it: zeroes time and frequency bands of ``feats``.

    Each utterance gets ``num_time_masks`` bands of ``w ~ U{0, .., max_time_width}`` frames
    and ``num_freq_masks`` bands of ``w ~ U{0, .., max_freq_width}`` bins, each placed
    uniformly inside the valid region (its valid frames; all bins), independently per
    utterance. Masked entries become 0, the post-normalisation mean, as in the authors'
    ``FbankAug`` (whose ``torch.randint`` upper bounds are exclusive, i.e. widths 0-9 / 0-7).

    Args:
      feats: ``[B, T, F]`` features.
      rng: PRNG key; the masks are a deterministic function of it.
      frame_mask: optional ``[B, T]`` bool valid-frame mask (a prefix of each row); time bands
        stay inside it. Default: all frames valid.
      num_time_masks: time bands per utterance (>= 0).
      max_time_width: widest time band, frames (>= 0).
      num_freq_masks: frequency bands per utterance (>= 0).
      max_freq_width: widest frequency band, bins (>= 0).

    Returns:
      ``[B, T, F]``, the dtype of ``feats``.

    Raises:
      ValueError: bad shapes or negative counts/widths.
    """
    fn = "frontend.spec_augment"
    feats = jnp.asarray(feats)
    if feats.ndim != 3:
        raise ValueError(f"{fn}: feats must be [batch, frames, bins], got {tuple(feats.shape)}")
    for name, value in (
        ("num_time_masks", num_time_masks),
        ("max_time_width", max_time_width),
        ("num_freq_masks", num_freq_masks),
        ("max_freq_width", max_freq_width),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{fn}: {name} must be a non-negative integer, got {value!r}")
    batch, frames, bins = feats.shape
    if frame_mask is None:
        valid = jnp.full((batch,), frames, jnp.int32)
    else:
        frame_mask = jnp.asarray(frame_mask)
        if frame_mask.shape != (batch, frames):
            raise ValueError(
                f"{fn}: frame_mask shape {tuple(frame_mask.shape)} must be {(batch, frames)}"
            )
        valid = jnp.sum(frame_mask.astype(bool), axis=1, dtype=jnp.int32)
    return _spec_augment_core(
        feats,
        rng,
        valid,
        num_time_masks=int(num_time_masks),
        max_time_width=int(max_time_width),
        num_freq_masks=int(num_freq_masks),
        max_freq_width=int(max_freq_width),
    )


@functools.partial(
    jax.jit,
    static_argnames=("num_time_masks", "max_time_width", "num_freq_masks", "max_freq_width"),
)
def _spec_augment_core(
    feats: jax.Array,
    rng: jax.Array,
    valid: jax.Array,
    *,
    num_time_masks: int,
    max_time_width: int,
    num_freq_masks: int,
    max_freq_width: int,
) -> jax.Array:
    batch, frames, bins = feats.shape
    k_time, k_freq = jax.random.split(rng)
    time = _band_mask(k_time, batch, frames, valid, int(num_time_masks), int(max_time_width))
    freq = _band_mask(
        k_freq,
        batch,
        bins,
        jnp.full((batch,), bins, jnp.int32),
        int(num_freq_masks),
        int(max_freq_width),
    )
    drop = time[:, :, None] | freq[:, None, :]
    return jnp.where(drop, jnp.zeros((), feats.dtype), feats)
