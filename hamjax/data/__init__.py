"""Speaker data: audio I/O, the synthetic corpus, TFDS builders, the grain pipeline, augmentation.

Names are re-exported lazily: ``import hamjax.data`` loads nothing heavy, and reading a prepared
dataset (``load_dataset_info``, ``make_train_iterator``) never imports TensorFlow; only
``prepare_dataset`` does.

Corpora (:mod:`hamjax.data.corpus`): ``Utterance``, ``CorpusError``, ``list_voxceleb``,
``list_kaldi``, ``read_speaker_list``, ``read_hierarchy``, ``speaker_names``.
TFDS (:mod:`hamjax.data.tfds_builder`): ``prepare_dataset``, ``prepare_from_config``,
``load_dataset_info``, ``open_data_source``, ``DatasetInfo``.
Input pipeline (:mod:`hamjax.data.pipeline`): ``make_train_iterator``, ``TrainIterator``,
``steps_per_epoch``, ``crop_samples``, ``random_crop``.
Audio (:mod:`hamjax.data.audio`): ``load_audio``, ``write_wav``, ``AudioError``.
Synthetic corpus (:mod:`hamjax.data.synthetic`): ``generate_corpus``.
Augmentation (:mod:`hamjax.data.augment`): ``Augmenter``.
"""

import importlib
from typing import Any

_EXPORTS = {
    "Utterance": "corpus",
    "CorpusError": "corpus",
    "list_voxceleb": "corpus",
    "list_kaldi": "corpus",
    "read_speaker_list": "corpus",
    "read_hierarchy": "corpus",
    "speaker_names": "corpus",
    "prepare_dataset": "tfds_builder",
    "prepare_from_config": "tfds_builder",
    "load_dataset_info": "tfds_builder",
    "open_data_source": "tfds_builder",
    "DatasetInfo": "tfds_builder",
    "make_train_iterator": "pipeline",
    "TrainIterator": "pipeline",
    "steps_per_epoch": "pipeline",
    "crop_samples": "pipeline",
    "random_crop": "pipeline",
    "load_audio": "audio",
    "write_wav": "audio",
    "AudioError": "audio",
    "generate_corpus": "synthetic",
    "Augmenter": "augment",
}
_SUBMODULES = ("audio", "augment", "corpus", "pipeline", "synthetic", "tfds_builder")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'hamjax.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
