"""The trainer end to end on 8 simulated CPU devices, with a tiny ECAPA on a tiny synthetic corpus.

One tiny TFDS dataset is prepared per module; jit compilations are shared through JAX's
persistent compilation cache (a module-scoped temporary directory), so the repeated runs of the
resume test reuse the programs of the first.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hamjax import checkpointing, model_builder, train_lib, train_state, train_step
from hamjax.data import pipeline
from hamjax.inference import Verifier

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _quickstart():
    spec = importlib.util.spec_from_file_location("cfg_quickstart", ROOT / "configs/quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_config(base: Path):
    """The quickstart recipe shrunk: 4 training speakers, 16 utterances, a 16-channel ECAPA."""
    c = _quickstart()
    c.data.synthetic.size = "tiny"
    c.data.root = str(base / "corpus")
    c.data.data_dir = str(base / "tfds")
    c.data.name = "tiny_train"
    c.data.crop_frames = 20
    c.data.num_workers = 0
    c.model.channels = 8
    c.model.scale = 2
    c.model.dilations = (2,)
    c.model.mfa_channels = 16
    c.model.attention_channels = 8
    c.model.se_bottleneck = 4
    c.model.embed_dim = 16
    c.head.margin_warmup_steps = 2
    # Non-default values that the command-line test passes as flags: with every value equal,
    # the subprocess compiles the same programs and reuses them from the persistent cache.
    c.head.margin = 0.35
    c.optim.learning_rate = 0.0123
    c.train.global_batch_size = 8
    c.train.num_epochs = 2
    c.train.checkpoint_every_steps = 1
    c.train.keep_checkpoints = 1
    c.train.average_last = 2
    c.train.log_every_steps = 1
    c.train.progress_bar = False
    c.train.async_checkpointing = True
    return c


@pytest.fixture(scope="module")
def data(tmp_path_factory, compile_cache):
    """(base dir, resolved tiny config, dataset info) with the tiny corpus prepared once."""
    base = tmp_path_factory.mktemp("train")
    config = tiny_config(base)
    info = train_lib.prepare_data(config)
    assert info.num_speakers >= 2 and info.num_examples >= config.train.global_batch_size
    return base, config, info


def _modules(config, info, mesh):
    resolved = train_lib.resolve_config(config, info)
    n = resolved.head.num_classes
    encoder, head = model_builder.build_modules(resolved, n)
    tx, sched = train_state.make_optimizer(resolved, resolved.train.steps_per_epoch)
    state, shardings = train_state.create_train_state(resolved, encoder, head, tx, mesh, n)
    step = train_step.make_train_step(resolved, encoder, head, sched, n, mesh)
    return resolved, state, shardings, step


def test_real_steps_on_8_devices_compile_once(data):
    _, config, info = data
    mesh = train_step.make_mesh()
    assert mesh.devices.size == 8
    resolved, state, shardings, step = _modules(config, info, mesh)
    jitted = train_step.jit_train_step(step, mesh, shardings, ("waveform", "label"))
    it = pipeline.make_train_iterator(resolved, dataset=info, process_index=0, process_count=1)
    before = jax.device_get(state.params)
    for _ in range(3):
        state, metrics = jitted(state, train_step.global_batch(next(it), mesh))
    it.close()
    metrics = jax.device_get(metrics)
    assert jitted._cache_size() == 1  # no recompilation after the first step
    assert int(state.step) == 3
    for key in ("loss", "accuracy", "grad_norm", "lr", "curvature", "centre_norm/mean"):
        assert np.isfinite(metrics[key]), key
    # Untrained HAM logits are ~ -s d(x, w) with nearly equal distances: CE ~ log C at step 0.
    assert 0.0 < metrics["loss"] < 10 * np.log(resolved.head.num_classes)
    assert metrics["curvature"] == pytest.approx(3.0)
    assert metrics["margin_scale"] == pytest.approx(1.0)  # warm-up of 2 steps is over at step 2
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(a, np.asarray(b)), before, jax.device_get(state.params)
    )
    assert all(jax.tree.leaves(changed))
    # Parameters replicated on all 8 devices, the batch split over them.
    leaf = jax.tree.leaves(state.params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8


def test_one_and_eight_devices_give_the_same_step(data):
    """Same global batch (with the augmented copies): BatchNorm sees the global batch on 8."""
    _, config, info = data
    rng = np.random.default_rng(0)
    s = pipeline.crop_samples(config.data.crop_frames)
    n = info.num_speakers
    batch = {
        "waveform": (0.1 * rng.standard_normal((8, s))).astype(np.float32),
        "waveform_aug": (0.1 * rng.standard_normal((8, s))).astype(np.float32),
        "label": rng.integers(0, n, 8).astype(np.int32),
    }
    results = {}
    for devices, shard in ((1, False), (8, True)):
        cfg = tiny_config(Path(config.data.root).parent)
        cfg.head.shard_centres = shard  # 8 devices: centres split too (over the embedding axis)
        # Adam divides by sqrt(v) + eps: parameters whose true gradient is 0 (conv biases under
        # BatchNorm) would turn float rounding noise into +-lr steps. A large eps keeps the
        # update proportional to the gradient, so the comparison is well conditioned.
        cfg.optim.eps = 1.0
        mesh = train_step.make_mesh(jax.devices()[:devices])
        _, state, shardings, step = _modules(cfg, info, mesh)
        jitted = train_step.jit_train_step(step, mesh, shardings, tuple(batch))
        state, metrics = jitted(state, train_step.global_batch(batch, mesh))
        results[devices] = jax.device_get((state.params, state.batch_stats, metrics))
    (p1, b1, m1), (p8, b8, m8) = results[1], results[8]
    assert "loss_aug" in m1
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m8["grad_norm"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), b1, b8)


class _KillAfter:
    """Wraps the real iterator; raises after ``n`` batches (a crash between steps)."""

    def __init__(self, it, n, poison_at=None):
        self._it, self._n, self._poison = it, n, poison_at
        self._seen = 0

    def __next__(self):
        if self._n is not None and self._seen >= self._n:
            raise KeyboardInterrupt("simulated kill")
        batch = next(self._it)
        self._seen += 1
        if self._poison is not None and self._seen == self._poison:
            batch = dict(batch, waveform=np.full_like(batch["waveform"], np.nan))
        return batch

    def __getattr__(self, name):
        return getattr(self._it, name)


def _patch_iterator(monkeypatch, **kw):
    real = pipeline.make_train_iterator
    monkeypatch.setattr(
        pipeline, "make_train_iterator", lambda *a, **k: _KillAfter(real(*a, **k), **kw)
    )


def test_killed_and_resumed_run_matches_an_uninterrupted_one(data, tmp_path, monkeypatch):
    _, config, _ = data
    full = train_lib.train_and_evaluate(config, tmp_path / "full")
    assert full["step"] == 4 and not full["preempted"]
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["head"]["num_classes"] >= 2 and saved["train"]["steps_per_epoch"] == 2

    _patch_iterator(monkeypatch, n=3)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train_and_evaluate(config, tmp_path / "resumed")
    ckpt = checkpointing.Checkpointer(tmp_path / "resumed/checkpoints")
    assert ckpt.latest_step() == 3
    ckpt.close()
    monkeypatch.undo()
    out = train_lib.train_and_evaluate(config, tmp_path / "resumed")
    assert out["step"] == 4

    a = Verifier.from_workdir(tmp_path / "full", "latest")
    b = Verifier.from_workdir(tmp_path / "resumed", "latest")
    assert a.step == b.step == 4
    jax.tree.map(np.testing.assert_array_equal, a.variables, b.variables)  # bitwise

    # The final model is the average of the last 2 epoch checkpoints (steps 2 and 4).
    final = Verifier.from_workdir(tmp_path / "full", "final")
    e1 = Verifier.from_workdir(tmp_path / "full", 2).variables
    mean = jax.tree.map(lambda x, y: (np.asarray(x) + np.asarray(y)) / 2, e1, a.variables)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
        final.variables,
        mean,
    )
    info = json.loads((tmp_path / "full" / "final_info.json").read_text())
    assert info["averaged_steps"] == [2, 4]
    assert (tmp_path / "full").glob("events.out.tfevents.*")


def test_non_finite_loss_stops_with_step_and_quantity(data, tmp_path, monkeypatch):
    _, config, _ = data
    _patch_iterator(monkeypatch, n=None, poison_at=2)
    with pytest.raises(train_lib.NonFiniteError, match=r"non-finite loss at step 2 .*step 1"):
        train_lib.train_and_evaluate(config, tmp_path / "nan")
    monkeypatch.undo()
    ckpt = checkpointing.Checkpointer(tmp_path / "nan/checkpoints")
    assert ckpt.all_steps() == [1]  # the poisoned step was never saved
    ckpt.close()
    restored = Verifier.from_workdir(tmp_path / "nan", "latest")
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.variables))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("head.name", "nope", r"config\.head\.name = 'nope'"),
        ("head.c", -2.0, r"config\.head\.c = -2\.0"),
        ("train.global_batch_size", 12, r"global_batch_size = 12.*8 devices"),
        # Refused before jax.distributed.initialize, which would wait for the other processes.
        ("train.num_processes", -2, r"config\.train\.num_processes = -2"),
        ("train.process_id", 4, r"config\.train\.process_id = 4.*num_processes"),
    ],
)
def test_bad_config_is_refused_before_any_work(tmp_path, field, value, message):
    config = tiny_config(tmp_path)
    section, key = field.split(".")
    config[section][key] = value
    if key == "process_id":
        config.train.distributed, config.train.num_processes = True, 2
    with pytest.raises(ValueError, match=message):
        train_lib.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "corpus").exists()


def test_voxceleb_source_trains_only_on_train_list(data):
    """A VoxCeleb-layout corpus with train_list.txt (the authors' recipe, the MBROLA corpus):
    the prepared training set holds the listed speakers only, never the held-out ones."""
    base, config, _ = data
    root = Path(config.data.root)
    meta = json.loads((root / "metadata.json").read_text())
    vox = tiny_config(base)
    vox.data.source = "voxceleb"
    vox.data.name = "tiny_vox_view"
    info = train_lib.prepare_data(vox)
    assert info.num_speakers == len(meta["splits"]["train"]) < len(meta["speakers"])
    assert info.num_examples == len((root / "train_list.txt").read_text().split("\n")) - 1
    # Prepared once: a second call reuses it.
    assert train_lib.prepare_data(vox).config == info.config


def test_shard_centres_refuses_indivisible_tables():
    mesh = train_step.make_mesh()
    abstract = {"params": {"head": {"centres": jax.ShapeDtypeStruct((5, 3), jnp.float32)}}}
    with pytest.raises(ValueError, match=r"shard_centres.*\(5, 3\).*8 devices"):
        train_state.state_shardings(abstract, mesh, shard_centres=True, num_classes=5)
    ok = {"params": {"head": {"centres": jax.ShapeDtypeStruct((16, 3), jnp.float32)}}}
    sh = train_state.state_shardings(ok, mesh, shard_centres=True, num_classes=16)
    assert sh["params"]["head"]["centres"].spec == jax.sharding.PartitionSpec("data", None)


# --------------------------------------------------------------------------- the command line


def _read_scalars(workdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files in ``workdir`` (clu writes them as tensors)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                value = (
                    float(tensor_util.make_ndarray(v.tensor))
                    if v.HasField("tensor")
                    else v.simple_value
                )
                out.setdefault(v.tag, []).append((event.step, value))
    return out


def wait_for_checkpoint(proc: subprocess.Popen, workdir: Path, poll_s: float) -> None:
    """Waits (up to 300 s) until ``proc`` has saved a first checkpoint in ``workdir``; fails
    with its output if it exited before."""
    deadline = time.time() + 300
    ckpt_dir = workdir / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        if ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
            break
        time.sleep(poll_s)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]


def _cli_overrides(config, num_epochs: int = 10_000) -> list[str]:
    """The tiny config as --config.x=y flags over configs/quickstart.py.

    The default ``num_epochs`` is far more than the SIGTERM test waits for: only SIGTERM ends it.
    """
    flat = {
        "data.synthetic.size": config.data.synthetic.size,
        "data.root": config.data.root,
        "data.data_dir": config.data.data_dir,
        "data.name": config.data.name,
        "data.crop_frames": config.data.crop_frames,
        "model.channels": config.model.channels,
        "model.scale": config.model.scale,
        "model.dilations": "(2,)",
        "model.mfa_channels": config.model.mfa_channels,
        "model.attention_channels": config.model.attention_channels,
        "model.se_bottleneck": config.model.se_bottleneck,
        "model.embed_dim": config.model.embed_dim,
        "train.global_batch_size": config.train.global_batch_size,
        "head.margin_warmup_steps": config.head.margin_warmup_steps,
        "train.checkpoint_every_steps": 1,
        "train.log_every_steps": 1,
        "train.num_epochs": num_epochs,
        "train.progress_bar": False,
    }
    return [f"--config.{k}={v}" for k, v in flat.items()]


def test_cli_overrides_reach_the_step_and_sigterm_leaves_a_checkpoint(data, tmp_path):
    import os
    import signal
    import sys

    _, config, _ = data
    workdir = tmp_path / "cli"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs/quickstart.py"),
        "--workdir",
        str(workdir),
        *_cli_overrides(config),
        "--config.optim.learning_rate=0.0123",  # quickstart: 2e-3
        "--config.head.margin=0.35",  # quickstart: 0.2
    ]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_checkpoint(proc, workdir, poll_s=0.5)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=240)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "preempted at step" in output

    saved = json.loads((workdir / "config.json").read_text())
    assert saved["optim"]["learning_rate"] == 0.0123 and saved["head"]["margin"] == 0.35
    restored = Verifier.from_workdir(workdir, "latest")
    assert restored.step >= 1
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.variables))
    # The overridden learning rate is the one the jitted step used (logged from inside it).
    scalars = _read_scalars(workdir)
    assert scalars["lr"][0][1] == pytest.approx(0.0123)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir, flags, devices, process=None):
    """``train.py`` in a subprocess on ``devices`` CPU devices; ``process=(port, i)`` makes it
    process ``i`` of a 2-process job whose coordinator listens on ``port``."""
    import os
    import sys

    cmd = [sys.executable, str(ROOT / "train.py"), "--workdir", str(workdir),
           "--config", str(ROOT / "configs/quickstart.py"), *flags]  # fmt: skip
    if process is not None:
        port, i = process
        cmd += ["--config.train.distributed=True",
                f"--config.train.coordinator_address=localhost:{port}",
                "--config.train.num_processes=2", f"--config.train.process_id={i}"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _launch_job(workdir, flags):
    """A 2-process x 2-device job."""
    port = _free_port()
    return [_launch(workdir, flags, 2, (port, i)) for i in range(2)]


def _finish(procs, timeout=420):
    """Waits for ``procs``; each must exit 0. Returns their outputs."""
    try:
        outs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        crash = out.find("Fatal Python error")  # a crash dump: its head says where
        assert p.returncode == 0, (
            out[max(0, crash - 2500) : crash + 600] if crash >= 0 else out[-3000:]
        )
    return outs


def test_two_processes_train_like_one_process_with_their_devices(data, tmp_path):
    """A real multi-process job: 2 processes x 2 CPU devices joined by jax.distributed (gloo).

    Each process feeds only its host-local rows (make_array_from_process_local_data) and both
    write one orbax checkpoint together; the result must match 1 process x 4 devices, which
    sees the same global batches (same rows, crops and per-row in-step randomness) on a mesh
    of the same size: only the cross-process all-reduce (gloo) differs.
    """
    _, config, info = data
    flags = [*_cli_overrides(config, num_epochs=2), "--config.train.average_last=2",
             "--config.optim.learning_rate=0.0123", "--config.head.margin=0.35"]  # fmt: skip
    multi = tmp_path / "two_processes"
    outs = _finish(_launch_job(multi, flags))
    assert "process 1 of 2; 2 of 4 devices are local" in outs[1]
    single = tmp_path / "one_process"
    _finish([_launch(single, flags, 4)])

    # Same computation up to the summation order of the all-reduce: step-1 values agree to
    # ~1e-6 relative (measured 8e-7). After that the tiny recipe (batch 8, BatchNorm, lr
    # 0.0123, Adam eps 1e-8) amplifies float32 round-off about x8 per step, whatever its
    # source: the same growth (1e-6 at step 1 to 8e-4 at step 4) shows between a sweep variant
    # and its own single-process run (tests/test_sweep.py), with no second process at all. So
    # step k is held to 2e-6 * 8^(k-1); feeding a host the wrong rows or crops would already
    # break step 1. Parameters are compared through the model's embeddings, not one by one:
    # a bias followed by BatchNorm has a zero gradient up to rounding, which Adam scales up to
    # ~0.1 x lr, differently on each side, without changing what the model computes.
    steps = 2 * (info.num_examples // config.train.global_batch_size)
    got, want = _read_scalars(multi), _read_scalars(single)
    for name in ("loss", "grad_norm", "accuracy"):
        assert [s for s, _ in got[name]] == list(range(1, steps + 1))
        for (step, a), (_, b) in zip(got[name], want[name], strict=True):
            assert a == pytest.approx(b, rel=2e-6 * 8 ** (step - 1), abs=1e-7), (name, step)
    from hamjax import models

    audio = np.random.default_rng(0).standard_normal((4, 32_000)).astype(np.float32) * 0.1
    for which in ("latest", "final"):
        embeddings = []
        for workdir in (multi, single):
            inf = Verifier.from_workdir(workdir, which)
            assert inf.step == steps
            v = inf.variables
            encoder = {"params": v["params"]["encoder"], "batch_stats": v["batch_stats"]["encoder"]}
            embed = models.make_embed_fn(inf.encoder, inf.config.features)
            embeddings.append(np.asarray(embed(encoder, audio, None)))
        a, b = embeddings
        cosine = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert cosine.min() > 0.99, (which, cosine)  # measured: 0.9991 latest, 0.99996 final


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_resumes_exactly(data, tmp_path):
    """A pod-style preemption: SIGTERM reaches one process of a 2-process job.

    JAX's preemption sync (the coordination service's SIGTERM notifier) makes both processes
    stop after the same step and save one checkpoint together; the job started again resumes
    from it and ends bit-identical to a job that was never interrupted.
    """
    import re
    import signal

    _, config, info = data
    spe = info.num_examples // config.train.global_batch_size
    epochs = 12
    flags = [*_cli_overrides(config, num_epochs=epochs), "--config.train.average_last=0",
             "--config.optim.learning_rate=0.0123", "--config.head.margin=0.35"]  # fmt: skip

    interrupted = tmp_path / "interrupted"
    procs = _launch_job(interrupted, flags)
    ckpt_dir = interrupted / "checkpoints"
    deadline = time.time() + 400
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if ckpt_dir.is_dir() and any(
            p.name.isdigit() and int(p.name) >= 2 for p in ckpt_dir.iterdir()
        ):
            break
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    outs = _finish(procs)
    stops = [re.findall(r"preempted at step (\d+)", out) for out in outs]
    assert stops[0] and stops[0] == stops[1], stops  # both processes, the same step
    stopped = int(stops[0][0])
    assert 2 <= stopped < epochs * spe
    assert Verifier.from_workdir(interrupted, "latest").step == stopped  # restorable

    _finish(_launch_job(interrupted, flags))  # the same command resumes
    uninterrupted = tmp_path / "uninterrupted"
    _finish(_launch_job(uninterrupted, flags))
    a = Verifier.from_workdir(interrupted, "latest")
    b = Verifier.from_workdir(uninterrupted, "latest")
    assert a.step == b.step == epochs * spe
    jax.tree.map(np.testing.assert_array_equal, a.variables, b.variables)  # bitwise


def _copy(config, **changes):
    import ml_collections

    out = ml_collections.ConfigDict(config.to_dict())
    for field, value in changes.items():
        section, key = field.split("__")
        out[section][key] = value
    return out


def test_a_resume_with_another_config_is_refused_before_anything_is_written(data, tmp_path):
    _, config, _ = data
    workdir = tmp_path / "run"
    train_lib.train_and_evaluate(_copy(config, train__num_epochs=1, train__average_last=0), workdir)
    saved = (workdir / "config.json").read_bytes()
    changed = _copy(config, train__num_epochs=1, model__channels=16, optim__learning_rate=0.5)
    with pytest.raises(ValueError) as info:
        train_lib.train_and_evaluate(changed, workdir)
    msg = str(info.value)
    assert "holds checkpoints of another configuration" in msg
    assert "model.channels: 8 -> 16" in msg and "optim.learning_rate: 0.0123 -> 0.5" in msg
    assert (workdir / "config.json").read_bytes() == saved  # untouched: eval still loads it
    assert Verifier.from_workdir(workdir, "latest").step == 2
    # Training longer is a change a resume may make.
    out = train_lib.train_and_evaluate(_copy(config, train__average_last=0), workdir)
    assert out["step"] == 4


def test_max_steps_inside_an_epoch_is_averaged_with_the_last_epoch_ends(data, tmp_path):
    _, config, _ = data
    workdir = tmp_path / "run"
    out = train_lib.train_and_evaluate(_copy(config, train__max_steps=3), workdir)
    assert out["step"] == 3 and out["final"]
    info = checkpointing.final_info(workdir)
    assert info["averaged_steps"] == [2, 3] and info["step"] == 3
    assert Verifier.from_workdir(workdir, "final").step == 3
