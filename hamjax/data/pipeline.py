"""The grain training input pipeline: shuffled, host-sharded, cropped, augmented, resumable.

One host's stream is a ``grain.MapDataset`` (random access, so it can be sliced, resumed and split
across worker processes without changing a single value):

1. **Order.** Epoch ``e`` visits the records in the permutation ``pi_e`` of ``[0, N)`` given by
   ``grain.experimental.index_shuffle`` keyed by ``seed + e`` (a Feistel permutation: O(1) per
   index, no ``[N]`` table). Only the first ``K = steps_per_epoch * G`` positions of ``pi_e`` are
   used (``G`` the global batch), so every epoch is a whole number of steps and every host gets
   the same number of batches. Host ``p`` of ``P`` takes the ``p``-th block of ``b = G / P``
   positions of every global batch: its ``j``-th record of epoch ``e`` is
   ``pi_e(k * G + p * b + r)`` with ``k, r = divmod(j, b)``.
2. **Crop.** A random 200-frame crop (``(T - 1) * 160 + 400 = 32240`` samples; an utterance
   shorter than that is wrap-padded -- tiled -- from its start, as the authors' loader does)
   drawn from ``np.random.default_rng((seed, 1, e, record))``: the crop and augmentation of a
   record depend on the seed, the epoch and the record only.
3. **Augment.** With the authors' scheme every example also yields ``waveform_aug`` (the
   augmented copy of the *same* crop); with WeSpeaker's, ``waveform`` itself is replaced by its
   augmented copy with probability ``p``.
4. **Batch** ``b = G / P`` examples, then hand batches to the training loop, optionally built by
   ``num_workers`` processes (``mp_prefetch``; worker ``w`` builds batches ``w, w + W, ...`` and
   they are interleaved back in order).

Consequences: the output is bit-identical for any worker count and any thread count; global
batch ``k`` is the *same examples, in the same rows, with the same crops* whatever the number
of hosts (host ``p`` holds rows ``p * b ... (p + 1) * b - 1`` of it, which is where
``jax.make_array_from_process_local_data`` puts them), so in-step randomness drawn per row and
every device's share match a one-host run on as many devices; ``get_state()``/``set_state()``
(grain's own iterator state, JSON) resume exactly mid-epoch, and ``start_step`` resumes at any
step without a saved state.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import Any, Protocol

import grain
import numpy as np

from hamjax.data import tfds_builder

#: Samples per analysis hop and window at 16 kHz (10 ms / 25 ms), as the frontends use.
HOP_SAMPLES = 160
WIN_SAMPLES = 400
AUGMENT_SCHEMES = ("none", "authors", "wespeaker")


def crop_samples(crop_frames: int) -> int:
    """Samples giving ``crop_frames`` frames: ``(T - 1) * 160 + 400`` (200 -> 32240)."""
    if int(crop_frames) < 1:
        raise ValueError(f"crop_frames={crop_frames!r}: expected a positive integer")
    return (int(crop_frames) - 1) * HOP_SAMPLES + WIN_SAMPLES


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Whole global batches per epoch: ``floor(num_examples / global_batch_size)``.

    The ``num_examples mod global_batch_size`` examples left over are a different random subset
    each epoch (the permutation changes), as with a ``drop_last`` PyTorch loader.

    Raises:
      ValueError: a non-positive batch size, or fewer examples than one global batch.
    """
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size={global_batch_size!r}: expected a positive integer")
    steps = int(num_examples) // int(global_batch_size)
    if steps < 1:
        raise ValueError(
            f"num_examples={num_examples} is smaller than global_batch_size={global_batch_size}: "
            "not a single training step per epoch"
        )
    return steps


def random_crop(wav: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``num_samples`` window of ``wav`` as float32 in [-1, 1].

    Args:
      wav: ``[samples]`` int16 PCM (scaled by 1/32768) or float audio.
      num_samples: crop length ``S``.
      rng: draws the start offset (uniform over ``[0, len - S]``).

    Returns:
      ``[S]`` float32. An utterance shorter than ``S`` is tiled from its start (``numpy.pad``
      mode ``"wrap"``, the authors' loader), so no zeros are introduced.

    Raises:
      ValueError: ``wav`` is empty or not 1-D.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"random_crop: expected a non-empty [samples] waveform, got {wav.shape}")
    scale = np.float32(1.0 / 32768.0) if wav.dtype == np.int16 else np.float32(1.0)
    if wav.size < num_samples:
        out = np.pad(wav, (0, num_samples - wav.size), mode="wrap")
    else:
        start = int(rng.integers(0, wav.size - num_samples + 1))
        out = wav[start : start + num_samples]
    return out.astype(np.float32) * scale


class WaveAugmenter(Protocol):
    """What the pipeline needs of :class:`hamjax.data.augment.Augmenter` (picklable)."""

    def augment(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Everything that determines the stream; saved beside the iterator state and checked."""

    seed: int
    num_examples: int
    global_batch_size: int
    process_index: int
    process_count: int
    steps_per_epoch: int
    num_epochs: int | None
    start_epoch: int
    start_step: int
    crop_samples: int
    augment_scheme: str
    augment_prob: float


# Settings that change only where the stream ends, not what any position holds (an element is a
# function of its position): a resumed run may train for more or fewer epochs.
_LENGTH_ONLY_SETTINGS = ("num_epochs",)


class _RecordOfPosition:
    """Host position ``i`` -> ``(epoch, record index)``: the shuffle + host sharding of step 1."""

    def __init__(self, s: _Settings):
        self._s = s
        self._per_host_batch = s.global_batch_size // s.process_count
        self._per_host_epoch = s.steps_per_epoch * self._per_host_batch

    def __call__(self, position: int) -> tuple[int, int]:
        s = self._s
        epoch, j = divmod(int(position), self._per_host_epoch)
        epoch += s.start_epoch
        batch, row = divmod(j, self._per_host_batch)
        # Host p holds block p of each global batch: the rows it supplies to the global array.
        g = batch * s.global_batch_size + s.process_index * self._per_host_batch + row
        # Feistel permutation of [0, N): no [N] index table, O(1) memory per epoch.
        record = grain.experimental.index_shuffle(
            g, max_index=s.num_examples - 1, seed=(s.seed + epoch) % 2**32, rounds=4
        )
        return epoch, int(record)


class _ReadCropAugment:
    """``(epoch, record)`` -> one training example (steps 2-3); runs in the worker processes."""

    def __init__(self, source: Any, s: _Settings, augmenter: WaveAugmenter | None):
        self._source = source
        self._s = s
        self._augmenter = augmenter

    def __call__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, record = key
        s = self._s
        example = self._source[record]
        # One generator per (seed, epoch, record): crops do not depend on workers or hosts.
        rng = np.random.default_rng((s.seed, 1, epoch, record))
        wav = random_crop(example["audio"], s.crop_samples, rng)
        out = {"waveform": wav, "label": np.int32(example["speaker"])}
        if s.augment_scheme == "authors":
            out["waveform_aug"] = _checked(self._augmenter.augment(wav.copy(), rng), wav.shape)
        elif s.augment_scheme == "wespeaker":
            if rng.random() < s.augment_prob:
                out["waveform"] = _checked(self._augmenter.augment(wav.copy(), rng), wav.shape)
        return out


def _checked(wav: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.shape != shape:
        raise ValueError(f"augmenter returned shape {wav.shape}, expected {shape}")
    return wav


class TrainIterator:
    """Iterator over host-local batches, with exact ``get_state()``/``set_state()``.

    ``next(it)`` returns ``{"waveform": float32 [b, S], "label": int32 [b]}`` (plus
    ``"waveform_aug": float32 [b, S]`` with the authors' augmentation scheme).

    The state is a JSON-serialisable dict (grain's iterator state plus the settings that define
    the stream); :meth:`set_state` refuses a state saved with different settings (seed, batch,
    hosts ...), which would otherwise silently resume a different stream. Store it as JSON
    (e.g. ``orbax.checkpoint.args.JsonSave(it.get_state())``); grain's own orbax handler
    expects a bare ``grain.DatasetIterator`` and does not apply.

    Attributes:
      steps_per_epoch: global steps per epoch.
      num_examples: examples in the prepared dataset.
      per_host_batch_size: ``b = global_batch_size / process_count``.
      info: the dataset's :class:`hamjax.data.tfds_builder.DatasetInfo`.
    """

    def __init__(self, dataset: grain.IterDataset, settings: _Settings, info: Any):
        self._dataset = dataset
        self._it = iter(dataset)
        self._settings = settings
        self.info = info
        self.steps_per_epoch = settings.steps_per_epoch
        self.num_examples = settings.num_examples
        self.per_host_batch_size = settings.global_batch_size // settings.process_count

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        """The iterator position (JSON-serialisable)."""
        return {"grain": self._it.get_state(), "settings": dataclasses.asdict(self._settings)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resumes at ``state`` (from :meth:`get_state` of an iterator with the same settings).

        Raises:
          ValueError: the state was saved with different settings (each differing field
            named); the number of epochs may differ (it only moves the end of the stream).
        """
        if not isinstance(state, Mapping) or "grain" not in state or "settings" not in state:
            raise ValueError(f"not a TrainIterator state (keys {sorted(state)!r})")
        mine = dataclasses.asdict(self._settings)
        diff = {
            k: (v, mine.get(k))
            for k, v in state["settings"].items()
            if mine.get(k) != v and k not in _LENGTH_ONLY_SETTINGS
        }
        if diff:
            raise ValueError(
                "iterator state was saved with different input settings (saved, now): "
                + ", ".join(f"{k}={a!r} vs {b!r}" for k, (a, b) in sorted(diff.items()))
            )
        self._it.set_state(state["grain"])

    def start_prefetch(self) -> None:
        """Starts worker processes early (grain's hook; orbax's restore calls it)."""
        start = getattr(self._it, "start_prefetch", None)
        if start is not None:
            start()

    def close(self) -> None:
        """Stops worker processes (they also stop when the iterator is garbage collected)."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def make_train_iterator(
    config: Any,
    *,
    seed: int | None = None,
    global_batch_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    start_epoch: int = 0,
    start_step: int = 0,
    num_epochs: int | None = None,
    num_workers: int | None = None,
    dataset: tfds_builder.DatasetInfo | None = None,
    augmenter: WaveAugmenter | None = None,
    read_threads: int | None = None,
) -> TrainIterator:
    """Builds this host's training batch iterator over a prepared TFDS dataset.

    Args:
      config: the training ``ConfigDict`` (sections ``data`` and ``train``; ``seed`` at the
        top) or just its ``data`` section. Read: ``data.data_dir``, ``data.name``,
        ``data.config`` (optional: the prepared config when ``name`` holds several),
        ``data.crop_frames``, ``data.num_workers``, ``data.augment`` (``enabled``; optional
        ``scheme`` = "authors" | "wespeaker" | "none", default "authors"; ``prob`` for
        WeSpeaker's scheme, default 0.6; the :class:`~hamjax.data.augment.Augmenter` reads the
        rest), ``train.global_batch_size``, ``train.num_epochs``, ``train.steps_per_epoch``
        (-1 = one pass), ``seed``.
      seed: overrides ``config.seed``.
      global_batch_size: overrides ``train.global_batch_size``; must divide by
        ``process_count``.
      process_index: this host (default ``jax.process_index()``).
      process_count: number of hosts (default ``jax.process_count()``).
      start_epoch: first epoch to produce (e.g. resuming at an epoch boundary without state).
      start_step: steps to skip after ``start_epoch`` (resume at any step without a state,
        e.g. on a different number of hosts).
      num_epochs: epochs to produce from ``start_epoch`` on (default: enough for
        ``train.num_epochs`` and ``train.max_steps`` (when > 0), minus ``start_epoch``; endless
        when ``train.num_epochs`` is absent or None).
      num_workers: overrides ``data.num_workers`` (0 = build batches in this process).
      dataset: the prepared dataset (default: ``load_dataset_info(data_dir, name, config)``).
      augmenter: overrides the augmenter built from ``data.augment``.
      read_threads: threads building batches inside each process (default 1 with workers,
        2 without).

    Returns:
      a :class:`TrainIterator`.

    Raises:
      ValueError: inconsistent sizes (the field and value named).
      FileNotFoundError: the dataset is not prepared.
    """
    data = config.data if "data" in config else config
    train = config.train if "train" in config else {}
    seed = int(seed if seed is not None else _get(config, "seed", 0))
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed}: expected an integer in [0, 2**32)")
    global_batch_size, process_index, process_count = _batch_and_hosts(
        train, global_batch_size, process_index, process_count
    )
    if dataset is None:
        dataset = tfds_builder.load_dataset_info(
            os.path.expanduser(str(data.data_dir)),
            str(data.name),
            _get(data, "config", None) or None,
        )
    n = int(dataset.num_examples)
    steps, num_epochs = _steps_and_epochs(
        train, n, global_batch_size, start_epoch=start_epoch, num_epochs=num_epochs
    )
    if start_epoch < 0 or start_step < 0:
        raise ValueError(f"start_epoch={start_epoch}, start_step={start_step}: expected >= 0")
    scheme, prob, augmenter = _augmentation(_get(data, "augment", None), seed, augmenter)
    settings = _Settings(
        seed=seed,
        num_examples=n,
        global_batch_size=global_batch_size,
        process_index=int(process_index),
        process_count=int(process_count),
        steps_per_epoch=steps,
        num_epochs=num_epochs,
        start_epoch=int(start_epoch),
        start_step=int(start_step),
        crop_samples=crop_samples(int(_get(data, "crop_frames", 200))),
        augment_scheme=scheme,
        augment_prob=prob,
    )
    workers = int(num_workers if num_workers is not None else _get(data, "num_workers", 0))
    if workers < 0:
        raise ValueError(f"data.num_workers={workers}: expected an integer >= 0")
    threads = read_threads if read_threads is not None else (1 if workers else 2)
    ds = build_dataset(
        tfds_builder.open_data_source(dataset), settings, augmenter if scheme != "none" else None
    )
    return TrainIterator(_to_iterator(ds, workers=workers, threads=threads), settings, dataset)


def _batch_and_hosts(
    train: Any, global_batch_size: int | None, process_index: int | None, process_count: int | None
) -> tuple[int, int, int]:
    """``(global batch, process index, process count)``: arguments, config or JAX's topology."""
    if global_batch_size is None:
        global_batch_size = _get(train, "global_batch_size", None)
        if global_batch_size is None:
            raise ValueError("global_batch_size: not given and no train.global_batch_size")
    global_batch_size = int(global_batch_size)
    if process_index is None or process_count is None:
        import jax  # only for the default host topology

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index}, process_count={process_count}: expected "
            "0 <= process_index < process_count"
        )
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size}: expected a positive multiple of "
            f"process_count={process_count}"
        )
    return global_batch_size, process_index, process_count


def _steps_and_epochs(
    train: Any, n: int, global_batch_size: int, *, start_epoch: int, num_epochs: int | None
) -> tuple[int, int | None]:
    """``(steps per epoch, epochs to produce or None = endless)`` from ``train.*`` and ``n``."""
    steps = int(_get(train, "steps_per_epoch", -1))
    full_pass = steps_per_epoch(n, global_batch_size)
    if steps == -1:
        steps = full_pass
    elif not 0 < steps <= full_pass:
        raise ValueError(
            f"train.steps_per_epoch={steps}: expected -1 or 1..{full_pass} "
            f"({n} examples / global batch {global_batch_size})"
        )
    if num_epochs is None:
        total = _get(train, "num_epochs", None)
        if total is not None:
            # A trainer stopping at train.max_steps must not run out of batches before it.
            max_steps = int(_get(train, "max_steps", -1) or -1)
            total = max(int(total), -(-max_steps // steps) if max_steps > 0 else 0)
            num_epochs = total - int(start_epoch)
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(
            f"num_epochs={num_epochs} (after start_epoch={start_epoch}): expected >= 1"
        )
    return steps, num_epochs


def _augmentation(
    aug_cfg: Any, seed: int, augmenter: WaveAugmenter | None
) -> tuple[str, float, WaveAugmenter | None]:
    """``(scheme, probability, augmenter)`` from ``data.augment`` (augmenter built if needed)."""
    scheme, prob = "none", 0.0
    if aug_cfg is not None and bool(_get(aug_cfg, "enabled", False)):
        scheme = str(_get(aug_cfg, "scheme", "authors"))
        prob = float(_get(aug_cfg, "prob", 0.6))
        if scheme not in AUGMENT_SCHEMES:
            raise ValueError(f"data.augment.scheme={scheme!r}: expected one of {AUGMENT_SCHEMES}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"data.augment.prob={prob!r}: expected a probability in [0, 1]")
    if scheme != "none" and augmenter is None:
        from hamjax.data.augment import Augmenter

        augmenter = Augmenter(
            aug_cfg,
            musan_dir=_get(aug_cfg, "musan_root", "") or None,
            rir_dir=_get(aug_cfg, "rir_root", "") or None,
            seed=seed,
        )
    return scheme, prob, augmenter


def _to_iterator(ds: grain.MapDataset, *, workers: int, threads: int) -> grain.IterDataset:
    """Iterates ``ds`` with ``threads`` reader threads in each of ``workers`` processes."""
    # Batches are the elements from here on: keep the prefetch buffers a few batches deep.
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=max(1, threads), prefetch_buffer_size=max(2, threads))
    )
    if workers > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
        )
    return it_ds


def build_dataset(
    source: Any, settings: _Settings, augmenter: WaveAugmenter | None
) -> grain.MapDataset:
    """The random-access ``MapDataset`` of this host's batches (see the module docstring)."""
    s = settings
    b = s.global_batch_size // s.process_count
    per_host_epoch = s.steps_per_epoch * b
    length = sys.maxsize if s.num_epochs is None else s.num_epochs * per_host_epoch
    ds = grain.MapDataset.range(s.start_step * b, length)
    ds = ds.map(_RecordOfPosition(s)).map(_ReadCropAugment(source, s, augmenter))
    return ds.batch(b, drop_remainder=True)


def _ensure_absl_flags_parsed() -> None:
    """grain's worker start-up reads absl flags; outside ``absl.app.run`` (pytest, notebooks,
    plain scripts) they are unparsed and reading one raises ``UnparsedFlagAccessError``. Marking
    them parsed keeps every flag at its default, which is what such callers get anyway."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _get(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.get(key, default)`` for ConfigDicts, dicts and attribute objects."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        try:
            return cfg.get(key, default)
        except (KeyError, AttributeError):
            return default
    return getattr(cfg, key, default)


__all__ = [
    "AUGMENT_SCHEMES",
    "TrainIterator",
    "WaveAugmenter",
    "build_dataset",
    "crop_samples",
    "make_train_iterator",
    "random_crop",
    "steps_per_epoch",
]
