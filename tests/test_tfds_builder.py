"""TFDS preparation: contents, audio conversion, bad files, atomicity, configs, TF-free reading."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hamjax import io_utils
from hamjax.data import corpus, tfds_builder
from hamjax.data.audio import AudioError, write_wav

SR = 16_000


def _tone(seconds: float, freq: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_good(wav: Path) -> dict[str, np.ndarray]:
    """Three speakers (created in unsorted order) with a stereo, an 8 kHz and a 0.6 s file."""
    rng = np.random.default_rng(0)
    plain = {}
    for rel, secs in [("spk_b/s2/00001.wav", 1.2), ("spk_a/s1/00001.wav", 1.0)]:
        write_wav(wav / rel, (0.2 * rng.standard_normal(int(secs * SR))).clip(-1, 1))
    left, right = _tone(0.8, 300.0), _tone(0.8, 500.0, amp=0.2)
    stereo = wav / "spk_a/s1/00002.wav"
    stereo.parent.mkdir(parents=True, exist_ok=True)
    sf.write(stereo, np.stack([left, right], axis=1), SR, subtype="PCM_16")
    plain["stereo_mean"] = (left + right) / 2
    write_wav(wav / "spk_b/s1/00001.wav", _tone(0.5, 440.0, sr=8000), sample_rate=8000)
    write_wav(wav / "spk_c/s1/00001.wav", _tone(0.6, 200.0))  # 0.6 s: valid, shorter than a crop
    write_wav(wav / "spk_c/s1/00002.wav", _tone(0.9, 250.0))
    return plain


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpora")
    good = base / "good"
    plain = _write_good(good / "wav")
    bad = base / "bad"
    shutil.copytree(good, bad)
    # A corrupt file sorting in the middle of the listing, and an empty one at the end.
    (bad / "wav/spk_b/s1/00002.wav").write_bytes(b"RIFF\x00\x01garbage, not a wave file" * 10)
    (bad / "wav/spk_c/s2").mkdir(parents=True)
    (bad / "wav/spk_c/s2/00001.wav").write_bytes(b"")
    return {"good": good, "bad": bad, "plain": plain, "data_dir": base / "tfds"}


@pytest.fixture(scope="module")
def good_info(corpora):
    return tfds_builder.prepare_dataset(
        "voxceleb", corpora["good"], data_dir=corpora["data_dir"], name="vox", num_threads=2
    )


def _ours(caplog):
    """This module's log records (TFDS logs through absl too)."""
    return [r for r in caplog.records if r.name == "hamjax.data.tfds_builder"]


def _records(info):
    src = tfds_builder.open_data_source(info)
    return {r["utterance_id"].decode(): r for r in (src[i] for i in range(len(src)))}


def test_prepared_contents_and_conversions(corpora, good_info):
    num_speakers, names, num_examples = good_info  # the contract's tuple form
    assert (num_speakers, names, num_examples) == (3, ["spk_a", "spk_b", "spk_c"], 6)
    assert good_info.config.startswith("voxceleb-")
    assert good_info.builder_dir == corpora["data_dir"] / "vox" / good_info.config / "1.0.0"
    assert (good_info.builder_dir / "speakers.txt").read_text() == "spk_a\nspk_b\nspk_c\n"
    recs = _records(good_info)
    assert sorted(recs) == [
        "spk_a/s1/00001.wav",
        "spk_a/s1/00002.wav",
        "spk_b/s1/00001.wav",
        "spk_b/s2/00001.wav",
        "spk_c/s1/00001.wav",
        "spk_c/s1/00002.wav",
    ]
    for uid, r in recs.items():
        assert r["audio"].dtype == np.int16 and r["audio"].ndim == 1
        assert r["speaker_name"].decode() == uid.split("/")[0]
        assert r["speaker"] == names.index(uid.split("/")[0])
        assert r["base"] == b"" and r["family"] == b""
    # 16-bit PCM at 16 kHz is stored losslessly: the exact samples of the file.
    pcm, _ = sf.read(corpora["good"] / "wav/spk_a/s1/00001.wav", dtype="int16")
    np.testing.assert_array_equal(recs["spk_a/s1/00001.wav"]["audio"], pcm)
    # Stereo -> the channel mean (within PCM rounding).
    mono = recs["spk_a/s1/00002.wav"]["audio"] / 32768.0
    np.testing.assert_allclose(mono, corpora["plain"]["stereo_mean"], atol=2.0 / 32768)
    # 8 kHz -> 16 kHz: twice the samples, the 440 Hz tone where it was.
    up = recs["spk_b/s1/00001.wav"]["audio"].astype(np.float64)
    assert up.size == 8000
    peak_hz = np.argmax(np.abs(np.fft.rfft(up))) * SR / up.size
    assert abs(peak_hz - 440.0) <= 2.0
    # The 0.6 s file is kept whole.
    assert recs["spk_c/s1/00001.wav"]["audio"].size == 9600


def test_reprepare_is_a_noop(corpora, good_info):
    shards = sorted(good_info.builder_dir.glob("*.array_record*"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    again = tfds_builder.prepare_dataset(
        "voxceleb", corpora["good"], data_dir=corpora["data_dir"], name="vox"
    )
    assert again == good_info
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    assert tfds_builder.load_dataset_info(corpora["data_dir"], "vox") == good_info


def test_bad_file_stops_preparation_and_leaves_nothing_complete(corpora):
    data_dir = corpora["data_dir"]
    with pytest.raises(AudioError, match=r"spk_b/s1/00002\.wav: not a readable audio file"):
        tfds_builder.prepare_dataset("voxceleb", corpora["bad"], data_dir=data_dir, name="bad")
    with pytest.raises(FileNotFoundError, match="no prepared dataset 'bad'"):
        tfds_builder.load_dataset_info(data_dir, "bad")
    leftovers = [
        p for p in (data_dir / "bad").rglob("*") if p.is_file() and ".config" not in p.parts
    ]
    assert leftovers == []  # the incomplete.* folder was removed with everything in it


def test_skip_bad_skips_and_reports_and_gets_its_own_config(corpora, good_info, caplog):
    with caplog.at_level(logging.INFO, logger="hamjax.data.tfds_builder"):
        info = tfds_builder.prepare_dataset(
            "voxceleb", corpora["bad"], data_dir=corpora["data_dir"], name="vox", skip_bad=True
        )
    # The skips are on the console (a warning: count, first names, where the list is) ...
    (warning,) = _ours(caplog)
    assert warning.levelno == logging.WARNING
    msg = warning.getMessage()
    assert f"dataset vox ({info.config}): skipped 2 of 8 listed file(s): 2 unreadable" in msg
    assert "first: spk_b/s1/00002.wav, spk_c/s2/00001.wav;" in msg
    assert str(info.builder_dir / "skipped.txt") in msg
    assert info.source["num_skipped"] == {"short": 0, "unreadable": 2}
    assert info.config != good_info.config  # another root: another dataset under the same name
    assert info.num_examples == 6 and info.speaker_names == good_info.speaker_names
    assert [s[0] for s in info.skipped] == ["spk_b/s1/00002.wav", "spk_c/s2/00001.wav"]
    assert "not a readable audio file" in info.skipped[0][2]
    report = (info.builder_dir / "skipped.txt").read_text()
    assert (
        "2 file(s) skipped" in report and str(corpora["bad"] / "wav/spk_c/s2/00001.wav") in report
    )
    # ... and again, at info level, whenever the dataset is reused.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hamjax.data.tfds_builder"):
        again = tfds_builder.prepare_dataset(
            "voxceleb", corpora["bad"], data_dir=corpora["data_dir"], name="vox", skip_bad=True
        )
    assert again == info
    (reuse,) = _ours(caplog)
    assert reuse.levelno == logging.INFO
    assert "prepared without 2 of 8 listed file(s)" in reuse.getMessage()
    # Two configs under one name: reading by name alone is ambiguous and says so.
    with pytest.raises(ValueError, match=r"2 prepared configs .*pass config="):
        tfds_builder.load_dataset_info(corpora["data_dir"], "vox")
    assert tfds_builder.load_dataset_info(corpora["data_dir"], "vox", info.config) == info
    with pytest.raises(FileNotFoundError, match="not a complete prepared dataset"):
        tfds_builder.load_dataset_info(corpora["data_dir"], "vox", "voxceleb-0000")


def test_short_audio_is_skipped_and_logged_even_without_skip_bad(tmp_path, caplog):
    wav = tmp_path / "corpus" / "wav"
    for rel, secs in [
        ("a/s/1.wav", 0.6),
        ("a/s/2.wav", 0.49),
        ("b/s/1.wav", 0.02),
        ("b/s/2.wav", 1),
    ]:
        write_wav(wav / rel, _tone(secs, 300.0))
    dd = tmp_path / "tfds"
    with caplog.at_level(logging.WARNING, logger="hamjax.data.tfds_builder"):
        info = tfds_builder.prepare_dataset("voxceleb", wav.parent, data_dir=dd, name="short")
    assert (info.num_examples, info.num_speakers) == (2, 2)
    assert sorted(_records(info)) == ["a/s/1.wav", "b/s/2.wav"]
    assert [s[:2] for s in info.skipped] == [
        ("a/s/2.wav", str(wav / "a/s/2.wav")),
        ("b/s/1.wav", str(wav / "b/s/1.wav")),
    ]
    assert info.skipped[1][2] == (
        f"{wav / 'b/s/1.wav'}: 0.02 s of audio is shorter than the minimum 0.5 s (320 samples at "
        "16000 Hz, 8000 needed); an embedding of so little speech is not meaningful -- use a "
        "longer recording or leave this one out"
    )
    assert info.source["num_skipped"] == {"short": 2, "unreadable": 0}
    assert info.source["min_seconds"] == 0.5
    (record,) = _ours(caplog)
    assert (
        "skipped 2 of 4 listed file(s): 2 shorter than the minimum 0.5 s; first: a/s/2.wav, "
        "b/s/1.wav;" in record.getMessage()
    )
    assert "b/s/1.wav" in (info.builder_dir / "skipped.txt").read_text()
    # min_seconds=0 keeps everything, as another dataset (config) under the same name.
    everything = tfds_builder.prepare_dataset(
        "voxceleb", wav.parent, data_dir=dd, name="short", min_seconds=0
    )
    assert everything.config != info.config and everything.num_examples == 4
    assert everything.skipped == ()
    with pytest.raises(ValueError, match=r"min_seconds=-1.0: expected a finite number"):
        tfds_builder.prepare_dataset("voxceleb", wav.parent, data_dir=dd, name="x", min_seconds=-1)
    # Only short files: nothing to train on is an error, not an empty dataset.
    for rel in ("a/s/1.wav", "b/s/2.wav"):
        (wav / rel).unlink()
    with pytest.raises(
        corpus.CorpusError,
        match=r"none of the 2 listed files could be used \(2 "
        r"shorter than min_seconds=0.5 s, 0 unreadable",
    ):
        tfds_builder.prepare_dataset("voxceleb", wav.parent, data_dir=dd, name="short")


def test_failure_after_writing_shards_leaves_nothing_complete(corpora, monkeypatch):
    def crash(path, obj, indent=2):
        raise OSError(f"disk full while writing {path}")

    monkeypatch.setattr(io_utils, "write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        tfds_builder.prepare_dataset(
            "voxceleb", corpora["good"], data_dir=corpora["data_dir"], name="crash"
        )
    crash_dir = corpora["data_dir"] / "crash"
    assert not any(p.name == "dataset_info.json" for p in crash_dir.rglob("*"))
    assert not any(p.name.startswith("incomplete.") for p in crash_dir.rglob("*"))


def test_examples_lost_by_the_writer_are_an_error_and_nothing_is_kept(corpora, monkeypatch):
    """Every decoded example must be in the shards (a Beam runner once dropped whole shards)."""
    real = tfds_builder._generate_examples

    def lossy(*args, **kwargs):
        examples = real(*args, **kwargs)
        next(examples)  # decoded and counted, then lost on the way to the writer
        yield from examples

    monkeypatch.setattr(tfds_builder, "_generate_examples", lossy)
    with pytest.raises(
        RuntimeError, match=r"wrote 5 examples in 1 shard\(s\), but 6 files were decoded\. The "
    ):
        tfds_builder.prepare_dataset(
            "voxceleb", corpora["good"], data_dir=corpora["data_dir"], name="lossy"
        )
    with pytest.raises(FileNotFoundError, match="no prepared dataset 'lossy'"):
        tfds_builder.load_dataset_info(corpora["data_dir"], "lossy")
    assert list((corpora["data_dir"] / "lossy").rglob("incomplete.*")) == []


def test_authors_list_and_hierarchy(corpora, tmp_path):
    lst = tmp_path / "train_list.txt"
    lst.write_text("spk_c spk_c/s1/00001.wav\nspk_a spk_a/s1/00001.wav\nspk_c spk_c/s1/00002.wav\n")
    meta = tmp_path / "meta.json"
    meta.write_text('{"speakers": {"spk_c": {"base": "b0", "family": "f1"}}}')
    info = tfds_builder.prepare_dataset(
        "voxceleb",
        corpora["good"],
        list_file=lst,
        metadata=meta,
        data_dir=corpora["data_dir"],
        name="listed",
    )
    assert (info.num_speakers, info.num_examples) == (2, 3)
    recs = _records(info)
    assert sorted(recs) == ["spk_a/s1/00001.wav", "spk_c/s1/00001.wav", "spk_c/s1/00002.wav"]
    assert recs["spk_c/s1/00002.wav"]["speaker"] == 1
    assert (recs["spk_c/s1/00002.wav"]["base"], recs["spk_c/s1/00002.wav"]["family"]) == (
        b"b0",
        b"f1",
    )
    assert recs["spk_a/s1/00001.wav"]["family"] == b""


def test_kaldi_source(corpora, tmp_path):
    wav = corpora["good"] / "wav"
    rel = os.path.relpath(wav / "spk_a/s1/00002.wav", tmp_path)
    (tmp_path / "wav.scp").write_text(f"k2 {wav / 'spk_c/s1/00001.wav'}\nk1 {rel}\n")
    (tmp_path / "utt2spk").write_text("k1 alice\nk2 bob\n")
    info = tfds_builder.prepare_dataset(
        "kaldi", wav_scp=tmp_path / "wav.scp", data_dir=corpora["data_dir"], name="kaldi"
    )
    assert info.speaker_names == ("alice", "bob") and info.num_examples == 2
    recs = _records(info)
    assert recs["k1"]["speaker"] == 0 and recs["k1"]["audio"].size == int(0.8 * SR)
    assert recs["k2"]["speaker_name"] == b"bob" and recs["k2"]["audio"].size == 9600


def test_kaldi_source_path_with_a_space(corpora, tmp_path):
    """wav.scp paths may contain spaces (the one wav.scp reader, shared with evaluation)."""
    spaced = tmp_path / "my corpus" / "take 1.wav"
    spaced.parent.mkdir()
    shutil.copy(corpora["good"] / "wav/spk_a/s1/00001.wav", spaced)
    (tmp_path / "wav.scp").write_text("u1 my corpus/take 1.wav\n")
    (tmp_path / "utt2spk").write_text("u1 alice\n")
    info = tfds_builder.prepare_dataset(
        "kaldi", tmp_path, data_dir=corpora["data_dir"], name="spaced"
    )
    assert info.num_examples == 1 and _records(info)["u1"]["audio"].size == SR


def test_argument_errors(corpora, tmp_path):
    dd = corpora["data_dir"]
    with pytest.raises(ValueError, match=r"source='tfrecord': expected one of"):
        tfds_builder.prepare_dataset("tfrecord", corpora["good"], data_dir=dd, name="x")
    with pytest.raises(ValueError, match=r"name='2bad-name'"):
        tfds_builder.prepare_dataset("voxceleb", corpora["good"], data_dir=dd, name="2bad-name")
    with pytest.raises(ValueError, match="needs root"):
        tfds_builder.prepare_dataset("voxceleb", data_dir=dd, name="x")
    with pytest.raises(ValueError, match="needs wav_scp"):
        tfds_builder.prepare_dataset("kaldi", data_dir=dd, name="x")
    (tmp_path / "wav.scp").write_text("u1 gunzip -c a.wav.gz |\n")
    (tmp_path / "utt2spk").write_text("u1 s\n")
    with pytest.raises(corpus.CorpusError, match="piped command"):
        tfds_builder.prepare_dataset("kaldi", tmp_path, data_dir=dd, name="x")


def test_synthetic_source_uses_train_list_and_metadata(corpora, tmp_path, monkeypatch):
    """The synthetic path: generate_corpus is called with the kwargs, then its train list and
    metadata select speakers and hierarchy. (The generator itself is tested in its own module;
    here a stand-in writes the same layout in milliseconds.)"""
    from hamjax.data import synthetic

    calls = []

    def fake_generate(root, **kwargs):
        calls.append(kwargs)
        root = Path(root)
        shutil.copytree(corpora["good"] / "wav", root / "wav", dirs_exist_ok=True)
        (root / "train_list.txt").write_text("spk_a spk_a/s1/00001.wav\nspk_b spk_b/s2/00001.wav\n")
        io_utils.write_json(
            root / "metadata.json",
            {"speakers": {"spk_a": {"base": "f00b00", "family": "f00"}}},
        )
        return {}

    monkeypatch.setattr(synthetic, "generate_corpus", fake_generate)
    info = tfds_builder.prepare_dataset(
        "synthetic",
        tmp_path / "syn",
        synthetic={"seed": 3, "num_families": 1},
        data_dir=corpora["data_dir"],
        name="syn",
    )
    assert calls == [{"seed": 3, "num_families": 1}]
    assert info.speaker_names == ("spk_a", "spk_b") and info.num_examples == 2
    assert info.source["synthetic"] == {"seed": 3, "num_families": 1}
    recs = _records(info)
    assert recs["spk_a/s1/00001.wav"]["base"] == b"f00b00"


def test_reading_does_not_import_tensorflow(good_info):
    code = textwrap.dedent(
        f"""
        import sys
        import hamjax.data as d
        info = d.load_dataset_info({str(good_info.builder_dir.parents[2])!r}, "vox",
                                   {good_info.config!r})
        src = d.open_data_source(info)
        assert src[0]["audio"].dtype.name == "int16", src[0]
        assert "tensorflow" not in sys.modules, "reading imported tensorflow"
        print(len(src))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "6"


def test_prepare_from_config(corpora, good_info):
    import ml_collections

    data = ml_collections.ConfigDict(
        dict(
            source="voxceleb",
            root=str(corpora["good"]),
            data_dir=str(corpora["data_dir"]),
            name="vox",
            skip_bad=False,
            auto_prepare=True,
        )
    )
    # Same corpus and arguments as good_info: found, not prepared again.
    assert tfds_builder.prepare_from_config(ml_collections.ConfigDict({"data": data})) == good_info
    data.auto_prepare = False
    data.name = "never_prepared"
    with pytest.raises(FileNotFoundError, match="no prepared dataset 'never_prepared'"):
        tfds_builder.prepare_from_config(data)
    data.update(source="synthetic", auto_prepare=True, synthetic={"size": "huge"})
    with pytest.raises(ValueError, match=r"data.synthetic.size='huge'"):
        tfds_builder.prepare_from_config(data)


_SLOW_PREPARE = """
import sys, time
from hamjax.data import tfds_builder
real = tfds_builder.load_audio
def slow(path, *args, **kwargs):
    print("decoding", path, flush=True)
    time.sleep(0.5)
    return real(path, *args, **kwargs)
tfds_builder.load_audio = slow
tfds_builder.prepare_dataset("voxceleb", sys.argv[1], data_dir=sys.argv[2], name="interrupted",
                             num_threads=1)
print("finished", flush=True)
"""


def _interrupt_preparation(corpus_root, data_dir, sig):
    """Runs a (slowed-down) preparation in a subprocess and sends ``sig`` once it is writing."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PREPARE, str(corpus_root), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = "(TFDS's own output)"
        while line and not line.startswith("decoding"):  # until the first file is being decoded
            line = proc.stdout.readline()
        assert line, f"the preparation ended early: {proc.stderr.read()[-2000:]}"
        incomplete = list((data_dir / "interrupted").glob("*/incomplete.*"))
        assert len(incomplete) == 1, "TFDS should be writing into an incomplete.* folder"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err, incomplete[0]


def _assert_not_prepared(data_dir):
    with pytest.raises(FileNotFoundError, match="no prepared dataset 'interrupted'"):
        tfds_builder.load_dataset_info(data_dir, "interrupted")


def test_sigterm_during_preparation_exits_cleanly_and_a_rerun_succeeds(corpora, tmp_path):
    data_dir = tmp_path / "tfds"
    rc, err, incomplete = _interrupt_preparation(corpora["good"], data_dir, signal.SIGTERM)
    assert rc == 143, err[-2000:]
    assert "signal 15 received: stopping the preparation" in err
    assert not incomplete.exists()
    assert list((data_dir / "interrupted").rglob("incomplete.*")) == []
    _assert_not_prepared(data_dir)
    info = tfds_builder.prepare_dataset(
        "voxceleb", corpora["good"], data_dir=data_dir, name="interrupted"
    )
    assert info.num_examples == 6


def test_leftovers_of_a_killed_preparation_are_removed_by_the_next(corpora, tmp_path, caplog):
    data_dir = tmp_path / "tfds"
    rc, _, incomplete = _interrupt_preparation(corpora["good"], data_dir, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert incomplete.is_dir()  # SIGKILL: nobody could clean up
    _assert_not_prepared(data_dir)
    # A leftover of another config of the same name (e.g. the corpus changed since): no live
    # preparation holds its lock, so it goes too.
    other = data_dir / "interrupted" / "voxceleb-0123456789abcdef" / "incomplete.ABCDEF_1.0.0"
    other.mkdir(parents=True)
    (other / "shard").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="hamjax.data.tfds_builder"):
        info = tfds_builder.prepare_dataset(
            "voxceleb", corpora["good"], data_dir=data_dir, name="interrupted"
        )
    assert info.num_examples == 6
    assert list((data_dir / "interrupted").rglob("incomplete.*")) == []
    removed = sorted(r.getMessage() for r in _ours(caplog) if "removed" in r.getMessage())
    assert len(removed) == 2
    assert any(
        f"removed 1 incomplete preparation folder(s) left by an interrupted run: "
        f"{incomplete.name}" in m
        for m in removed
    )
    assert any("incomplete.ABCDEF_1.0.0" in m for m in removed)


def test_a_live_preparation_keeps_its_incomplete_folder(tmp_path):
    """Leftovers are removed only when their config's lock is free (no preparation running)."""
    busy = tmp_path / "ds" / "voxceleb-busy" / "incomplete.QWERTY_1.0.0"
    busy.mkdir(parents=True)
    with tfds_builder._preparation_lock(tmp_path, "ds", "voxceleb-busy") as held:
        assert held
        tfds_builder._remove_stale_incomplete(tmp_path, "ds", held_config="voxceleb-other")
        assert busy.is_dir()
    tfds_builder._remove_stale_incomplete(tmp_path, "ds", held_config="voxceleb-other")
    assert not busy.exists()
