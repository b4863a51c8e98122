r"""A source-filter speech synthesiser whose voices come from a known four-level hierarchy.

:mod:`hamjax.data.synthetic` builds its corpus from this; :mod:`hamjax.data.augment` takes its
babble voices, room impulse responses and coloured noise from here.

Parameters are drawn down a tree:

* **family** (:class:`FamilyParams`) -- a phone inventory (vowel formant targets F1-F3,
  fricative noise bands, stop-burst bands, nasal formants), phonotactics (syllable shapes, speech
  rate) and a spectral-envelope class (formant bandwidths, spectral tilt): a "language".
* **base voice** (:class:`VoiceParams`) -- a vocal-tract length (every formant scaled by
  ``1 / vtl_scale``), an F0 register drawn independently of it from one shared range (so
  registers overlap), a voice quality (Rosenberg glottal open quotient, breathiness = aspiration
  noise, jitter, shimmer, extra spectral tilt), high formants F4/F5 and idiosyncratic per-vowel
  formant offsets: an accent / gender / age group.
* **speaker** -- a small perturbation of every base-voice parameter (:func:`sample_speaker`).
* **utterance** -- a random phone sequence with formant transitions and pauses, and an F0
  contour with declination, accents and a register shift (:func:`synthesize_utterance`).

Synthesis: a Rosenberg glottal pulse train (per-period jitter and shimmer) plus pulsed aspiration
noise drives a cascade of five Klatt resonators

.. math::
    y[n] = A x[n] + B y[n-1] + C y[n-2],\quad C = -e^{-2\pi \mathrm{BW}/f_s},\quad
    B = 2 e^{-\pi \mathrm{BW}/f_s} \cos(2\pi F/f_s),\quad A = 1 - B - C

whose coefficients change every 10 ms frame during transitions (filter state carried across
frames, as in Klatt's synthesiser); fricatives and stop bursts are band-passed noise; lip
radiation is a first difference.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import scipy.fft
import scipy.signal

from hamjax.data import audio

SAMPLE_RATE = audio.SAMPLE_RATE
_FRAME = 160  # 10 ms control frames at 16 kHz (formant tracks are updated at this rate).


# ---------------------------------------------------------------------------------------------
# The hierarchy
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FamilyParams:
    """A family's phone inventory and spectral-envelope class (formants for ``vtl_scale = 1``).

    Attributes:
      vowels: ``[V, 3]`` F1-F3 targets in Hz.
      fricatives: ``[K, 2]`` noise pass bands (low, high) in Hz.
      bursts: ``[P, 2]`` stop-burst pass bands in Hz.
      nasal: ``[3]`` nasal-murmur formants in Hz.
      bandwidth_scale: multiplies every formant bandwidth (the envelope class's sharpness).
      tilt: extra one-pole low-pass coefficient in [0, 1) (the envelope class's slope).
      consonant_rate: probability that a syllable has an onset consonant.
      coda_rate: probability that a syllable has a coda consonant.
      phone_weights: ``[4]`` probabilities of consonant classes (fricative, stop, nasal, glide).
      vowel_ms: mean vowel duration in ms.
    """

    vowels: np.ndarray
    fricatives: np.ndarray
    bursts: np.ndarray
    nasal: np.ndarray
    bandwidth_scale: float
    tilt: float
    consonant_rate: float
    coda_rate: float
    phone_weights: np.ndarray
    vowel_ms: float


@dataclasses.dataclass(frozen=True)
class VoiceParams:
    """A base voice or a speaker.

    Attributes:
      vtl_scale: vocal-tract length relative to the reference; formants scale by ``1/vtl_scale``.
      f0_hz: median F0 register in Hz.
      open_quotient: Rosenberg glottal open quotient (fraction of the period the glottis is open).
      breathiness: aspiration-noise to voicing ratio.
      jitter: relative standard deviation of per-period F0.
      shimmer: relative standard deviation of per-period amplitude.
      tilt: extra one-pole low-pass coefficient in [0, 1) (softer voice = larger).
      high_formants: ``[2]`` F4, F5 in Hz for ``vtl_scale = 1``.
      formant_offsets: ``[V, 3]`` multiplicative per-vowel formant offsets (idiolect / accent).
      bandwidth_scale: multiplies the family's formant bandwidths.
      rate: speech-rate factor (durations divide by it).
      f0_range: depth of intonation (log-F0 accent amplitude).
    """

    vtl_scale: float
    f0_hz: float
    open_quotient: float
    breathiness: float
    jitter: float
    shimmer: float
    tilt: float
    high_formants: np.ndarray
    formant_offsets: np.ndarray
    bandwidth_scale: float
    rate: float
    f0_range: float


def sample_family(rng: np.random.Generator) -> FamilyParams:
    """Draws a family: a 5-8 vowel inventory from the F1/F2 vowel space, consonant bands, style."""
    num_vowels = int(rng.integers(5, 9))
    vowels = []
    while len(vowels) < num_vowels:
        f1 = rng.uniform(260.0, 850.0)
        f2 = rng.uniform(750.0, 2500.0)
        # The vowel space is a triangle: open vowels (high F1) cannot be very front or back.
        if f2 - f1 < 350.0 or f2 > 2500.0 - 1.2 * (f1 - 260.0):
            continue
        if any(abs(np.log(f1 / v[0])) + abs(np.log(f2 / v[1])) < 0.25 for v in vowels):
            continue  # keep the inventory's vowels distinguishable
        f3 = rng.uniform(max(2200.0, f2 + 350.0), max(2300.0, f2 + 350.0) + 600.0)
        vowels.append((f1, f2, f3))
    num_fric = int(rng.integers(2, 5))
    fric_lo = rng.uniform(1500.0, 5500.0, num_fric)
    fricatives = np.stack(
        [fric_lo, np.minimum(fric_lo * rng.uniform(1.3, 2.2, num_fric), 7600.0)], 1
    )
    num_stops = int(rng.integers(2, 4))
    burst_lo = rng.uniform(400.0, 3500.0, num_stops)
    bursts = np.stack([burst_lo, burst_lo * rng.uniform(1.5, 2.5, num_stops)], 1)
    return FamilyParams(
        vowels=np.asarray(vowels),
        fricatives=fricatives,
        bursts=bursts,
        nasal=np.array([rng.uniform(230.0, 300.0), rng.uniform(900.0, 1400.0), 2300.0]),
        bandwidth_scale=float(rng.uniform(0.8, 1.3)),
        tilt=float(rng.uniform(0.0, 0.4)),
        consonant_rate=float(rng.uniform(0.5, 0.95)),
        coda_rate=float(rng.uniform(0.0, 0.5)),
        phone_weights=rng.dirichlet(np.full(4, 2.0)),
        vowel_ms=float(rng.uniform(80.0, 150.0)),
    )


def sample_base_voice(family: FamilyParams, rng: np.random.Generator) -> VoiceParams:
    """Draws a base voice. F0 is independent of vocal-tract length, so registers overlap."""
    return VoiceParams(
        vtl_scale=float(rng.uniform(0.82, 1.18)),
        f0_hz=float(np.exp(rng.uniform(np.log(100.0), np.log(210.0)))),
        open_quotient=float(rng.uniform(0.35, 0.75)),
        breathiness=float(rng.uniform(0.02, 0.3)),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.1)),
        tilt=float(rng.uniform(0.0, 0.6)),
        high_formants=np.array([rng.uniform(3300.0, 3900.0), rng.uniform(4300.0, 5000.0)]),
        formant_offsets=np.exp(rng.normal(0.0, 0.06, family.vowels.shape)),
        bandwidth_scale=float(rng.uniform(0.8, 1.3)),
        rate=float(rng.uniform(0.85, 1.2)),
        f0_range=float(rng.uniform(0.05, 0.2)),
    )


def sample_speaker(base: VoiceParams, rng: np.random.Generator) -> VoiceParams:
    """Perturbs every parameter of a base voice (speakers of one base are close, not equal)."""
    return VoiceParams(
        vtl_scale=base.vtl_scale * float(np.exp(rng.normal(0.0, 0.03))),
        f0_hz=base.f0_hz * float(np.exp(rng.normal(0.0, 0.06))),
        open_quotient=float(np.clip(base.open_quotient + rng.normal(0.0, 0.05), 0.3, 0.8)),
        breathiness=base.breathiness * float(np.exp(rng.normal(0.0, 0.25))),
        jitter=base.jitter * float(np.exp(rng.normal(0.0, 0.2))),
        shimmer=base.shimmer * float(np.exp(rng.normal(0.0, 0.2))),
        tilt=float(np.clip(base.tilt + rng.normal(0.0, 0.08), 0.0, 0.7)),
        high_formants=base.high_formants * np.exp(rng.normal(0.0, 0.03, 2)),
        formant_offsets=base.formant_offsets
        * np.exp(rng.normal(0.0, 0.03, base.formant_offsets.shape)),
        bandwidth_scale=base.bandwidth_scale * float(np.exp(rng.normal(0.0, 0.08))),
        rate=base.rate * float(np.exp(rng.normal(0.0, 0.05))),
        f0_range=base.f0_range * float(np.exp(rng.normal(0.0, 0.2))),
    )


def sample_random_voice(rng: np.random.Generator) -> tuple[FamilyParams, VoiceParams]:
    """A fresh (family, speaker) pair: the babble voices of the built-in augmentation sources."""
    family = sample_family(rng)
    return family, sample_speaker(sample_base_voice(family, rng), rng)


# ---------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------

# Phone classes of the control track.
_SIL, _VOWEL, _NASAL, _GLIDE, _FRIC, _CLOSURE, _BURST = range(7)


def _phone_sequence(
    family: FamilyParams, voice: VoiceParams, rng: np.random.Generator, seconds: float
):
    """Words of CV(C) syllables with pauses, as (class, index, duration_s) triples."""
    phones: list[tuple[int, int, float]] = [(_SIL, 0, rng.uniform(0.1, 0.3))]
    total = phones[0][2]
    num_v = len(family.vowels)
    scale = 1.0 / voice.rate
    while total < seconds:
        for _ in range(int(rng.integers(1, 5))):  # syllables per word
            seq = []
            if rng.random() < family.consonant_rate:
                seq.append(rng.choice(4, p=family.phone_weights))
            seq.append(-1)  # the vowel
            if rng.random() < family.coda_rate:
                seq.append(rng.choice(4, p=family.phone_weights))
            for c in seq:
                if c == -1:
                    d = family.vowel_ms * np.exp(rng.normal(0.0, 0.3)) / 1e3
                    phones.append((_VOWEL, int(rng.integers(num_v)), d * scale))
                elif c == 0:
                    k = int(rng.integers(len(family.fricatives)))
                    phones.append((_FRIC, k, rng.uniform(0.07, 0.14) * scale))
                elif c == 1:
                    k = int(rng.integers(len(family.bursts)))
                    phones.append((_CLOSURE, k, rng.uniform(0.03, 0.07) * scale))
                    phones.append((_BURST, k, rng.uniform(0.008, 0.02)))
                elif c == 2:
                    phones.append((_NASAL, 0, rng.uniform(0.05, 0.09) * scale))
                else:  # a glide: a short vowel-like phone with a low F1
                    phones.append(
                        (_GLIDE, int(rng.integers(num_v)), rng.uniform(0.04, 0.07) * scale)
                    )
        pause = rng.uniform(0.05, 0.35) if rng.random() < 0.35 else 0.0
        if pause:
            phones.append((_SIL, 0, pause))
        total = sum(p[2] for p in phones)
    return phones


def _smooth(track: np.ndarray, width: int) -> np.ndarray:
    """Moving average along frames [T, ...] with edge padding; equal windows give equal output."""
    if width <= 1:
        return track
    left, right = width // 2, width - 1 - width // 2
    padded = np.concatenate([np.repeat(track[:1], left, 0), track, np.repeat(track[-1:], right, 0)])
    kernel = np.full(width, 1.0 / width)
    flat = padded.reshape(len(padded), -1)
    out = np.stack([np.convolve(flat[:, i], kernel, mode="valid") for i in range(flat.shape[1])], 1)
    return out.reshape((len(track),) + track.shape[1:])


def _rosenberg(frac: np.ndarray, open_quotient: float) -> np.ndarray:
    """Rosenberg-C glottal flow over one period, ``frac`` in [0, 1): rise then faster fall."""
    tp = 0.65 * open_quotient
    tn = 0.35 * open_quotient
    out = np.zeros_like(frac)
    rising = frac < tp
    falling = ~rising & (frac < tp + tn)  # the glottis is closed for the rest of the period
    out[rising] = 0.5 * (1.0 - np.cos((np.pi / tp) * frac[rising]))
    out[falling] = np.cos((0.5 * np.pi / tn) * (frac[falling] - tp))
    return out


def _klatt_sos(freqs: np.ndarray, bws: np.ndarray, sample_rate: int) -> np.ndarray:
    """Unity-DC-gain two-pole resonators as second-order sections: ``[..., K] -> [..., K, 6]``."""
    freqs = np.minimum(freqs, 0.45 * sample_rate)
    c = -np.exp(-2.0 * np.pi * bws / sample_rate)
    b = 2.0 * np.exp(-np.pi * bws / sample_rate) * np.cos(2.0 * np.pi * freqs / sample_rate)
    a = 1.0 - b - c
    zeros = np.zeros_like(a)
    return np.stack([a, zeros, zeros, np.ones_like(a), -b, -c], -1)


@functools.lru_cache(maxsize=4096)
def _bandpass(low: float, high: float, sample_rate: int) -> np.ndarray:
    """2nd-order Butterworth band-pass sections (cached: a speaker reuses its few bands)."""
    return scipy.signal.butter(2, [low, high], btype="band", fs=sample_rate, output="sos")


def _polymul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise polynomial product: ``[T, n] x [T, m] -> [T, n + m - 1]``."""
    out = np.zeros((p.shape[0], p.shape[1] + q.shape[1] - 1))
    for j in range(q.shape[1]):
        out[:, j : j + p.shape[1]] += p * q[:, j : j + 1]
    return out


def synthesize_utterance(
    family: FamilyParams,
    voice: VoiceParams,
    rng: np.random.Generator,
    num_samples: int,
    *,
    f0_shift: float = 0.0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Synthesises one dry utterance of ``voice`` speaking ``family``'s phones.

    Args:
      family: the phone inventory.
      voice: the speaker.
      rng: the utterance's generator (phones, prosody, noise).
      num_samples: output length.
      f0_shift: log-F0 register shift of this utterance (session mood, emphasis).
      sample_rate: output rate in Hz.

    Returns:
      ``[num_samples]`` float32 with RMS ~0.1 over the whole utterance (no channel applied).
    """
    seconds = num_samples / sample_rate
    phones = _phone_sequence(family, voice, rng, seconds)
    num_frames = -(-num_samples // _FRAME)
    formant_scale = 1.0 / voice.vtl_scale
    tracks, voicing, fric, burst = _control_tracks(family, voice, phones, num_frames, sample_rate)
    # The draws below keep their order (F0, jitter, shimmer, aspiration, then frication noise):
    # the generator's sequence defines the utterance.
    source = _glottal_source(voice, rng, voicing, num_samples, f0_shift, sample_rate)
    voiced = _vocal_tract(family, voice, tracks, source, sample_rate)
    noise = rng.standard_normal(num_samples)
    sig = _add_noise_bands(voiced, noise, family, formant_scale, fric, burst, sample_rate)
    # Lip radiation (first difference), then the voice's and family's spectral tilt.
    sig = scipy.signal.lfilter([1.0, -1.0], [1.0], sig)
    tilt_pole = 1.0 - (1.0 - voice.tilt) * (1.0 - family.tilt)
    sig = scipy.signal.lfilter([1.0 - tilt_pole], [1.0, -tilt_pole], sig)
    rms = np.sqrt(np.mean(sig**2)) + 1e-9
    return (0.1 * sig / rms).astype(np.float32)


def _control_tracks(
    family: FamilyParams,
    voice: VoiceParams,
    phones: list[tuple[int, int, float]],
    num_frames: int,
    sample_rate: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame-level controls of a phone sequence, smoothed.

    Returns:
      ``(formants [T, 5] Hz, voicing [T], fricative gates [T, F], burst gates [T, B])``.
    """
    formant_scale = 1.0 / voice.vtl_scale
    hi = voice.high_formants * formant_scale
    targets = np.zeros((num_frames, 5))
    voicing = np.zeros(num_frames)
    fric = np.zeros((num_frames, len(family.fricatives)))
    burst = np.zeros((num_frames, len(family.bursts)))
    last = np.concatenate([family.vowels[0] * formant_scale, hi])
    start = 0
    for kind, idx, dur in phones:
        stop = min(num_frames, start + max(1, int(round(dur * sample_rate / _FRAME))))
        if kind in (_VOWEL, _GLIDE):
            f = family.vowels[idx] * voice.formant_offsets[idx] * formant_scale
            if kind == _GLIDE:
                f = f * np.array([0.6, 1.0, 1.0])
            last = np.concatenate([f, hi])
            voicing[start:stop] = 1.0 if kind == _VOWEL else 0.6
        elif kind == _NASAL:
            last = np.concatenate([family.nasal * formant_scale, hi])
            voicing[start:stop] = 0.3
        elif kind == _FRIC:
            fric[start:stop, idx] = 0.25
        elif kind == _BURST:
            burst[start:stop, idx] = 0.6
        # Silences, closures and fricatives hold the previous articulation (coarticulation).
        targets[start:stop] = last
        start = stop
        if start >= num_frames:
            break
    targets[start:] = last
    tracks = _smooth(targets, 4)  # ~40 ms formant transitions
    return tracks, _smooth(voicing, 2), _smooth(fric, 2), _smooth(burst, 1)


def _per_sample(x: np.ndarray, num_samples: int, sample_rate: int) -> np.ndarray:
    """Frame values held per sample, then a 2.5 ms one-pole glide so amplitude steps do not
    click."""
    held = np.repeat(x, _FRAME, axis=0)[:num_samples]
    pole = np.exp(-1.0 / (0.0025 * sample_rate))
    return scipy.signal.lfilter([1.0 - pole], [1.0, -pole], held, axis=0, zi=held[:1] * pole)[0]


def _glottal_source(
    voice: VoiceParams,
    rng: np.random.Generator,
    voicing: np.ndarray,
    num_samples: int,
    f0_shift: float,
    sample_rate: int,
) -> np.ndarray:
    """The voiced excitation ``[num_samples]``: Rosenberg pulses with jitter, shimmer, breath."""
    num_frames = voicing.shape[0]
    seconds = num_samples / sample_rate
    # F0 contour (log domain): register + declination + accents + slow wander.
    t = np.arange(num_frames) * _FRAME / sample_rate
    log_f0 = np.log(voice.f0_hz) + f0_shift - 0.15 * t / max(seconds, 1e-3)
    for centre in rng.uniform(0.0, seconds, max(1, int(seconds * 1.5))):
        log_f0 += voice.f0_range * rng.normal(1.0, 0.5) * np.exp(-0.5 * ((t - centre) / 0.12) ** 2)
    wander = _smooth(rng.normal(0.0, 0.04, num_frames), 20) * 4.5
    f0 = np.exp(log_f0 + wander)
    f0_s = np.interp(np.arange(num_samples), np.arange(num_frames) * _FRAME + _FRAME / 2, f0)
    # Jitter: per-period frequency perturbation (piecewise constant over ~one period).
    period = max(1, int(sample_rate / voice.f0_hz))
    jit = np.repeat(rng.normal(0.0, voice.jitter, num_samples // period + 1), period)[:num_samples]
    phase = np.cumsum(f0_s * (1.0 + jit) / sample_rate)
    cycle = phase.astype(np.int64)
    shimmer = 1.0 + voice.shimmer * rng.standard_normal(cycle[-1] + 1)
    flow = _rosenberg(phase - cycle, voice.open_quotient) * shimmer[cycle]
    aspiration = voice.breathiness * rng.standard_normal(num_samples) * (0.4 + flow)
    return (flow + aspiration) * _per_sample(voicing, num_samples, sample_rate)


def _vocal_tract(
    family: FamilyParams,
    voice: VoiceParams,
    tracks: np.ndarray,
    source: np.ndarray,
    sample_rate: int,
) -> np.ndarray:
    """``source`` through the time-varying formant resonators ``tracks`` ``[T, 5]``.

    F4/F5 are fixed for a speaker: one pass. F1-F3 change with the phones: their three
    resonators are multiplied into one 6th-order section whose coefficients are updated (state
    carried) only at frames where the tracks move -- ~10x cheaper than per-section filtering,
    and well-conditioned at this order in float64.
    """
    num_frames, num_samples = tracks.shape[0], source.shape[0]
    bws = np.array([60.0, 90.0, 120.0, 180.0, 250.0]) * (
        family.bandwidth_scale * voice.bandwidth_scale
    )
    bws = bws * (1.0 + 0.15 * tracks / 1000.0)  # wider bandwidths for higher formants
    sos = _klatt_sos(tracks, bws, sample_rate)  # [T, 5, 6]
    voiced = scipy.signal.sosfilt(sos[0, 3:], source)
    gain = np.prod(sos[:, :3, 0], axis=1)  # [T]
    den = np.ones((num_frames, 1))
    for k in range(3):
        den = _polymul(den, sos[:, k, 3:])
    change = np.concatenate([[True], np.any(np.abs(np.diff(tracks[:, :3], axis=0)) > 0.5, axis=1)])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], num_frames)
    zi = np.zeros(6)
    for s0, s1 in zip(starts, ends, strict=True):
        a, b = s0 * _FRAME, min(s1 * _FRAME, num_samples)
        voiced[a:b], zi = scipy.signal.lfilter(gain[s0 : s0 + 1], den[s0], voiced[a:b], zi=zi)
    return voiced


def _add_noise_bands(
    sig: np.ndarray,
    noise: np.ndarray,
    family: FamilyParams,
    formant_scale: float,
    fric: np.ndarray,
    burst: np.ndarray,
    sample_rate: int,
) -> np.ndarray:
    """Adds frication and bursts to ``sig`` (in place, returned): ``noise`` through each band of
    the inventory, gated by its track.

    Each band is filtered only over its phones (+-20 ms for the filter to settle and the gate to
    close), not over the whole utterance: a fricative band is active a few percent of the time.
    """
    num_frames, num_samples = fric.shape[0], sig.shape[0]
    pole = np.exp(-1.0 / (0.0025 * sample_rate))
    for bands, track in ((family.fricatives, fric), (family.bursts, burst)):
        for k, (lo, hi_hz) in enumerate(bands):
            edges = np.diff(np.concatenate([[0], (track[:, k] > 0).astype(np.int8), [0]]))
            runs = zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)
            if not edges.any():
                continue
            lo_k = min(lo * formant_scale**0.5, 0.4 * sample_rate)
            hi_k = min(max(hi_hz * formant_scale**0.5, lo_k * 1.2), 0.47 * sample_rate)
            band = _bandpass(round(lo_k, 1), round(hi_k, 1), sample_rate)
            for first, last in runs:
                first, last = max(0, first - 2), min(num_frames, last + 2)
                a, b = first * _FRAME, min(last * _FRAME, num_samples)
                held = np.repeat(track[first:last, k], _FRAME)[: b - a]
                gate = scipy.signal.lfilter([1.0 - pole], [1.0, -pole], held)
                sig[a:b] += scipy.signal.sosfilt(band, noise[a:b]) * gate
    return sig


def _peaking(freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking biquad as one second-order section [1, 6]."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * freq / sample_rate
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * amp, -2.0 * np.cos(w0), 1.0 - alpha * amp])
    a = np.array([1.0 + alpha / amp, -2.0 * np.cos(w0), 1.0 - alpha / amp])
    return np.concatenate([b / a[0], a / a[0]])[None]


def sample_channel(
    rng: np.random.Generator, sample_rate: int = SAMPLE_RATE, *, strength: float = 1.0
) -> np.ndarray:
    """A random microphone / line response as second-order sections ``[n, 6]``.

    A high-pass (60-250 Hz), a low-pass (3.4-7.6 kHz) and two peaking bands of up to +-6 dB
    (times ``strength``) at random frequencies.
    """
    sections = [
        scipy.signal.butter(
            2, rng.uniform(60.0, 250.0), btype="high", fs=sample_rate, output="sos"
        ),
        scipy.signal.butter(
            4, rng.uniform(3400.0, 7600.0), btype="low", fs=sample_rate, output="sos"
        ),
    ]
    for _ in range(2):
        freq = float(np.exp(rng.uniform(np.log(200.0), np.log(5000.0))))
        sections.append(
            _peaking(freq, strength * rng.uniform(-6.0, 6.0), rng.uniform(0.7, 2.0), sample_rate)
        )
    return np.concatenate(sections)


def synthetic_rir(
    rng: np.random.Generator,
    rt60: float,
    sample_rate: int = SAMPLE_RATE,
    *,
    direct_ratio_db: float | None = None,
) -> np.ndarray:
    """A room impulse response: a direct-path unit impulse at index 0 plus a decaying noise tail.

    The tail is Gaussian noise under an exponential envelope that falls by 60 dB in ``rt60``
    seconds (``exp(-6.91 t / rt60)``), low-passed for air absorption, starting ~1-5 ms after the
    direct path. Its energy relative to the direct path is ``direct_ratio_db`` below it (drawn
    from -3..+10 dB when None).

    Returns:
      ``[ceil(1.2 * rt60 * sample_rate)]`` float32 with ``rir[0] = 1``.
    """
    if not rt60 > 0:
        raise ValueError(f"rt60={rt60!r}: expected a positive reverberation time in seconds")
    n = max(int(math.ceil(1.2 * rt60 * sample_rate)), 16)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
    tail = scipy.signal.lfilter([0.6], [1.0, -0.4], tail)
    tail[: int(rng.uniform(0.001, 0.005) * sample_rate)] = 0.0
    drr = rng.uniform(-3.0, 10.0) if direct_ratio_db is None else direct_ratio_db
    tail *= np.sqrt(10.0 ** (-drr / 10.0) / (np.sum(tail**2) + 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def coloured_noise(rng: np.random.Generator, num_samples: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ``~ 1 / f**exponent`` (0 white, 1 pink, 2 brown).

    Returns:
      ``[num_samples]`` float32 with unit RMS.
    """
    n_fft = scipy.fft.next_fast_len(num_samples, real=True)  # an odd length can be 50x slower
    spec = scipy.fft.rfft(rng.standard_normal(n_fft))
    freqs = np.fft.rfftfreq(n_fft)
    freqs[0] = freqs[1] if n_fft > 1 else 1.0
    x = scipy.fft.irfft(spec / freqs ** (exponent / 2.0), n=n_fft)[:num_samples]
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    p_clean = np.mean(clean.astype(np.float64) ** 2)
    p_noise = np.mean(noise.astype(np.float64) ** 2) + 1e-20
    return clean + noise * np.sqrt(p_clean / p_noise * 10.0 ** (-snr_db / 10.0))


def yin_f0(
    wav: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    fmin: float = 50.0,
    fmax: float = 500.0,
    threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame-wise F0 by YIN (de Cheveigne & Kawahara, 2002), vectorised over frames.

    The signal is decimated to 8 kHz (enough below 500 Hz); 64 ms frames, 20 ms hop. For each
    frame the difference function ``d(tau) = sum_j (x_j - x_{j+tau})^2`` comes from one FFT
    cross-correlation, the cumulative-mean-normalised ``d'(tau) = d(tau) tau / sum_{k<=tau} d(k)``
    picks the first dip below ``threshold`` (else the global minimum) in
    ``[sr/fmax, sr/fmin]``, refined by parabolic interpolation. Kept here rather than
    ``librosa.yin`` because that drags numba into every generator worker process (seconds of
    start-up each) for ~30 lines of numpy.

    Args:
      wav: ``[S]`` waveform.
      sample_rate: its rate in Hz.
      fmin: lowest F0 searched, Hz.
      fmax: highest F0 searched, Hz.
      threshold: YIN's absolute threshold on ``d'``.

    Returns:
      (``[N]`` F0 in Hz per frame, ``[N]`` frame RMS), empty when ``wav`` is shorter than a
      frame.
    """
    x = np.asarray(wav, np.float64)
    if sample_rate % 8000 == 0 and sample_rate > 8000:
        x = scipy.signal.resample_poly(x, 1, sample_rate // 8000)
        sample_rate = 8000
    frame, hop = int(0.064 * sample_rate), int(0.02 * sample_rate)
    tau_max = min(int(sample_rate / fmin), frame // 2)
    tau_min = max(2, int(sample_rate / fmax))
    if x.shape[0] < frame:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]  # [N, W]
    w = frame - tau_max
    n_fft = scipy.fft.next_fast_len(frame + w, real=True)
    corr = scipy.fft.irfft(
        scipy.fft.rfft(frames, n_fft) * np.conj(scipy.fft.rfft(frames[:, :w], n_fft)), n_fft
    )[:, : tau_max + 1]
    energy = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], 1)
    taus = np.arange(tau_max + 1)
    # d(tau) = E(0..w) + E(tau..tau+w) - 2 r(tau), energies from one cumulative sum.
    d = energy[:, w : w + 1] + (energy[:, taus + w] - energy[:, taus]) - 2.0 * corr
    d[:, 0] = 0.0
    cum = np.cumsum(d[:, 1:], axis=1)
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    search = dn[:, tau_min:tau_max]
    below = search < threshold
    # First dip below the threshold, followed down to its local minimum.
    rising = np.concatenate([search[:, 1:] > search[:, :-1], np.ones((len(search), 1), bool)], 1)
    after = np.cumsum(below, axis=1) > 0
    first_min = np.argmax(after & rising, axis=1)
    best = np.where(below.any(1), first_min, np.argmin(search, axis=1)) + tau_min
    i = np.clip(best, 1, tau_max - 1)
    rows = np.arange(len(dn))
    a, b, c = dn[rows, i - 1], dn[rows, i], dn[rows, i + 1]
    shift = np.where(np.abs(a - 2 * b + c) > 1e-12, 0.5 * (a - c) / (a - 2 * b + c + 1e-300), 0.0)
    f0 = sample_rate / (i + np.clip(shift, -1.0, 1.0))
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return f0, rms
