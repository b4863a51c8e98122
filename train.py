"""Trains a speaker encoder with a (hyperbolic) margin softmax head.

Usage:
  python3 train.py --config configs/RECIPE.py[:VARIANT] --workdir DIR \\
      [--config.SECTION.FIELD=VALUE ...]

Examples:
  python3 train.py --config configs/quickstart.py --workdir runs/quickstart
  python3 train.py --config configs/ham_softmax.py:vox2 --workdir runs/ham \\
      --config.data.root=/data/voxceleb2 --config.head.margin=0.3
  python3 train.py --config configs/quickstart.py --show_config    (print the config, no training)
  python3 train.py --config configs/quickstart.py --workdir runs/ablation \\
      --sweep head.margin=0.1,0.2 --sweep seed=0,1     (4 variants, one jitted program)

Re-running the same command resumes from the newest checkpoint in DIR (a changed config is
refused, naming the fields). SIGTERM or Ctrl-C saves a checkpoint and exits with status 0.
The resolved config is saved as DIR/config.json; every field is listed, with its meaning, by
--show_config. Errors in the config or the data print one line; --debug shows the traceback.

Recipes:
{recipes}
"""

from __future__ import annotations

import logging
import os
import sys

# The repository root (configs/ import hamjax) must be importable without installation.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hamjax import cli_common  # noqa: E402

cli_common.quiet_third_party()
__doc__ = __doc__.format(recipes=cli_common.recipes_help())

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Training recipe: configs/RECIPE.py[:VARIANT] (listed above). Any field can be overridden "
    "with --config.SECTION.FIELD=VALUE.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for config.json, checkpoints/, final/ and TensorBoard events."
)
_SHOW_CONFIG = flags.DEFINE_boolean(
    "show_config", False, "Print the resolved config with each field's meaning, then exit."
)
_SWEEP = flags.DEFINE_multi_string(
    "sweep",
    [],
    "Jitted ablation: FIELD=V1,V2,... (repeatable); every variant is trained by one vmapped "
    "program into DIR/variants/<name>/ (hamjax.sweep lists the sweepable fields).",
)
_ZIP = flags.DEFINE_boolean("zip", False, "Pair the --sweep lists instead of their product.")
flags.DEFINE_boolean("debug", False, "Show tracebacks instead of one-line errors.")
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _SHOW_CONFIG.value:
        print(cli_common.describe_config(_CONFIG.value))
        return 0
    if not _WORKDIR.value:
        raise ValueError("--workdir is required (where checkpoints and config.json go)")
    cli_common.log_to_stderr()
    from hamjax import train_lib

    if _SWEEP.value:
        _CONFIG.value.sweep.axes = tuple(_SWEEP.value)
        _CONFIG.value.sweep.zip = bool(_ZIP.value)
    summary = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if summary["preempted"]:
        logging.getLogger("hamjax.train").info(
            "preempted at step %d; re-run the same command to resume", summary["step"]
        )
    return 0


if __name__ == "__main__":
    cli_common.run(main)
