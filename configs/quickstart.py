"""quickstart: HAM-Softmax on the built-in synthetic corpus, small enough for a 2-core CPU.

The project's main job. From the repository root::

    python3 -m pip install -e ".[prepare]"
    python3 train.py --config configs/quickstart.py --workdir runs/quickstart
    python3 eval.py --workdir runs/quickstart

train.py generates the synthetic hierarchical corpus (hamjax.data.synthetic.QUICKSTART size:
5 families x 4 base voices x 8 speakers, 30 utterances each) under ``data/synthetic/quickstart``
if it is missing, prepares it as a TFDS dataset under ``data/tfds``, and trains a small
ECAPA-TDNN with the HAM-Softmax head (c = 3, m = 0.2, s = 30, the paper's setting).
Relative paths are relative to the current directory; override them with
``--config.data.root=... --config.data.data_dir=...``.

Expected (2 quiet CPU cores): generation + preparation + training + evaluation in about 4
minutes; eval.py prints heldout_speakers EER 3.833 % and heldout_bases EER 10.500 % (the
README's block), about 10x and 4x lower than the non-learned log-mel-statistics baseline.
"""

from hamjax import config_lib


def get_config():
    """Returns the quickstart ``ConfigDict``."""
    config = config_lib.paper_recipe("ham_softmax", "vox2")
    config.seed = 0

    # Data: the built-in corpus, generated and prepared on first use.
    config.data.source = "synthetic"
    config.data.synthetic.size = "quickstart"  # hamjax.data.synthetic.QUICKSTART
    config.data.root = "data/synthetic/quickstart"  # corpus (wav/, lists, trials/)
    config.data.data_dir = "data/tfds"  # prepared TFDS dataset
    config.data.name = "synthetic_quickstart"
    config.data.crop_frames = 100  # 1-s crops: half the authors' 2 s, for CPU speed
    config.data.num_workers = 0  # batches built in-process: no worker start-up on 2 cores
    # No augmented copies: on 2 cores the authors' clean + augmented scheme doubles the step.
    config.data.augment.enabled = False

    # A small ECAPA-TDNN (the paper's is C=1024, 1536, 256, 192; ~14.7M parameters).
    config.model.channels = 64  # res2 width C
    config.model.mfa_channels = 192  # multi-layer aggregation width
    config.model.attention_channels = 32  # attentive pooling bottleneck
    config.model.se_bottleneck = 32  # squeeze-excitation width
    config.model.embed_dim = 128  # embedding size

    # HAM-Softmax, the paper's hyper-parameters; the margin ramps in over the first epochs so
    # the small network first finds the classes.
    config.head.margin_warmup_steps = 100

    # Optimisation: the authors' Adam + coupled decay; a faster per-epoch decay for a short run.
    config.optim.learning_rate = 2e-3
    config.optim.lr_decay = 0.9

    config.train.global_batch_size = 64  # divisible by 1, 2, 4, 8 devices
    config.train.num_epochs = 10
    config.train.checkpoint_every_steps = 0  # epoch ends only
    config.train.keep_checkpoints = 2
    config.train.average_last = 3
    config.train.log_every_steps = 10

    # Evaluation (eval.py --workdir runs/quickstart): the corpus's trial lists.
    # Names resolve under data.root/trials, so they follow a --config.data.root override.
    config.eval.trials = ("heldout_speakers", "heldout_bases")
    config.eval.wav_root = ""  # data.root/wav
    config.eval.protocol = "full"
    return config
