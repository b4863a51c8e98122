"""The training configuration: the shared base, the paper recipes, and validation.

Every recipe in ``configs/`` is built from :func:`base_config` here, so that the field list (and
its comments) lives in one importable place that the trainer (#6), the input pipeline (#5) and the
evaluation (#7) all read. ``configs/base.py`` re-exports it for ``--config configs/base.py``.

The authors' recipe (``../shared/METHOD.md``): ECAPA-TDNN C=1024 with a 192-d embedding, 200-frame
crops, every crop fed clean AND augmented with loss ``mean(clean) + mean(aug)``, Adam lr 1e-3 with
torch-style (coupled, L2) weight decay 2e-5, lr x0.97 per epoch, batch 256, 150 epochs on
VoxCeleb1 / 100 on VoxCeleb2, and the average of the last 5 epoch checkpoints as the final model.

Each section is checked by the module that reads it (``hamjax.heads.validate_config`` for
``head`` ...); :func:`hamjax.train_lib.validate_config` runs them all before any work.
This module is declarative: it builds configs and imports nothing of hamjax.
"""

from __future__ import annotations

from typing import Any

import ml_collections

# Paper recipes: head fields per recipe name (METHOD.md, "Authors' recipe").
RECIPES: dict[str, dict[str, Any]] = {
    "softmax": dict(name="softmax", scale=1.0, margin=0.0),
    "softmax_scaled": dict(name="softmax_scaled", scale=30.0, margin=0.0),
    "am_softmax": dict(name="am", scale=30.0, margin=0.2),
    "aam_softmax": dict(name="aam", scale=30.0, margin=0.2),
    "ram_softmax": dict(name="ram", scale=30.0, margin=0.2),
    "h_softmax": dict(name="h_softmax", scale=30.0, margin=0.0, c=5.0),
    "ham_softmax": dict(name="ham_softmax", scale=30.0, margin=0.2, c=3.0),
    # "E.H." in the authors' scripts: 0.3 * Euclidean (RAM) margin loss + 0.7 * HAM loss.
    "eh_am_softmax": dict(
        name="combined",
        scale=30.0,
        margin=0.2,
        c=3.0,
        euclidean="ram",
        weights=(0.3, 0.7),
    ),
}

# Hyperbolic-head extensions beyond the paper (issue 16, docs/GEOMETRY.md "Hyperbolic heads"):
# head fields per recipe name, on the same base as the paper recipes (configs/mbrola.py:NAME).
# feature_scale = 0.025 starts a BatchNorm-output embedding (|e| ~ sqrt(128) = 11.3 in the
# MBROLA recipe, 13.9 at 192-d) at tangent norm ~0.3, half the clip 1/sqrt(3) = 0.58 of
# feature_clip = 1 at c = 3: the embeddings start spread inside the clipping sphere, not on it.
_FEATURE_MAP = dict(feature_clip=1.0, feature_scale=0.025)
EXTENSION_RECIPES: dict[str, dict[str, Any]] = {
    # HAM-Softmax as the authors run it (clip mode), with its centres on the ball (Riemannian
    # Adam) instead of Euclidean parameters clipped at every step.
    "ham_ball": dict(RECIPES["ham_softmax"], centres="ball"),
    # HAM-Softmax in the curvature-c ball (expmap mode) with clipped, scaled features.
    "ham_feature_clip": dict(RECIPES["ham_softmax"], mode="expmap", **_FEATURE_MAP),
    # HNN++'s Poincare MLR (signed distances to class gyroplanes), no margin, at HAM's c = 3
    # and s = 30, on the same feature map (unclipped, expmap0 of a 128-d embedding saturates
    # onto the boundary in float32). mode = "expmap" only records what h_mlr always does.
    "h_mlr": dict(name="h_mlr", mode="expmap", scale=30.0, margin=0.0, c=3.0, **_FEATURE_MAP),
    # The same with an additive margin m = 0.2 on the target's signed distance: a clipped
    # embedding lies within 2/sqrt(3) = 1.15 of the origin, so its signed distances to planes
    # through the origin are in +-1.15, and 0.2 is about the share of that range that
    # AM-Softmax's 0.2 is of cos in [-1, 1]; it is also HAM's margin (the same distance
    # units), so h_mlr_margin vs ham_feature_clip compares the two logit forms.
    "h_mlr_margin": dict(
        name="h_mlr", mode="expmap", scale=30.0, margin=0.2, c=3.0, **_FEATURE_MAP
    ),
}

# Per-corpus variants of the paper recipes: (epochs, data.name, default data.root).
VARIANTS: dict[str, dict[str, Any]] = {
    "vox1": dict(num_epochs=150, name="voxceleb1_dev", root="~/data/voxceleb"),
    "vox2": dict(num_epochs=100, name="voxceleb2_dev", root="~/data/voxceleb"),
}


def base_config() -> ml_collections.ConfigDict:
    """The shared base: the authors' VoxCeleb2 recipe with a plain softmax head.

    Returns:
      A mutable ``ConfigDict``; recipes override a few fields.
    """
    config = ml_collections.ConfigDict()
    # Seeds every random choice: initialisation, input order/crops/augmentation, SpecAugment.
    config.seed = 0

    # ---------------------------------------------------------------- data (read by #5)
    config.data = data = ml_collections.ConfigDict()
    # Which reader builds the TFDS dataset: "voxceleb" (authors' train_list.txt + wav tree),
    # "kaldi" (wav.scp + utt2spk) or "synthetic" (the built-in hierarchical corpus).
    data.source = "voxceleb"
    # The raw corpus: the directory holding train_list.txt and wav/ (a user path; "~" expanded).
    data.root = "~/data/voxceleb"
    # Where the prepared TFDS array_record dataset lives (created by hamjax.data.prepare_dataset).
    data.data_dir = "~/data/tfds"
    # TFDS dataset name inside data_dir.
    data.name = "voxceleb2_dev"
    # Training crop length in frames at a 10 ms hop: 200 frames = 2 s + 240 samples (32240).
    data.crop_frames = 200
    # grain worker processes (0 = read in the main process; deterministic either way).
    data.num_workers = 4
    # Prepare the TFDS dataset from data.root automatically when it is missing.
    data.auto_prepare = True
    # Skip unreadable audio while preparing (logged, and listed in the dataset's skipped.txt)
    # instead of failing on the first bad file.
    data.skip_bad = False
    # Audio shorter than this (seconds) is left out of the training set (always, with a log
    # line): a few frames carry no speaker information.
    data.min_seconds = 0.5
    # How the TFDS dataset is prepared (the output is the same dataset either way, example for
    # example; see README "Large corpora").
    data.prepare = prepare = ml_collections.ConfigDict()
    # "direct": hamjax's own in-process preparation (a thread pool decoding files, one
    # process; the default, right for corpora up to ~100k files). "beam": an Apache Beam
    # pipeline on the runner that beam_options name (default: Beam's local DirectRunner), e.g.
    # a Flink, Spark or Dataflow cluster for VoxCeleb2-size corpora. Needs `pip install
    # 'hamjax[beam]'`. Not to be confused: runner="direct" is *not* Beam's DirectRunner.
    prepare.runner = "direct"
    # Beam pipeline options (runner="beam" only), one shell-quoted string, e.g.
    # "--direct_num_workers=8 --direct_running_mode=multi_processing" or
    # "--runner=FlinkRunner --flink_master=host:8081 --environment_type=LOOPBACK".
    prepare.beam_options = ""
    # Augmentation (the authors': each sample yields the clean crop AND one augmented copy).
    data.augment = augment = ml_collections.ConfigDict()
    # Produce "waveform_aug" next to "waveform"; the loss is mean(clean) + mean(aug).
    augment.enabled = True
    # "authors" (clean + augmented copy of every crop) or "wespeaker" (replace the crop by
    # its augmented copy with probability augment.prob).
    augment.scheme = "authors"
    augment.prob = 0.6
    # Kinds drawn uniformly per example (hamjax.data.augment.KINDS).
    augment.kinds = ("reverb", "noise", "music", "babble")
    # Babble talkers (inclusive range) and built-in RIR reverberation times (s).
    augment.babble_speakers = (3, 8)
    augment.rt60 = (0.2, 1.0)
    # MUSAN root (noise/ music/ speech/ subfolders); "" = no MUSAN (synthetic noise instead).
    augment.musan_root = ""
    # Room impulse responses root (e.g. RIRS_NOISES/simulated_rirs); "" = no recorded RIRs.
    augment.rir_root = ""
    # Built-in, corpus-free augmentation (synthetic reverb and coloured noise) when roots are "".
    augment.synthetic = True
    # SNR ranges in dB for additive noise kinds (authors: noise 0-15, speech 13-20, music 5-15).
    augment.snr_noise = (0.0, 15.0)
    augment.snr_speech = (13.0, 20.0)
    augment.snr_music = (5.0, 15.0)
    # The built-in synthetic corpus (data.source == "synthetic"): the size preset of
    # hamjax.data.synthetic ("quickstart", ...) and explicit generate_corpus kwargs overriding it.
    data.synthetic = synthetic = ml_collections.ConfigDict()
    synthetic.size = "quickstart"
    synthetic.overrides = ml_collections.ConfigDict()

    # ---------------------------------------------------------------- features (on device)
    config.features = features = ml_collections.ConfigDict()
    # "logmel" (authors': pre-emphasis, 80 mel, Hamming 25 ms / 10 ms, log(x+1e-6), mean-sub)
    # or "fbank" (Kaldi). Any other field of this section is passed to the frontend as a kwarg.
    features.kind = "logmel"
    # SpecAugment in training: one time mask of 0-10 frames, one frequency mask of 0-8 bins.
    features.spec_augment = spec = ml_collections.ConfigDict()
    spec.enabled = True
    spec.num_time_masks = 1
    spec.max_time_width = 10
    spec.num_freq_masks = 1
    spec.max_freq_width = 8

    # ---------------------------------------------------------------- model
    config.model = model = ml_collections.ConfigDict()
    # Encoder name from hamjax.models.ENCODERS; other fields except dtype are its kwargs.
    model.name = "ecapa_tdnn"
    # ECAPA-TDNN width C (1024 in the paper; ~14.7M parameters) and embedding size.
    model.channels = 1024
    model.embed_dim = 192
    # ECAPA-TDNN internals (the paper's values): res2 groups, kernel, one SE-Res2 block per
    # dilation, SE bottleneck, multi-layer aggregation width, attentive-pooling bottleneck.
    model.scale = 8
    model.kernel_size = 3
    model.dilations = (2, 3, 4)
    model.se_bottleneck = 128
    model.mfa_channels = 1536
    model.attention_channels = 256
    # ResNet only: width of the first stage (32 in WeSpeaker's ResNet34).
    model.m_channels = 32
    # Compute dtype: "float32", or "bfloat16" for mixed precision (params stay float32).
    model.dtype = "float32"

    # ---------------------------------------------------------------- head
    config.head = head = ml_collections.ConfigDict()
    # Head name from hamjax.heads.HEADS.
    head.name = "softmax"
    # Logit scale s (1 = plain softmax; 30 in every margin recipe).
    head.scale = 1.0
    # Additive margin m (cosine margin for am/aam/ram, distance margin for ham_softmax, h_mlr).
    head.margin = 0.0
    # Curvature c > 0 of the Poincare ball (hyperbolic heads only).
    head.c = 1.0
    # Map into the ball: "clip" (authors' code: rescale onto radius (1-1e-5)/sqrt(c), unit-
    # curvature distance) or "expmap" (textbook curvature-c ball). Hyperbolic heads only.
    head.mode = "clip"
    # Learn c (softplus-parametrised) instead of fixing it. Hyperbolic heads only.
    head.learn_c = False
    # Where the class centres of h_softmax / ham_softmax / combined live: "euclidean" (the
    # authors': Euclidean parameters mapped into the ball by `mode` at every step) or "ball"
    # (points of the Poincare ball trained by Riemannian Adam, hamjax.optim.riemannian_adam;
    # weight decay then applies to the Euclidean parameters only).
    head.centres = "euclidean"
    # Feature clipping before expmap0 (Guo et al., CVPR 2022; mode "expmap" and h_mlr): the
    # embedding's tangent vector is clipped to norm r/sqrt(c), so ball points stay within
    # radius tanh(r)/sqrt(c), off the boundary. r in (0, 3]; 0 = off.
    head.feature_clip = 0.0
    # A learned scale alpha of the embedding before the clip (log-parametrised), initialised at
    # this value, so that embeddings can sit inside the clipping sphere and their radius varies
    # (mode "expmap" and h_mlr). 0 = no scale.
    head.feature_scale = 0.0
    # Linear margin warm-up over this many steps (0 = full margin from step 0).
    head.margin_warmup_steps = 0
    # Shard the class centres / weights over the device mesh's data axis (for very many
    # speakers); otherwise every device holds all of them.
    head.shard_centres = False
    # "combined" head only: the Euclidean margin kind ("am" / "aam" / "ram") and the loss
    # weights (Euclidean, hyperbolic) of total = w_e * CE(cosine) + w_h * CE(hyperbolic).
    head.euclidean = "ram"
    head.weights = (0.3, 0.7)
    # Number of speakers (classes); -1 = from the prepared dataset (resolved in config.json).
    head.num_classes = -1

    # ---------------------------------------------------------------- optimiser
    config.optim = optim = ml_collections.ConfigDict()
    # Adam as torch.optim.Adam applies it (the authors'): decay is added to the GRADIENT
    # before the moments (coupled L2), i.e. chain(add_decayed_weights, scale_by_adam, -lr).
    optim.learning_rate = 1e-3
    optim.weight_decay = 2e-5
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.eps = 1e-8
    # lr x lr_decay once per epoch (staircase exponential decay).
    optim.lr_decay = 0.97
    # Linear lr warm-up steps (0 = none, the authors').
    optim.warmup_steps = 0
    # Global-norm gradient clipping (0 = off, the authors').
    optim.grad_clip_norm = 0.0
    # Fine-tuning: the encoder's step is this multiple of the head's (0 = a frozen encoder).
    optim.encoder_lr_multiplier = 1.0

    # ---------------------------------------------------------------- training loop
    config.train = train = ml_collections.ConfigDict()
    # Global batch (all devices of all hosts); must divide by the device count. Clean crops
    # per step: the augmented copies double the encoder batch.
    train.global_batch_size = 256
    train.num_epochs = 100
    # Steps per epoch; -1 = one pass over the training set (num_examples // global_batch_size).
    train.steps_per_epoch = -1
    # Stop after this many steps in total (-1 = num_epochs * steps_per_epoch).
    train.max_steps = -1
    # Save a checkpoint every N steps (0 = only at epoch ends); always at epoch ends.
    train.checkpoint_every_steps = 1000
    # Keep the newest K checkpoints (plus the epoch checkpoints averaging needs).
    train.keep_checkpoints = 3
    # Average the last N epoch checkpoints into WORKDIR/final at the end (0 = no averaging).
    train.average_last = 5
    # Scalars to TensorBoard / the log every N steps.
    train.log_every_steps = 50
    # Validation EER on config.eval.trials every N epochs (0 = never).
    train.eval_every_epochs = 0
    # Show a tqdm progress bar (process 0 only).
    train.progress_bar = True
    # Call jax.distributed.initialize() (multi-host). Also on when HAMJAX_DISTRIBUTED=1.
    train.distributed = False
    # Where JAX cannot detect the cluster (SLURM, Open MPI, Cloud TPU and GKE are detected):
    # process 0's "host:port" ("" = detect, or $JAX_COORDINATOR_ADDRESS), the number of
    # processes (0 = detect) and this process's id (-1 = detect).
    train.coordinator_address = ""
    train.num_processes = 0
    train.process_id = -1
    # Write checkpoints in a background thread (orbax async).
    train.async_checkpointing = True
    # Fine-tuning: start the encoder from this work directory's model (its final/ if present,
    # else its newest checkpoint; "" = from scratch). The head is new: this run's speakers.
    train.init_from = ""
    # JAX's persistent compilation cache (hamjax.compile_cache.enable): compiled steps are
    # stored on disk so a resume or a repeated evaluation loads them instead of recompiling.
    # "~/.cache/hamjax/jax" = the default location ($HAMJAX_COMPILATION_CACHE_DIR, else
    # $XDG_CACHE_HOME/hamjax/jax, else ~/.cache/hamjax/jax); any other path is used as given;
    # "" = off. Keep it private to the user: the cache holds executable code.
    train.compilation_cache_dir = "~/.cache/hamjax/jax"

    # ---------------------------------------------------------------- sweeps (hamjax.sweep)
    config.sweep = sweep = ml_collections.ConfigDict()
    # Jitted ablations: swept fields as train.py's --sweep flags, e.g. ("head.margin=0.1,0.2",
    # "seed=0,1"); every variant is trained by one vmapped program. () = one ordinary run.
    sweep.axes = ()
    # Pair the value lists (all of one length, train.py --zip) instead of taking their product.
    sweep.zip = False
    # True: every variant sees the same global batch (one input pipeline, config.seed's order).
    # False: each variant its own seeded order (one pipeline per variant seed, batches stacked).
    sweep.shared_batches = True
    # How the one program runs its variants: "vmap" (batched ops over all variants; fills an
    # accelerator), "unroll" (V independent copies of the step, run side by side by XLA:CPU;
    # fastest on CPU, compile time grows with V), "map" (jax.lax.map, one variant after another;
    # least memory, slow on CPU) or "auto" (unroll on CPU up to 16 variants, else vmap). Same
    # maths in every mode (sweep.vectorize_mode has the measurements).
    sweep.vectorize = "auto"

    # ---------------------------------------------------------------- evaluation (read by #7)
    config.eval = ev = ml_collections.ConfigDict()
    # Trial lists (VoxCeleb format "label enroll test"): paths, or names looked up under
    # data.root and data.root/trials (e.g. "heldout_speakers" for the synthetic corpus).
    ev.trials = ()
    # Directory the trial paths are relative to ("" = data.root/wav).
    ev.wav_root = ""
    # Kaldi wav.scp mapping trial utterance ids to files ("" = paths under wav_root).
    ev.wav_scp = ""
    # "full" (whole utterance) or "authors" (mean of full cosine and 5x5 3-s crop cosines).
    ev.protocol = "authors"
    # "cosine" (L2-normalised embeddings) or "poincare" (negative distance in the head's ball).
    ev.score = "cosine"
    # Score normalisation: "none" or "asnorm" (adaptive s-norm, cohort = training speakers).
    ev.norm = "none"
    ev.asnorm = asnorm = ml_collections.ConfigDict()
    # Top-k most similar cohort speakers per side.
    asnorm.top_k = 300
    # Cohort speakers (0 = every training speaker), each the mean of this many utterances.
    asnorm.cohort_size = 0
    asnorm.utterances_per_speaker = 10
    # Audio per embedding batch, seconds (bounds memory during extraction).
    ev.batch_seconds = 64.0
    # Which checkpoint eval.py scores by default: "final" if it exists, else "latest".
    ev.checkpoint = "final"
    return config


def paper_recipe(recipe: str, variant: str | None = "vox2") -> ml_collections.ConfigDict:
    """The authors' recipe ``recipe`` (a key of :data:`RECIPES`) on ``variant`` (vox1 / vox2).

    A key of :data:`EXTENSION_RECIPES` gives that head on the same base (the authors' training
    recipe, another head).

    Args:
      recipe: e.g. ``"ham_softmax"``.
      variant: ``"vox1"`` (150 epochs on VoxCeleb1 dev) or ``"vox2"`` (100 epochs on VoxCeleb2
        dev); ``None`` or ``""`` means vox2.

    Raises:
      ValueError: unknown recipe or variant.
    """
    heads = {**RECIPES, **EXTENSION_RECIPES}
    if recipe not in heads:
        raise ValueError(f"recipe {recipe!r} is unknown; expected one of {sorted(heads)}")
    variant = variant or "vox2"
    if variant not in VARIANTS:
        raise ValueError(
            f"config variant {variant!r} is unknown for recipe {recipe!r}; "
            f"expected one of {sorted(VARIANTS)} (e.g. --config configs/{recipe}.py:vox1)"
        )
    config = base_config()
    for key, value in heads[recipe].items():
        config.head[key] = value
    v = VARIANTS[variant]
    config.train.num_epochs = v["num_epochs"]
    config.data.name = v["name"]
    config.data.root = v["root"]
    # VoxCeleb1-O/E/H are the authors' test lists; they live beside the VoxCeleb1 wavs.
    config.eval.trials = ("~/data/voxceleb/trials/vox1_O_cleaned.txt",)
    config.eval.wav_root = "~/data/voxceleb/vox1_test/wav"
    return config
