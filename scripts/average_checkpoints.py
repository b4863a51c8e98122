"""Averages the last N epoch checkpoints of a training run into WORKDIR/final.

Usage::

    python scripts/average_checkpoints.py --workdir runs/ham_softmax_vox2 --last 5

Parameters and BatchNorm running statistics are averaged element-wise, as the authors (and
WeSpeaker's ``average_model.py``) average whole model state dicts; the optimiser state is not
carried over. ``eval.py --workdir DIR`` then scores ``DIR/final``. train.py does the same at the
end of training when ``train.average_last > 0``.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py work directory.")
_LAST = flags.DEFINE_integer(
    "last",
    None,
    "How many of the newest epoch checkpoints to average (default: the config's "
    "train.average_last).",
)
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from hamjax import train_lib

    final = train_lib.average_checkpoints(_WORKDIR.value, _LAST.value)
    from hamjax import checkpointing

    info = checkpointing.final_info(final.parent)
    print(f"wrote {final}\n{json.dumps(info, indent=2)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
