"""bench/accelerator.py keeps working: its CPU smoke test (``--quick``) runs end to end.

The accelerator benchmark only runs for real on a lent GPU/TPU; this runs its CI-sized form
(tiny models, a few steps, time-boxed) in a fresh process on one CPU device and checks that it
exits cleanly and prints the throughput table. No figure is asserted on (wall-clock time is
noise here). The MFU peak table and the section renderer are checked directly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "accelerator.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_accelerator", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_exits_cleanly_and_prints_the_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "OUT")}
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-write", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "## accelerator: training-step throughput on cpu" in out
    assert "| encoder | B | dtype | passes/s |" in out
    # The first configuration always runs (the budget only skips later ones).
    assert "| ECAPA-TDNN C=32 (quick) | 8 | float32 | " in out
    assert "skipped" in out or "| ResNet34 m=4 (quick) | 8 | float32 |" in out
    assert (tmp_path / "accelerator.json").is_file()
    assert (tmp_path / "accelerator.md").read_text() in out


def test_peak_table_and_render_from_json():
    acc = _module()
    assert acc.peak_tflops("NVIDIA H100 80GB HBM3")[1:] == (989.0, 494.0)
    assert acc.peak_tflops("NVIDIA H100 PCIe")[1:] == (756.0, 378.0)
    assert acc.peak_tflops("NVIDIA H200")[0] == "NVIDIA H200 (SXM)"
    assert acc.peak_tflops("NVIDIA A100-SXM4-80GB")[1] == 312.0
    assert acc.peak_tflops("TPU v5 lite")[0] == "TPU v5e"
    assert acc.peak_tflops("TPU v5p")[0] == "TPU v5p"
    assert acc.peak_tflops("TPU v4")[1] == 275.0
    assert acc.peak_tflops("cpu") is None
    step = {"compile_s": 30.0, "h2d_ms": 3.0, "flops": 4.0e14, "xla_bytes": 2.0**34,
            "devices": 1, "step_s": 0.5, "steps": 5, "loss": 1.0, "peak_bytes": 2.0**35,
            "passes_per_s": 1024.0, "examples_per_s": 512.0}  # fmt: skip
    res = {
        "device_kind": "NVIDIA H200", "backend": "gpu", "devices": 1, "jax": "0", "quick": False,
        "host": "h", "budget_s": 450.0, "elapsed_s": 400.0, "command": "c",
        "steps": [{"case": {"encoder": "ecapa1024", "batch": 256, "dtype": "bfloat16"},
                   "result": step},
                  {"case": {"encoder": "resnet34", "batch": 128, "dtype": "float32"},
                   "result": {"skipped": "skipped (time budget used)"}}],
        "extraction": [], "input": {"skipped": "not installed: grain"}, "notes": [],
    }  # fmt: skip
    md = acc.render(res)
    # 4e14 flops in 0.5 s on a 989 TFLOP/s device: 80.9 % MFU.
    assert "| ECAPA-TDNN C=1024 | 256 | bfloat16 | 1024.0 | 500.0 | 30.0 | 4e+05 | 80.9 % |" in md
    assert "| ResNet34 | 128 | float32 | skipped (time budget used) |" in md
    assert "skipped (not installed: grain)" in md


def test_htk_mel_stand_in_equals_librosa():
    """On a bare accelerator image the script's numpy filterbank replaces librosa's."""
    import librosa
    import numpy as np

    acc = _module()
    for sr, n_fft, n_mels, fmin, fmax in (
        (16000, 512, 80, 20.0, 7600.0),
        (8000, 256, 40, 0.0, None),
    ):
        kw = dict(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None)
        ref = librosa.filters.mel(**kw, dtype=np.float64)
        np.testing.assert_allclose(acc.htk_mel(**kw, dtype=np.float64), ref, rtol=0, atol=1e-15)
