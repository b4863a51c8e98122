"""A new user's first hour: help pages that list the choices, one-line errors, progress, and no
third-party noise, driving train.py and eval.py as subprocesses on a tiny corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_lib import _cli_overrides, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("HAMJAX_DEBUG", None)
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_train_help_lists_the_recipes_and_their_variants():
    proc = _run("train.py", "--help")
    assert proc.returncode == 0
    out = proc.stdout
    assert "configs/quickstart.py\n" in out and "configs/ham_softmax.py[:vox2|vox1]" in out
    assert "configs/mbrola.py[:softmax|" in out and "--show_config" in out


def test_eval_help_explains_the_choices():
    out = _run("eval.py", "--help").stdout
    assert "1 id10270/x6uYqmx31kE/00001.wav" in out  # a trial line
    assert "DIR/eval/NAME/" in out and "(required)" in out
    assert "'authors'" in out and "5x5" in out and "::" not in out  # plain text, no RST


def test_show_config_prints_fields_with_their_meaning():
    proc = _run("train.py", "--config", "configs/quickstart.py", "--show_config",
                "--config.head.margin=0.3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "# Additive margin m" in proc.stdout and "head.margin = 0.3" in proc.stdout


@pytest.mark.parametrize(
    "script,args,message",
    [
        ("train.py", ("--config", "configs/ham_softmax.py:vox3", "--workdir", "x"),
         "config variant 'vox3' is unknown for recipe 'ham_softmax'"),
        ("train.py", ("--config", "configs/nope.py", "--workdir", "x"),
         "cannot load the config file configs/nope.py"),
        ("train.py", ("--config", "configs/quickstart.py", "--workdir", "x",
                      "--config.head.c=50"), "config.head.c = 50.0 is invalid"),
        ("train.py", ("--config", "configs/quickstart.py", "--workdir", "x",
                      "--config.head.nope=1"), "the config has no field 'nope'"),
        ("eval.py", ("--workdir", "/nonexistent/run"), "no resolved training config"),
        ("eval.py", (), "--workdir must have a value"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_without_traceback(script, args, message):
    proc = _run(script, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 1
    # --debug shows the traceback instead.
    if script == "train.py" and "head.c=50" in " ".join(args):
        assert "Traceback" in _run(script, *args, "--debug").stderr


def test_a_first_run_shows_progress_and_no_tfds_noise(tmp_path):
    config = tiny_config(tmp_path)
    config.data.synthetic.overrides.num_workers = 2  # the pool and its progress bar
    args = ["--config", "configs/quickstart.py", "--workdir", str(tmp_path / "run"),
            *_cli_overrides(config, num_epochs=1), "--config.train.average_last=0",
            "--config.data.synthetic.overrides.num_workers=2"]  # fmt: skip
    proc = _run("train.py", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "synthesising" in out  # corpus generation progress
    assert "compiling the training step" in out
    assert "preparing" in out  # our line, instead of TFDS's
    for noise in ("Downloading and preparing", "Unknown size", "Using custom data configuration",
                  "Unable to initialize backend", "\x1b[A"):  # fmt: skip
        assert noise not in out, noise
