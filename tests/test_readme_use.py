"""The README's "Use a trained model" commands, run as written on the tiny trained work directory.

Only paths are substituted (the quickstart's work directory and corpus become the tiny ones,
outputs go to a temporary folder), a PyTorch checkpoint is made from the project's reference
ECAPA-TDNN for ``import-torch``, and fine-tuning stops after one step.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _blocks(section: str) -> tuple[str, str]:
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    return bash, python


def _torch_checkpoint(path: Path) -> None:
    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("torch_ecapa", REPO / "bench/torch_ecapa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.ECAPATDNN(channels=512).eval()
    torch.save({f"speaker_encoder.{k}": v for k, v in model.state_dict().items()}, path)


def test_use_a_trained_model_commands_run_as_written(trained, tmp_path):
    workdir, config = trained
    bash, python = _blocks("Use a trained model")
    _torch_checkpoint(tmp_path / "pretrain.model")
    script = (
        bash.replace("W=runs/quickstart WAV=data/synthetic/quickstart/wav",
                     f"W={workdir} WAV={config.eval.wav_root}")
        .replace("runs/", f"{tmp_path}/runs/")
        .replace("--arch ecapa_tdnn_c1024", "--arch ecapa_tdnn_c512")
        .replace("python3 train.py", f"{sys.executable} {REPO}/train.py")
        .replace("configs/", f"{REPO}/configs/")
    )  # fmt: skip
    script = re.sub(r"(train\.py .*?)(\s*#.*)?$", r"\1 --config.train.max_steps=1", script,
                    flags=re.M)  # fmt: skip
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    (tmp_path / "pretrain.model").unlink()
    assert proc.returncode == 0, (script, proc.stdout[-2000:], proc.stderr[-3000:])
    assert (tmp_path / "runs/embeddings.npz").is_file()
    assert (tmp_path / "runs/emb.ark").is_file() and (tmp_path / "runs/emb.scp").is_file()
    assert (tmp_path / "runs/authors/final").is_dir()
    assert (tmp_path / "runs/quickstart_lm/config.json").is_file()
    # Before any eval.py run the scores are uncalibrated: "ENROLL TEST SCORE" per pair.
    scores = [ln.split() for ln in proc.stdout.splitlines() if ln.count(".wav") == 2]
    assert len(scores) == 2 and "# uncalibrated" in proc.stdout
    assert float(scores[1][2]) == pytest.approx(1.0, abs=1e-5)  # $A against itself

    wav = sorted(Path(config.eval.wav_root).rglob("*.wav"))
    code = (
        python.replace('"runs/quickstart"', repr(str(workdir)))
        .replace('"a.wav"', repr(str(wav[0])))
        .replace('"b.wav"', repr(str(wav[-1])))
    )
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 -- the README's own code
    assert namespace["e"].ndim == 1 and -1.0 <= namespace["s"] <= 1.0
