"""The reproduction study's recipe: a small ECAPA-TDNN on the MBROLA real-voice corpus.

Build the corpus first (``scripts/make_mbrola_corpus.py --install`` once as root, then
``--root data/mbrola``), then train any of the paper's heads, e.g.::

    python train.py --config configs/mbrola.py:ham_softmax --workdir runs/mbrola_ham
    python eval.py --workdir runs/mbrola_ham

The argument after ``:`` is a key of :data:`hamjax.config_lib.RECIPES` (default
``ham_softmax``); the head keeps the paper's hyper-parameters (s = 30, m = 0.2, c = 3 or 5).
``scripts/reproduction_study.py`` trains every head over several seeds with this recipe and
writes ``docs/REPRODUCTION.md``.

The hyperbolic-head extensions of issue 16 (:data:`hamjax.config_lib.EXTENSION_RECIPES`,
``docs/GEOMETRY.md`` "Hyperbolic heads") run on the same recipe:

* ``ham_ball``: HAM-Softmax (clip mode) with its class centres on the Poincaré ball, trained
  by Riemannian Adam (``head.centres = "ball"``);
* ``ham_feature_clip``: HAM-Softmax in the curvature-c ball (``mode = "expmap"``) with Guo et
  al.'s feature clipping (r = 1) and a learned embedding scale;
* ``h_mlr``: HNN++'s Poincaré MLR on the same feature map, no margin;
* ``h_mlr_margin``: the same with a distance margin m = 0.2 (HAM's units).

Score them in their ball with ``python eval.py --workdir DIR --score poincare`` as well.

Everything else is sized for a 2-core CPU: 1-s crops, a C=64 ECAPA-TDNN with 128-d
embeddings, batch 64, 8 epochs (about 4 minutes per run on one CPU thread). Trials: held-out
persons and held-out language families (``data.root/trials``).
"""

from hamjax import config_lib

#: The heads this recipe trains (``--config configs/mbrola.py:HEAD``): the paper's, then the
#: extensions; read by train.py --help.
VARIANTS = (*config_lib.RECIPES, *config_lib.EXTENSION_RECIPES)


def get_config(recipe: str = "ham_softmax"):
    """Returns the MBROLA-corpus ``ConfigDict`` for the head recipe ``recipe`` (a VARIANT)."""
    config = config_lib.paper_recipe(recipe or "ham_softmax", "vox2")
    config.seed = 0

    # Data: the corpus of scripts/make_mbrola_corpus.py, prepared to TFDS on first use; its
    # train_list.txt selects the training persons' speakers.
    config.data.source = "voxceleb"
    config.data.root = "data/mbrola"
    config.data.data_dir = "data/tfds"
    config.data.name = "mbrola"
    config.data.auto_prepare = True
    config.data.crop_frames = 100  # 1-s crops, for CPU speed
    config.data.num_workers = 0
    config.data.augment.enabled = False  # the corpus already has channels, reverb and noise

    # The quickstart's small ECAPA-TDNN (~0.3M parameters without the head).
    config.model.channels = 64
    config.model.mfa_channels = 192
    config.model.attention_channels = 32
    config.model.se_bottleneck = 32
    config.model.embed_dim = 128

    # Margin ramp as in the quickstart, so the small network first finds the classes.
    config.head.margin_warmup_steps = 100

    config.optim.learning_rate = 2e-3
    config.optim.lr_decay = 0.9

    config.train.global_batch_size = 64
    # 8 epochs of the 8,316 training utterances (129 steps each, 1,032 in all); the final model
    # averages the last 2 epoch checkpoints (the authors average 5 of 100 epochs).
    config.train.num_epochs = 8
    config.train.checkpoint_every_steps = 100  # a killed study run resumes within 100 steps
    config.train.keep_checkpoints = 2
    config.train.average_last = 2
    config.train.log_every_steps = 50

    config.eval.trials = ("heldout_persons", "heldout_families", "within_family")
    config.eval.wav_root = ""  # data.root/wav
    config.eval.protocol = "full"
    return config
