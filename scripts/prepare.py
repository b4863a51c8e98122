"""Prepares the TFDS dataset a training config names, without training.

Usage::

    python3 scripts/prepare.py --config configs/<recipe>.py[:variant] [--config.x.y=value ...]

e.g. ``python3 scripts/prepare.py --config configs/quickstart.py`` or, for VoxCeleb2 on an
Apache Beam cluster (see README, "Large corpora")::

    python3 scripts/prepare.py --config configs/ham_softmax.py:vox2 \\
        --config.data.root=/shared/voxceleb2 --config.data.data_dir=/shared/tfds \\
        --config.data.prepare.runner=beam \\
        --config.data.prepare.beam_options="--runner=FlinkRunner --flink_master=HOST:8081"

It makes exactly the call ``train.py`` makes before training
(:func:`hamjax.train_lib.prepare_data`), so a cluster job can prepare once and any number of
training jobs with the same ``data`` section then find the dataset ready (re-running is a
no-op). Progress is logged as it goes (files done, rate, time left; with Beam, by each worker
and the runner's UI); the last lines report the dataset folder, examples, speakers, skipped
files and the rate. Exit status 0 on success, 1 when the corpus cannot be prepared (the error
names the file or field), 143 on SIGTERM (nothing half-written is left).
"""

from __future__ import annotations

import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow quiet if TFDS loads it

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/quickstart.py[:variant].", lock_config=True
)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Our progress lines at INFO; TFDS and Beam (absl / their own loggers) only from WARNING:
    # Beam's workers log every bundle at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.getLogger("hamjax").setLevel(logging.INFO)
    log = logging.getLogger("hamjax.prepare")
    from hamjax import train_lib
    from hamjax.data import audio, corpus

    config = _CONFIG.value
    train_lib.validate_config(config)  # a bad field fails now, not after hours of decoding
    d = config.data
    log.info(
        "preparing %s (source %s, root %s) into %s with runner=%s%s",
        d.name,
        d.source,
        d.root,
        d.data_dir,
        d.prepare.runner,
        f" ({d.prepare.beam_options})" if d.prepare.beam_options else "",
    )
    start = time.monotonic()
    try:
        info = train_lib.prepare_data(config)
    except (audio.AudioError, corpus.CorpusError, FileNotFoundError) as err:
        log.error("%s", err)
        return 1
    seconds = time.monotonic() - start
    listed = int(info.source.get("num_listed", info.num_examples))
    log.info(
        "dataset ready: %s\n  %d examples of %d speakers from %d listed files (skipped: %s)\n"
        "  %.1f s in all (%.1f listed files/s; generating a synthetic corpus included; a few "
        "seconds when it was already prepared)",
        info.builder_dir,
        info.num_examples,
        info.num_speakers,
        listed,
        ", ".join(f"{n} {k}" for k, n in (info.source.get("num_skipped") or {}).items()) or "none",
        seconds,
        listed / max(seconds, 1e-9),
    )
    print(info.builder_dir)  # the one line on stdout, for scripts
    return 0


if __name__ == "__main__":
    # The repository root (configs/ import hamjax) must be importable without installation.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
