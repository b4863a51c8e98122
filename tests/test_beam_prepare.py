"""Preparation through Apache Beam (``runner="beam"``): the same dataset as in-process.

Every Beam run here uses the DirectRunner in multi-process mode (2 worker processes), so the
examples, skip records and errors really cross process boundaries as on a cluster.
"""

import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from hamjax.data import config as data_config
from hamjax.data import corpus, tfds_builder
from hamjax.data.audio import AudioError, write_wav

pytest.importorskip(
    "apache_beam", reason="Apache Beam is not installed (pip install 'hamjax[beam]' or '.[test]')"
)
from array_record.python.array_record_module import ArrayRecordReader  # noqa: E402

MULTI = "--direct_num_workers=2 --direct_running_mode=multi_processing"
SR = 16_000


def _raw_records(info) -> list[bytes]:
    """Every serialised record of the train split, shard after shard: the bytes on disk."""
    shards = sorted(info.builder_dir.glob(f"{info.name}-train.array_record-*"))
    assert shards, info.builder_dir
    out: list[bytes] = []
    for shard in shards:
        reader = ArrayRecordReader(str(shard))
        out += reader.read_all()
        reader.close()
    return out


def _assert_same_dataset(direct, beam) -> None:
    """Same identity, counts, skips and hamjax files, and the same records byte for byte."""
    assert beam.config == direct.config  # the runner is not part of the dataset's identity
    assert dataclasses.replace(beam, builder_dir=direct.builder_dir) == direct
    # Nothing of the Beam run's working files is left; the same files are there.
    assert sorted(os.listdir(beam.builder_dir)) == sorted(os.listdir(direct.builder_dir))
    for name in ("speakers.txt", "skipped.txt", "hamjax_source.json"):
        assert (beam.builder_dir / name).read_bytes() == (direct.builder_dir / name).read_bytes()
    a, b = _raw_records(direct), _raw_records(beam)
    assert len(a) == len(b) == direct.num_examples
    for i, (ra, rb) in enumerate(zip(a, b, strict=True)):
        assert ra == rb, f"record {i} differs"
    # And read back through the normal reader, example by example.
    src_a, src_b = tfds_builder.open_data_source(direct), tfds_builder.open_data_source(beam)
    for i in range(len(src_a)):
        ea, eb = src_a[i], src_b[i]
        assert ea.keys() == eb.keys()
        for k in ea:
            np.testing.assert_array_equal(ea[k], eb[k], err_msg=f"example {i}, feature {k}")


def test_beam_multiprocess_matches_in_process_on_a_generated_corpus(tmp_path):
    data = ml_collections.ConfigDict(
        dict(
            source="synthetic",
            root=str(tmp_path / "corpus"),
            data_dir=str(tmp_path / "direct"),
            name="tiny",
            skip_bad=False,
            auto_prepare=True,
            synthetic=dict(size="tiny", overrides=dict(num_workers=1, seed=3)),
            prepare=dict(runner="direct", beam_options=""),
        )
    )
    direct = tfds_builder.prepare_from_config(data)
    assert direct.num_examples == sum(
        1 for line in (tmp_path / "corpus/train_list.txt").read_text().splitlines() if line
    )
    # The same config with the Beam runner (the corpus is reused, not generated again).
    data.update(data_dir=str(tmp_path / "beam"), prepare=dict(runner="beam", beam_options=MULTI))
    beam = tfds_builder.prepare_from_config(data)
    _assert_same_dataset(direct, beam)
    # Preparing again with the other runner finds the dataset: no new run.
    data.data_dir = str(tmp_path / "direct")
    assert tfds_builder.prepare_from_config(data) == direct


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def flawed(tmp_path_factory):
    """A corpus with good files, one too short (0.3 s) and one corrupt (not audio)."""
    root = tmp_path_factory.mktemp("flawed")
    for i, rel in enumerate(["a/s1/1.wav", "a/s1/2.wav", "b/s1/1.wav", "c/s1/1.wav"]):
        write_wav(root / "wav" / rel, _tone(0.6 + 0.1 * i, 200.0 + 50 * i))
    write_wav(root / "wav/b/s1/2.wav", _tone(0.3, 300.0))
    (root / "wav/c/s1/2.wav").write_bytes(b"RIFF\x00\x01garbage, not a wave file" * 10)
    return root


def test_beam_skips_bad_and_short_files_as_in_process(flawed, tmp_path):
    kwargs = dict(name="flawed", skip_bad=True)
    direct = tfds_builder.prepare_dataset("voxceleb", flawed, data_dir=tmp_path / "a", **kwargs)
    beam = tfds_builder.prepare_dataset(
        "voxceleb", flawed, data_dir=tmp_path / "b", runner="beam", beam_options=MULTI, **kwargs
    )
    assert direct.source["num_skipped"] == {"short": 1, "unreadable": 1}
    assert [s[0] for s in direct.skipped] == ["b/s1/2.wav", "c/s1/2.wav"]  # listing order
    _assert_same_dataset(direct, beam)


def test_beam_bad_file_is_the_in_process_error_and_leaves_nothing(flawed, tmp_path):
    with pytest.raises(AudioError) as direct:
        tfds_builder.prepare_dataset("voxceleb", flawed, data_dir=tmp_path / "a", name="flawed")
    with pytest.raises(AudioError) as beam:
        tfds_builder.prepare_dataset(
            "voxceleb",
            flawed,
            data_dir=tmp_path / "b",
            name="flawed",
            runner="beam",
            beam_options=MULTI,
        )
    # The worker's error, raised again in the driver with the same message (naming the file).
    assert str(beam.value) == str(direct.value)
    assert f"{flawed / 'wav/c/s1/2.wav'}: not a readable audio file" in str(beam.value)
    with pytest.raises(FileNotFoundError, match="no prepared dataset 'flawed'"):
        tfds_builder.load_dataset_info(tmp_path / "b", "flawed")
    assert list((tmp_path / "b" / "flawed").rglob("incomplete.*")) == []


def test_beam_all_files_too_short_is_the_in_process_error(tmp_path):
    for rel in ("a/s/1.wav", "b/s/1.wav"):
        write_wav(tmp_path / "c/wav" / rel, _tone(0.2, 300.0))
    with pytest.raises(corpus.CorpusError) as direct:
        tfds_builder.prepare_dataset("voxceleb", tmp_path / "c", data_dir=tmp_path / "a", name="s")
    with pytest.raises(corpus.CorpusError) as beam:
        tfds_builder.prepare_dataset(
            "voxceleb",
            tmp_path / "c",
            data_dir=tmp_path / "b",
            name="s",
            runner="beam",
            beam_options=MULTI,
        )
    assert str(beam.value) == str(direct.value)
    assert "none of the 2 listed files could be used (2 shorter than min_seconds=0.5 s, 0 " in (
        str(beam.value)
    )


def test_errors_relayed_from_workers():
    """What the driver makes of a runner's error (type and wording vary by runner)."""
    from hamjax.data import beam_prepare

    inner = beam_prepare.relay(AudioError("/x/a.wav: not a readable audio file\n(details)"))
    wrapped = RuntimeError(f"Pipeline failed: Traceback ...\nAudioError: {inner} [while running]")
    assert isinstance(beam_prepare.unrelay(wrapped), AudioError)
    assert str(beam_prepare.unrelay(wrapped)) == "/x/a.wav: not a readable audio file\n(details)"
    try:
        try:
            raise inner
        except AudioError as err:
            raise RuntimeError("worker failed") from err
    except RuntimeError as outer:
        assert str(beam_prepare.unrelay(outer)).startswith("/x/a.wav")  # found in the chain
    assert beam_prepare.unrelay(RuntimeError("disk full")) is None
    # TFDS's own empty-split check may run before ours on some runner: still a CorpusError.
    utts = [corpus.Utterance(Path("/c/wav/a/1.wav"), "a", "a/1.wav")]
    tfds_error = ValueError("The total number of generated examples is 0 for split train.")
    with pytest.raises(corpus.CorpusError, match=r"^/c/wav: none of the 1 listed files could"):
        tfds_builder._raise_from_beam(tfds_error, utts, {"root": "/c/wav", "min_seconds": 0.5})
    tfds_builder._raise_from_beam(RuntimeError("disk full"), utts, {})  # not ours: returns


def test_runner_and_beam_option_errors(tmp_path):
    good = tmp_path / "c"
    write_wav(good / "wav/a/s/1.wav", _tone(1.0, 300.0))
    kw = dict(data_dir=tmp_path / "tfds", name="x")
    with pytest.raises(ValueError, match=r"runner='spark': expected one of \('direct', 'beam'\)"):
        tfds_builder.prepare_dataset("voxceleb", good, runner="spark", **kw)
    with pytest.raises(ValueError, match=r"beam_options='--direct_num_workers=2' given with "):
        tfds_builder.prepare_dataset("voxceleb", good, beam_options="--direct_num_workers=2", **kw)
    # A misspelt option would silently fall back to Beam's defaults: it is refused instead.
    with pytest.raises(
        ValueError, match=r"unknown Beam pipeline option\(s\) --direct_num_worker\b"
    ):
        tfds_builder.prepare_dataset(
            "voxceleb", good, runner="beam", beam_options="--direct_num_worker=2", **kw
        )
    assert not (tmp_path / "tfds").exists()  # refused before any work


def test_data_prepare_config_section():
    from hamjax import config_lib

    data = config_lib.base_config().data
    assert (data.prepare.runner, data.prepare.beam_options) == ("direct", "")
    data_config.validate_config(data)
    data.prepare.runner = "beam"
    data.prepare.beam_options = MULTI
    data_config.validate_config(data)
    assert tfds_builder.runner_kwargs(data) == {"runner": "beam", "beam_options": MULTI}
    for runner, options, match in [
        ("flink", "", r"config\.data\.prepare\.runner = 'flink' is invalid: expected one of"),
        ("beam", "--flink_mastr=x", r"config\.data\.prepare: .*unknown .* --flink_mastr"),
        ("direct", "--runner=FlinkRunner", r"config\.data\.prepare: .*given with runner='direct'"),
    ]:
        data.prepare.runner, data.prepare.beam_options = runner, options
        with pytest.raises(ValueError, match=match):
            data_config.validate_config(data)
    # A config saved before the section existed means the in-process runner.
    del data["prepare"]
    data_config.validate_config(data)
    assert tfds_builder.runner_kwargs(data) == {"runner": "direct", "beam_options": ""}


_SIGTERM_PREPARE = """
import sys
from hamjax.data import tfds_builder
tfds_builder.prepare_dataset("voxceleb", sys.argv[1], data_dir=sys.argv[2], name="interrupted",
                             runner="beam", beam_options=sys.argv[3])
print("finished", flush=True)
"""


def test_sigterm_during_a_beam_preparation_leaves_nothing(tmp_path):
    """SIGTERM while Beam's workers decode: status 143, no incomplete.* folder, no workers."""
    rng = np.random.default_rng(0)
    for s in range(4):
        for u in range(150):
            noise = (0.1 * rng.standard_normal(2 * SR)).clip(-1, 1)
            write_wav(tmp_path / f"c/wav/s{s}/x/{u:03d}.wav", noise)
    data_dir = tmp_path / "tfds"
    # Output to a file, not a pipe: Beam's workers inherit it and log a lot; a pipe nobody
    # reads while we wait would fill up and stall them.
    log = tmp_path / "prepare.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIGTERM_PREPARE, str(tmp_path / "c"), str(data_dir), MULTI],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        workers = _wait_for_beam_workers(proc, data_dir, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    err = log.read_text()
    assert proc.returncode == 143, err[-3000:]
    assert "signal 15 received: stopping the preparation" in err
    assert "finished" not in err
    assert list(data_dir.rglob("incomplete.*")) == []
    with pytest.raises(FileNotFoundError, match="no prepared dataset 'interrupted'"):
        tfds_builder.load_dataset_info(data_dir, "interrupted")
    for pid in workers:  # Beam's worker processes went with the driver
        _wait_gone(pid)


def _wait_for_beam_workers(proc, data_dir, log, timeout_s=120.0) -> list[int]:
    """Waits until TFDS writes into incomplete.* and the driver has Beam worker children."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the preparation ended early: {log.read_text()[-3000:]}"
        children = _descendants(proc.pid)
        if list(data_dir.glob("*/*/incomplete.*")) and len(children) >= 2:
            time.sleep(1.0)  # into the decoding
            return _descendants(proc.pid)
        time.sleep(0.2)
    raise AssertionError("no Beam workers started within the timeout")


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,ppid=", "-e"], capture_output=True, text=True).stdout
    parent = {int(p): int(pp) for p, pp in (line.split() for line in out.splitlines() if line)}
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier}
        found += sorted(frontier)
    return found


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z":
            return  # a zombie: finished, waiting for its (gone) parent's reaping
        time.sleep(0.2)
    raise AssertionError(f"Beam worker process {pid} still running after the driver exited")


def test_prepare_script_makes_the_dataset_train_py_reads(tmp_path):
    """scripts/prepare.py: the dataset of train_lib.prepare_data, its folder on stdout."""
    repo = Path(__file__).resolve().parents[1]
    flags = [
        "--config",
        str(repo / "configs/quickstart.py"),
        "--config.data.synthetic.size=tiny",
        f"--config.data.root={tmp_path / 'corpus'}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.data.name=tiny",
    ]
    out = subprocess.run(
        [sys.executable, str(repo / "scripts/prepare.py"), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    builder_dir = Path(out.stdout.strip().splitlines()[-1])
    assert "dataset ready: " + str(builder_dir) in out.stderr
    assert "examples of 4 speakers" in out.stderr
    # train.py's own preparation step finds it: same dataset, nothing prepared again.
    from hamjax import train_lib

    spec = importlib.util.spec_from_file_location("quickstart", repo / "configs/quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    config = quickstart.get_config()
    config.data.update(root=str(tmp_path / "corpus"), data_dir=str(tmp_path / "tfds"), name="tiny")
    config.data.synthetic.size = "tiny"
    mtimes = {p: p.stat().st_mtime_ns for p in builder_dir.iterdir()}
    assert train_lib.prepare_data(config).builder_dir == builder_dir
    assert {p: p.stat().st_mtime_ns for p in builder_dir.iterdir()} == mtimes
    # A bad field fails before any work, naming it.
    bad = subprocess.run(
        [sys.executable, str(repo / "scripts/prepare.py"), *flags,
         "--config.data.prepare.runner=spark"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "config.data.prepare.runner = 'spark' is invalid" in bad.stderr
