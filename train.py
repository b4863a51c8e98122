"""Trains a speaker encoder with a (hyperbolic) margin softmax head.

Usage::

    python train.py --config configs/<recipe>.py[:variant] --workdir DIR [--config.x.y=value ...]

e.g. ``python train.py --config configs/quickstart.py --workdir runs/quickstart`` or
``python train.py --config configs/ham_softmax.py:vox2 --workdir runs/ham
--config.data.root=/data/voxceleb2 --config.head.margin=0.3``.

The resolved config is saved as DIR/config.json; re-running the same command resumes from the
newest checkpoint in DIR. SIGTERM saves a checkpoint and exits cleanly (status 0). All the logic
lives in :func:`hamjax.train_lib.train_and_evaluate`.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TFDS preparation only; keep TF quiet

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/quickstart.py[:variant].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, checkpoints, logs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Our progress lines at INFO; orbax/TFDS/grain (absl logging) only from WARNING, so their
    # per-save chatter does not bury the progress bar.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("hamjax").setLevel(logging.INFO)
    from hamjax import train_lib

    summary = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if summary["preempted"]:
        logging.getLogger("hamjax.train").info(
            "preempted at step %d; re-run the same command to resume", summary["step"]
        )
    return 0


if __name__ == "__main__":
    # The repository root (configs/ import hamjax) must be importable without installation.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    app.run(main)
