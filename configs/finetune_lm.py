"""finetune_lm: WeSpeaker's large-margin fine-tuning of a trained work directory.

After normal training, WeSpeaker fine-tunes for a few epochs on longer crops with a larger
margin and a small learning rate (Thienpondt et al., "The IDLAB VoxSRC-20 submission: large
margin fine-tuning and quality-aware score calibration", 2021; WeSpeaker's ``lm`` configs):
6-s crops (600 frames), margin 0.5 from the first step, lr 1e-4 decaying to 2.5e-5 over 5
epochs. The recipe is the source work directory's own (model, head, data, features), with
those changes; the encoder starts from the source's model, the head from its training
speakers' fresh initialisation.

Launch (the part after ":" is the work directory to fine-tune):

    python3 train.py --config configs/finetune_lm.py:runs/ham_vox2 --workdir runs/ham_vox2_lm
    python3 eval.py --workdir runs/ham_vox2_lm

Expected: a lower EER than the source on long test utterances (WeSpeaker reports 5-10 %
relative on VoxCeleb1-O); on the 2-s synthetic quickstart utterances the longer crops have
nothing to add.
"""

from pathlib import Path

from hamjax import checkpointing, config_lib

#: train.py --help: the variant is the work directory to fine-tune.
VARIANTS = ("WORKDIR",)


def get_config(workdir: str = ""):
    """The large-margin fine-tuning of ``workdir`` (a train.py or import-torch work dir)."""
    if not workdir or workdir == "WORKDIR":
        raise ValueError(
            "configs/finetune_lm.py needs the work directory to fine-tune: "
            "--config configs/finetune_lm.py:runs/NAME"
        )
    source = Path(workdir).expanduser()
    config = config_lib.base_config()  # fields newer than the source's run keep their default
    config.update(checkpointing.load_config(source).to_dict())
    config.train.init_from = str(source.absolute())
    # Re-resolved from the dataset by the trainer.
    config.head.num_classes = -1
    config.train.steps_per_epoch = -1
    config.train.max_steps = -1
    config.data.crop_frames = 600
    config.head.margin = 0.5
    config.head.margin_warmup_steps = 0
    config.optim.learning_rate = 1e-4
    config.optim.warmup_steps = 0
    config.train.num_epochs = 5
    config.optim.lr_decay = (2.5e-5 / 1e-4) ** (1 / 5)  # 1e-4 -> 2.5e-5 over the 5 epochs
    config.train.average_last = min(int(config.train.average_last), 5)
    return config
