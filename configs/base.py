"""The shared base config: the authors' VoxCeleb2 recipe with a plain softmax head.

Every field, with its comment, is defined in :func:`hamjax.config_lib.base_config`; the recipe
files in this directory override a few of them. Launch (after preparing VoxCeleb2 dev):

    python train.py --config configs/base.py --workdir runs/base \
        --config.data.root=/path/to/voxceleb2 --config.data.data_dir=/path/to/tfds

Expected: the same as configs/softmax.py (Vox1-O EER about 2.1 %).
"""

from hamjax import config_lib


def get_config():
    """Returns the base ``ConfigDict``."""
    return config_lib.base_config()
