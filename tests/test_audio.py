"""hamjax.data.audio: truncated WAVs and the minimum-duration check (issue 14, item 11)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from hamjax.data import audio
from hamjax.data.audio import AudioError

SR = 16_000


def _wav(path, seconds=1.0, sr=SR, channels=1, subtype="PCM_16"):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)
    sf.write(path, x, sr, subtype=subtype, format="WAV")
    return path


def _truncate(path, keep_bytes):
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    return path


def test_complete_wav_loads(tmp_path):
    wav = audio.load_audio(_wav(tmp_path / "ok.wav"))
    assert wav.shape == (SR,) and wav.dtype == np.float32


def test_truncated_wav_names_expected_and_found_sizes(tmp_path):
    path = _wav(tmp_path / "cut.wav")  # 44-byte header + 32000 data bytes
    _truncate(path, 44 + 12_000)
    # libsndfile alone would return the 6000 frames present, silently.
    assert sf.read(path)[0].shape == (6000,)
    with pytest.raises(AudioError) as info:
        audio.load_audio(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: truncated WAV")
    assert "declares 32000 bytes (16000 frames, 1.00 s)" in msg
    assert "holds only 12000 bytes (6000 frames, 0.38 s)" in msg


def test_truncated_stereo_8khz_wav_and_odd_cut(tmp_path):
    path = _wav(tmp_path / "st.wav", seconds=0.5, sr=8000, channels=2)  # 4000 frames x 4 bytes
    _truncate(path, 44 + 1001)  # not even a whole frame at the end
    with pytest.raises(
        AudioError,
        match=r"declares 16000 bytes \(4000 frames, 0.50 s\) .* "
        r"holds only 1001 bytes \(250 frames, 0.03 s\)",
    ):
        audio.load_audio(path)


def test_wav_with_extra_chunks_before_data(tmp_path):
    """The check walks the RIFF chunks: a LIST chunk before ``data`` is skipped correctly."""
    path = _wav(tmp_path / "plain.wav", seconds=0.25)
    raw = path.read_bytes()
    info_chunk = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\x00"  # odd size: padded
    body = raw[12:36] + info_chunk + raw[36:]
    with_list = tmp_path / "list.wav"
    with_list.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    np.testing.assert_array_equal(audio.load_audio(with_list), audio.load_audio(path))
    _truncate(with_list, len(with_list.read_bytes()) - 100)
    with pytest.raises(AudioError, match="truncated WAV: the header declares 8000 bytes"):
        audio.load_audio(with_list)


def test_streaming_unknown_size_is_not_truncation(tmp_path):
    """Pipe writers put 0xFFFFFFFF in the data size: libsndfile reads to the end, and so do we."""
    path = _wav(tmp_path / "stream.wav", seconds=0.25)
    raw = bytearray(path.read_bytes())
    assert raw[36:40] == b"data"
    raw[40:44] = struct.pack("<I", 0xFFFFFFFF)
    raw[4:8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    assert audio.load_audio(path).shape == (4000,)


def test_non_riff_and_garbage_files_keep_their_errors(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x01garbage, not a wave file" * 10)
    with pytest.raises(AudioError, match="not a readable audio file"):
        audio.load_audio(junk)
    flac = tmp_path / "cut.flac"
    sf.write(flac, np.zeros(SR, np.float32), SR, format="FLAC")
    _truncate(flac, len(flac.read_bytes()) // 2)
    audio.check_wav_header(flac)  # not RIFF: left to the decoder (which detects FLAC cuts)


def test_check_duration_messages_and_arguments(tmp_path):
    audio.check_duration(np.zeros(8000), path="a.wav")  # exactly MIN_SECONDS
    audio.check_duration(8000, path="a.wav")
    audio.check_duration(0, path="a.wav", min_seconds=0)
    assert audio.MIN_SECONDS == 0.5
    with pytest.raises(AudioError) as info:
        audio.check_duration(np.zeros(320, np.float32), path=tmp_path / "short.wav")
    assert str(info.value).startswith(
        f"{tmp_path / 'short.wav'}: 0.02 s of audio is shorter than the minimum 0.5 s (320 "
        "samples at 16000 Hz, 8000 needed)"
    )
    with pytest.raises(AudioError, match=r"x: 1.00 s of audio is shorter than the minimum 2 s"):
        audio.check_duration(8000, path="x", min_seconds=2.0, sample_rate=8000)
    with pytest.raises(AudioError, match=r"0.00 s of audio"):
        audio.check_duration(np.zeros((2, 0)), path="x")
    with pytest.raises(ValueError, match=r"min_seconds=-1"):
        audio.check_duration(10, path="x", min_seconds=-1)
    with pytest.raises(ValueError, match=r"sample_rate=0"):
        audio.check_duration(10, path="x", sample_rate=0)
    with pytest.raises(ValueError, match=r"num_samples=-3"):
        audio.check_duration(-3, path="x")


def test_load_audio_min_seconds(tmp_path):
    short = _wav(tmp_path / "short.wav", seconds=0.02)
    assert audio.load_audio(short).shape == (320,)  # default: no duration check
    with pytest.raises(AudioError, match=r"short.wav: 0.02 s of audio is shorter than the minimum"):
        audio.load_audio(short, min_seconds=audio.MIN_SECONDS)
    # Measured after resampling: 0.6 s at 8 kHz is 0.6 s at 16 kHz.
    ok = _wav(tmp_path / "ok8k.wav", seconds=0.6, sr=8000)
    assert audio.load_audio(ok, min_seconds=0.5).shape == (9600,)
