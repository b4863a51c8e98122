r"""Evaluates a trained work directory on speaker-verification trial lists.

Usage::

    python eval.py --workdir runs/quickstart
    python eval.py --workdir runs/ham --trials vox1_O_cleaned.txt,vox1_H_cleaned.txt \
        --wav_root ~/data/voxceleb/vox1/wav --checkpoint final --protocol authors \
        --score cosine --norm asnorm --top_k 300

Unset flags take their value from ``WORKDIR/config.json``'s ``eval`` section. For each trial
list it writes ``WORKDIR/eval/<list name>/`` (report.json, scores.txt, det.png,
score_hist.png) and prints one summary line; see :mod:`hamjax.eval_lib`.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging

from hamjax import eval_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Training work directory.", required=True)
_TRIALS = flags.DEFINE_string(
    "trials", None, "Comma-separated trial lists (VoxCeleb or Kaldi format). Default: eval.trials."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "'latest', 'final' or a step. Default: eval.checkpoint."
)
_PROTOCOL = flags.DEFINE_enum(
    "protocol", None, ["authors", "full"], "Embedding protocol. Default: eval.protocol."
)
_SCORE = flags.DEFINE_enum("score", None, ["cosine", "poincare"], "Scoring. Default: eval.score.")
_NORM = flags.DEFINE_enum(
    "norm", None, ["none", "asnorm"], "Score normalisation. Default: eval.norm."
)
_WAV_ROOT = flags.DEFINE_string(
    "wav_root", None, "Directory the trial lists' paths are relative to. Default: eval.wav_root."
)
_WAV_SCP = flags.DEFINE_string("wav_scp", None, "Kaldi wav.scp for utterance-id trial lists.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir of the training set (AS-norm cohort). Default: data.data_dir."
)
_TOP_K = flags.DEFINE_integer("top_k", None, "AS-norm top-k. Default: eval.asnorm.top_k.")
_COHORT_SIZE = flags.DEFINE_integer("cohort_size", None, "AS-norm cohort speakers (0 = all).")
_COHORT_UTTS = flags.DEFINE_integer(
    "cohort_utterances", None, "Training utterances averaged per cohort speaker (0 = all)."
)
_BASELINE = flags.DEFINE_boolean("baseline", True, "Also score the non-learned log-mel baseline.")
_BATCH_SECONDS = flags.DEFINE_float("batch_seconds", None, "Audio seconds per device call.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Progress of hamjax on stderr; orbax/JAX chatter (absl INFO) is silenced.
    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("hamjax")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    eval_lib.evaluate(
        _WORKDIR.value,
        trials=_TRIALS.value,
        checkpoint=_CHECKPOINT.value,
        protocol=_PROTOCOL.value,
        score=_SCORE.value,
        norm=_NORM.value,
        wav_root=_WAV_ROOT.value,
        wav_scp=_WAV_SCP.value,
        data_dir=_DATA_DIR.value,
        top_k=_TOP_K.value,
        cohort_size=_COHORT_SIZE.value,
        cohort_utterances=_COHORT_UTTS.value,
        baseline=_BASELINE.value,
        batch_seconds=_BATCH_SECONDS.value,
    )


if __name__ == "__main__":
    app.run(main)
