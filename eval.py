"""Evaluates a trained work directory on speaker-verification trial lists.

Usage:
  python3 eval.py --workdir DIR [--trials LIST[,LIST...]] [options]

Examples:
  python3 eval.py --workdir runs/quickstart
  python3 eval.py --workdir runs/ham --trials vox1_O_cleaned.txt,vox1_H_cleaned.txt \\
      --wav_root ~/data/voxceleb/vox1/wav --checkpoint final --protocol authors --norm asnorm

Trial lists: one trial per line, VoxCeleb format "LABEL ENROLL TEST" (label 1 = same speaker,
0 = different), paths relative to --wav_root, e.g.

    1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav

or Kaldi format "ENROLL TEST target|nontarget" with utterance ids looked up in --wav_scp.
Duplicate lines are dropped with a warning; one pair labelled both 1 and 0 is an error.

Every flag left unset takes its value from the work directory's config.json ("eval" section).
For each list, the outputs go to DIR/eval/NAME/, where NAME is the list's file name without
its extension (report.json with EER and minDCF, scores.txt, det.png, score_hist.png), and one
summary line is printed. Embeddings are cached in DIR/eval/cache/ (a changed model, setting or
audio file is embedded again). Errors print one line; --debug shows the traceback.

On a sweep's work directory (train.py --sweep; it holds sweep.json), every variant is
evaluated into WORKDIR/variants/NAME/eval/ as above, their embeddings extracted in one pass
with the variants' weights stacked, and one table is written to WORKDIR/eval/sweep_table.md
(and sweep_results.json) and printed.
"""

from __future__ import annotations

from hamjax import cli_common

cli_common.quiet_third_party()

from absl import flags  # noqa: E402

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "(required) The train.py work directory to evaluate.", required=True
)
_TRIALS = flags.DEFINE_string(
    "trials",
    None,
    "Comma-separated trial lists: paths, or names of lists under the training corpus "
    "(data.root/trials, e.g. heldout_speakers). Default: eval.trials of the config.",
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "Which weights: 'final' (the average of the last epoch checkpoints), 'latest' (the newest "
    "training checkpoint) or a step number. Default: final if it exists, else latest.",
)
_PROTOCOL = flags.DEFINE_enum(
    "protocol",
    None,
    ["authors", "full"],
    "How an utterance is embedded. 'full': one embedding of the whole utterance. 'authors' "
    "(the paper's): the full-utterance score averaged with the mean score of 5x5 pairs of "
    "3-s crops. Default: eval.protocol.",
)
_SCORE = flags.DEFINE_enum(
    "score",
    None,
    ["cosine", "poincare"],
    "How two embeddings are compared. 'cosine': of the L2-normalised embeddings. 'poincare': "
    "minus the distance in the hyperbolic head's ball, after the head's own map (hyperbolic "
    "heads only: H-/HAM-Softmax, h_mlr). "
    "Default: eval.score.",
)
_NORM = flags.DEFINE_enum(
    "norm",
    None,
    ["none", "asnorm"],
    "Score normalisation. 'asnorm': adaptive symmetric s-norm against a cohort of training "
    "speakers (read from the prepared training dataset). Default: eval.norm.",
)
_WAV_ROOT = flags.DEFINE_string(
    "wav_root", None, "Directory the trial lists' paths are relative to. Default: eval.wav_root."
)
_WAV_SCP = flags.DEFINE_string(
    "wav_scp", None, "Kaldi wav.scp mapping the utterance ids of Kaldi-format trial lists."
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir of the training set (AS-norm cohort). Default: data.data_dir."
)
_TOP_K = flags.DEFINE_integer(
    "top_k", None, "AS-norm: the highest cohort scores kept per utterance. Default: 300."
)
_COHORT_SIZE = flags.DEFINE_integer("cohort_size", None, "AS-norm cohort speakers (0 = all).")
_COHORT_UTTS = flags.DEFINE_integer(
    "cohort_utterances", None, "AS-norm: training utterances averaged per speaker (0 = all)."
)
_BASELINE = flags.DEFINE_boolean(
    "baseline", True, "Also score the non-learned log-mel statistics baseline for comparison."
)
_BATCH_SECONDS = flags.DEFINE_float(
    "batch_seconds", None, "Audio seconds per device call (bounds memory). Default: 64."
)
_REPORTS_DIR = flags.DEFINE_string(
    "reports_dir",
    "eval",
    "The work directory's folder for the per-list reports, e.g. eval_poincare to keep a second "
    "scoring beside the first (embeddings are cached in WORKDIR/eval/cache either way).",
)
flags.DEFINE_boolean("debug", False, "Show tracebacks instead of one-line errors.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli_common.log_to_stderr()
    from hamjax import eval_lib, sweep_eval

    # A sweep's work directory: every variant, extracted together, and one table.
    evaluate = (
        sweep_eval.evaluate_sweep if sweep_eval.is_sweep(_WORKDIR.value) else eval_lib.evaluate
    )
    evaluate(
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
        reports_dir=_REPORTS_DIR.value,
    )


if __name__ == "__main__":
    cli_common.run(main)
