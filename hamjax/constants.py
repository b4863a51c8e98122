"""Audio constants shared by the front end, the data layer, extraction and the trainer.

hamjax works at one sample rate and one frame grid, the authors' (``../shared/METHOD.md``):
16 kHz audio, 25 ms analysis windows every 10 ms. Every module that converts between samples,
frames and seconds reads these names instead of writing ``16_000`` or ``160`` again.
"""

from __future__ import annotations

#: Samples per second of every waveform hamjax handles (other rates are resampled on load).
SAMPLE_RATE = 16_000
#: Frame shift: 10 ms.
HOP_SAMPLES = 160
#: Analysis window: 25 ms.
WINDOW_SAMPLES = 400


def crop_samples(frames: int) -> int:
    """Samples that give ``frames`` frames of the window/hop grid: ``(T - 1) * hop + window``.

    The authors' 200-frame training crop is 32240 samples, their 300-frame evaluation crop
    48240.
    """
    return (int(frames) - 1) * HOP_SAMPLES + WINDOW_SAMPLES


def seconds_to_samples(seconds: float) -> int:
    """``round(seconds * SAMPLE_RATE)``."""
    return int(round(float(seconds) * SAMPLE_RATE))
