"""Jitted ablations (hamjax.sweep): a 4-variant sweep on the tiny corpus against 4 separate runs,
exact resume after SIGKILL, and the refusals of fields that cannot share one program.

Runs on the 8 simulated CPU devices of tests/conftest.py (a (variant=4, data=2) mesh).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_train_lib import _cli_overrides, tiny_config, wait_for_checkpoint

from hamjax import checkpointing, sweep, sweep_eval, train_lib
from hamjax.inference import Verifier, embed_stacked

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
AXES = ("seed=0,1", "head.margin=0.2,0.3")


def _config(base: Path):
    """The tiny config on a VoxCeleb-layout view of the synthetic corpus (whose files do not
    depend on ``seed``, so a seed sweep and separate runs train on the same data)."""
    c = tiny_config(base)
    c.data.source = "voxceleb"
    c.data.name = "tiny_sweep"
    c.sweep.axes = AXES
    c.sweep.shared_batches = False  # each seed its own data order, as in its own run
    # Adam's default eps (1e-8) turns the round-off gradient (~1e-7) of a weight the loss
    # barely depends on (a bias before BatchNorm) into a full +-lr step whose sign is noise,
    # so two equal programs could not be compared weight by weight; with eps 1e-3 the update
    # is a smooth function of the gradient and round-off stays round-off.
    c.optim.eps = 1e-3
    # A gentler step than the tiny recipe's 0.0123: at that rate this network (batch 8,
    # BatchNorm) amplifies float32 round-off ~x10 per step, and 4 steps are no longer
    # comparable at float32 tolerance.
    c.optim.learning_rate = 2e-3
    return c


@pytest.fixture(scope="module")
def swept(tmp_path_factory, compile_cache):
    """(base dir, config, summary, workdir): one 4-variant sweep trained to the end."""
    base = tmp_path_factory.mktemp("sweep")
    config = _config(base)
    train_lib.prepare_data(tiny_config(base))  # the synthetic corpus the view reads
    workdir = base / "sweep"
    summary = train_lib.train_and_evaluate(config, workdir)
    return base, config, summary, workdir


def test_a_sweep_trains_each_variant_like_its_own_run(swept):
    base, config, summary, workdir = swept
    assert summary["step"] == 4 and not summary["preempted"]
    manifest = json.loads((workdir / sweep.SWEEP_FILE).read_text())
    names = [v["name"] for v in manifest["variants"]]
    assert names == ["seed0-margin0.2", "seed0-margin0.3", "seed1-margin0.2", "seed1-margin0.3"]
    for entry in manifest["variants"]:
        vdir = workdir / entry["workdir"]
        vconfig = checkpointing.load_config(vdir)
        assert vconfig.sweep.axes == () and vconfig.seed == entry["overrides"]["seed"]
        own = sweep.variant_config(config, entry["overrides"])
        alone = train_lib.train_and_evaluate(own, base / "alone" / entry["name"])
        for which in ("final", "latest"):
            a = Verifier.from_workdir(vdir, which)
            b = Verifier.from_workdir(base / "alone" / entry["name"], which)
            assert a.step == b.step
            jax.tree_util.tree_map_with_path(
                lambda path, x, y, w=which, n=entry["name"]: _close(x, y, f"{n} {w} {path}"),
                a.variables, b.variables,
            )  # fmt: skip
        mine = summary["variants"][entry["name"]]["last_metrics"]
        for key, value in alone["last_metrics"].items():
            assert mine[key] == pytest.approx(value, rel=5e-3, abs=1e-4), key
        # Step by step: the schedules exactly, the first step's loss and gradient to round-off.
        ours = _scalars(workdir, f"variants/{entry['name']}/")
        theirs = _scalars(base / "alone" / entry["name"], "")
        for tag in ("lr", "margin_scale"):
            assert ours[tag] == pytest.approx(theirs[tag], rel=1e-7), tag
        for tag in ("loss", "grad_norm/encoder", "grad_norm/head"):
            assert ours[tag][0] == pytest.approx(theirs[tag][0], rel=1e-5), tag


def test_vmap_and_map_runs_of_a_sweep_agree(swept):
    """``sweep.vectorize``: the batched program (accelerators) and the unrolled one (CPU's
    default) train the same variants."""
    base, config, summary, workdir = swept
    assert sweep.vectorize_mode(config.sweep, 4, backend="cpu") == "unroll"
    assert sweep.vectorize_mode(config.sweep, 4, backend="gpu") == "vmap"
    other = "vmap" if sweep.vectorize_mode(config.sweep, 4) == "unroll" else "unroll"
    c = _config(base)
    c.sweep.vectorize = other
    out = train_lib.train_and_evaluate(c, base / f"sweep_{other}")
    assert out["step"] == summary["step"]
    for name in summary["variants"]:
        a = Verifier.from_workdir(workdir / sweep.VARIANTS_DIR / name, "latest")
        b = Verifier.from_workdir(base / f"sweep_{other}" / sweep.VARIANTS_DIR / name, "latest")
        jax.tree_util.tree_map_with_path(
            lambda path, x, y, n=name: _close(x, y, f"{n} {path}"), a.variables, b.variables
        )


def _scalars(workdir: Path, prefix: str) -> dict[str, list[float]]:
    """The trainer's logged scalars ``{tag: [value at step 1, 2, ...]}`` (TF event files)."""
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for path in workdir.glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.tag.startswith(prefix):
                    value = (
                        float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
                    )
                    out.setdefault(v.tag.removeprefix(prefix), {})[event.step] = value
    return {tag: [steps[k] for k in sorted(steps)] for tag, steps in out.items()}


def _close(x, y, where: str) -> None:
    """Equal up to float32 round-off of a differently fused program, grown over 4 steps.

    The vmapped step and the single-run step are the same maths compiled differently, so their
    first losses agree to ~1e-6 and the difference then grows by round-off amplification:
    this tiny network (batch 8, BatchNorm, lr 0.0123) is chaotic, about x3-10 per step
    (measured: encoder grad norms agree to 1e-6 at step 1 and 8e-4 at step 4; weights to
    2e-4 after 4 steps). A wrong seed, margin, learning rate or data order moves weights by
    ~lr = 1.2e-2 at the first step, far outside this bound.
    """
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=1e-3, err_msg=where)


def _killable_sweep(workdir: Path, config) -> subprocess.Popen:
    """train.py with the sweep flags, one second per batch so that SIGKILL lands mid-run."""
    argv = [
        "train.py",
        "--config",
        str(ROOT / "configs/quickstart.py"),
        "--workdir",
        str(workdir),
        *_cli_overrides(config, num_epochs=2),
        "--config.data.source=voxceleb",
        f"--config.data.name={config.data.name}",
        f"--config.head.margin={config.head.margin}",
        f"--config.optim.learning_rate={config.optim.learning_rate}",
        f"--config.optim.eps={config.optim.eps}",
        f"--config.train.keep_checkpoints={config.train.keep_checkpoints}",
        f"--config.train.average_last={config.train.average_last}",
        "--config.sweep.shared_batches=False",
        *[f"--sweep={a}" for a in AXES],
    ]
    code = (
        "import runpy, sys, time\n"
        "from hamjax.data import pipeline\n"
        "real = pipeline.make_train_iterator\n"
        "class Slow:\n"
        "    def __init__(self, it): self.it = it\n"
        "    def __iter__(self): return self\n"
        "    def __next__(self): time.sleep(1.0); return next(self.it)\n"
        "    def __getattr__(self, k): return getattr(self.it, k)\n"
        "pipeline.make_train_iterator = lambda *a, **k: Slow(real(*a, **k))\n"
        f"sys.argv = {argv!r}\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def test_a_sweep_killed_by_sigkill_resumes_bit_identically(swept, tmp_path):
    _, config, _, full = swept
    workdir = tmp_path / "killed"
    proc = _killable_sweep(workdir, config)
    try:
        wait_for_checkpoint(proc, workdir, poll_s=0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (workdir / sweep.VARIANTS_DIR).exists()  # views are written at the end
    out = train_lib.train_and_evaluate(config, workdir)
    assert out["step"] == 4
    for name in out["variants"]:
        for which in ("latest", "final"):
            a = Verifier.from_workdir(full / sweep.VARIANTS_DIR / name, which)
            b = Verifier.from_workdir(workdir / sweep.VARIANTS_DIR / name, which)
            jax.tree.map(np.testing.assert_array_equal, a.variables, b.variables)  # bitwise


def test_eval_on_a_sweep_extracts_the_variants_stacked_and_writes_one_table(swept):
    _, _, _, workdir = swept
    manifest = json.loads((workdir / sweep.SWEEP_FILE).read_text())
    names = [v["name"] for v in manifest["variants"]]
    results = sweep_eval.evaluate_sweep(workdir, baseline=False, print_fn=None)
    assert list(results) == names
    table = (workdir / "eval" / sweep_eval.TABLE_FILE).read_text().splitlines()
    assert table[0].startswith("| variant | seed | head.margin | ")
    assert len(table) == 2 + len(names)
    # Each variant's reports are where eval.py on its own directory puts them ...
    lists = list(results[names[0]])
    for name in names:
        vdir = workdir / sweep.VARIANTS_DIR / name
        for t in lists:
            rep = json.loads((vdir / "eval" / t / "report.json").read_text())
            assert rep["eer_percent"] == pytest.approx(results[name][t]["eer_percent"])
    # ... and the stacked extraction equals each verifier's own, up to float32 round-off.
    verifiers = [Verifier.from_workdir(workdir / sweep.VARIANTS_DIR / n) for n in names]
    wavs = {f"u{i}": np.random.default_rng(i).standard_normal(16000 + 3000 * i).astype(np.float32)
            for i in range(5)}  # fmt: skip
    stacked = embed_stacked(verifiers, list(wavs), wavs.__getitem__, protocol="authors")
    for v, emb in zip(verifiers, stacked, strict=True):
        own = v.embed_protocol(list(wavs), wavs.__getitem__, protocol="authors")
        np.testing.assert_allclose(emb.full, own.full, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(emb.crops, own.crops, rtol=1e-4, atol=1e-5)
    assert not np.allclose(stacked[0].full, stacked[2].full)  # seeds differ: real variants
    # Evaluated again: every variant's embeddings come from its cache, same numbers.
    again = sweep_eval.evaluate_sweep(workdir, baseline=False, print_fn=None)
    assert again[names[-1]][lists[0]]["eer_percent"] == results[names[-1]][lists[0]]["eer_percent"]


def test_eval_on_an_unfinished_sweep_says_what_to_do(tmp_path):
    (tmp_path / sweep.SWEEP_FILE).write_text(
        json.dumps({"axes": ["seed=0,1"], "variants": [
            {"name": "seed0", "workdir": "variants/seed0", "overrides": {"seed": 0}}]})
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"seed0 have no config.json .*resume it"):
        sweep_eval.evaluate_sweep(tmp_path, print_fn=None)


def test_shape_changing_and_structural_fields_are_refused(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(ValueError, match=r"model.channels changes the shape .*separate job"):
        sweep.parse_sweeps(config, ["model.channels=8,16"])
    with pytest.raises(ValueError, match=r"data.crop_frames changes the shape"):
        sweep.parse_sweeps(config, ["data.crop_frames=20,40"])
    with pytest.raises(ValueError, match=r"head.mode decides the structure .*separate job"):
        sweep.parse_sweeps(config, ["head.mode=clip,expmap"])
    with pytest.raises(ValueError, match=r"softmax has a bias.*h_softmax,ham_softmax"):
        sweep.check_heads(["softmax", "am"])
    bad = tiny_config(tmp_path)
    bad.sweep.vectorize = "pmap"
    with pytest.raises(ValueError, match=r"vectorize = 'pmap' .*auto, vmap, map, unroll"):
        sweep.validate_config(bad.sweep)
    with pytest.raises(ValueError, match="no field"):
        sweep.parse_sweeps(config, ["head.marign=0.1"])
    with pytest.raises(ValueError, match="--zip needs lists of one length"):
        sweep.parse_sweeps(config, ["seed=0,1", "head.margin=0.1"], zip_axes=True)
    variants = sweep.parse_sweeps(
        config, ["seed=0,1", "optim.learning_rate=1e-3,2e-3"], zip_axes=True
    )
    assert variants == [
        {"seed": 0, "optim.learning_rate": 1e-3},
        {"seed": 1, "optim.learning_rate": 2e-3},
    ]
    assert len(sweep.parse_sweeps(config, ["head.name=am,aam,ram", "seed=0,1"])) == 6
