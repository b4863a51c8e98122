"""am_softmax: the authors' ECAPA-TDNN recipe with AM-Softmax, cosine margin m = 0.2, s = 30.

Variants (``--config configs/am_softmax.py:VARIANT``):
  vox2 (default): VoxCeleb2 dev, 100 epochs.   vox1: VoxCeleb1 dev, 150 epochs.
Both: ECAPA-TDNN C=1024 (192-d), 200-frame crops fed clean + augmented (loss mean(clean) +
mean(aug)), batch 256, Adam lr 1e-3 with coupled weight decay 2e-5, lr x0.97 per epoch, final
model = average of the last 5 epoch checkpoints (WORKDIR/final).

Launch (data.root holds train_list.txt and wav/; the TFDS dataset is prepared on first use):

    python train.py --config configs/am_softmax.py:vox2 --workdir runs/am_softmax_vox2 \
        --config.data.root=/path/to/voxceleb2 --config.data.data_dir=/path/to/tfds
    python eval.py --workdir runs/am_softmax_vox2

Expected (authors, vox2, final averaged model, EER % on Vox1-O / E / H): 1.298 / 1.461 / 2.732.
"""

from hamjax import config_lib

#: The corpus variants (``--config configs/NAME.py:VARIANT``); read by train.py --help.
VARIANTS = ("vox2", "vox1")


def get_config(variant: str = "vox2"):
    """Returns the ``am_softmax`` recipe on ``variant`` ("vox1" or "vox2")."""
    return config_lib.paper_recipe("am_softmax", variant)
