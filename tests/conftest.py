"""Test-wide setup: 8 simulated CPU devices, as the brief asks, set before JAX is imported;
and one really trained tiny work directory shared by the evaluation and inference tests."""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TensorFlow (used only by TFDS preparation) must not grab all host threads or print noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
LISTS = ("heldout_speakers", "heldout_bases")


def tiny_config(root: Path):
    """The quickstart recipe (HAM-Softmax on the synthetic corpus), shrunk to seconds."""
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "configs" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.synthetic.size = "tiny"
    c.data.synthetic.overrides.num_workers = 1  # render in-process
    c.data.root = str(root / "corpus")
    c.data.data_dir = str(root / "tfds")
    c.data.name = "tiny"
    c.model.channels = 16
    c.model.mfa_channels = 32
    c.model.attention_channels = 8
    c.model.se_bottleneck = 8
    c.model.embed_dim = 16
    c.train.global_batch_size = 8
    c.train.num_epochs = 1
    c.train.steps_per_epoch = 2
    c.train.average_last = 0
    c.train.progress_bar = False
    c.train.async_checkpointing = False
    c.head.margin_warmup_steps = 0
    c.eval.trials = tuple(str(root / "corpus" / "trials" / f"{n}.txt") for n in LISTS)
    c.eval.wav_root = str(root / "corpus" / "wav")
    c.eval.asnorm.top_k = 3
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(workdir, config)``: the tiny recipe trained for 2 steps, a private copy per module."""
    from hamjax import train_lib

    # Trained once per test session even under pytest-xdist: the workers share the parent of
    # their base temp dir, and a file lock lets the first one train while the others wait
    # (the pattern of the pytest-xdist docs), instead of each worker paying for training.
    shared = tmp_path_factory.getbasetemp().parent / "hamjax_eval_e2e"
    shared.mkdir(exist_ok=True)
    config = tiny_config(shared)
    with FileLock(str(shared) + ".lock"):
        if not (shared / "trained.ok").exists():
            train_lib.train_and_evaluate(config, shared / "run")
            (shared / "trained.ok").write_text("done\n")
    # Each module evaluates its own copy (eval/ outputs are per workdir); the corpus is shared.
    workdir = tmp_path_factory.mktemp("eval_run") / "run"
    shutil.copytree(shared / "run", workdir)
    return workdir, config


@pytest.fixture(scope="module")
def x64():
    """float64 enabled for a module's tests (``pytestmark = pytest.mark.usefixtures("x64")``)."""
    import jax

    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache private to one test module (restored afterwards), so a
    module's repeated runs and subprocesses reuse each other's programs."""
    import jax

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jaxcache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    for n, v in old.items():
        jax.config.update(n, v)
