"""The grain input pipeline: crops, epochs, host sharding, determinism, exact resume, workers.

One small dataset (4 speakers x 6 noise utterances, 0.3-2.5 s, so some need wrap-padding) is
prepared once; every crop in a batch is traced back to the record it was cut from, so coverage
and disjointness are checked on the actual audio, not on the sampler alone.
"""

import ml_collections
import numpy as np
import pytest

from hamjax.data import pipeline, tfds_builder
from hamjax.data.audio import write_wav

S = 32_240
NUM_SPEAKERS, PER_SPEAKER = 4, 6
N = NUM_SPEAKERS * PER_SPEAKER


class AddNoise:
    """A picklable stand-in augmenter: adds rng-drawn noise (deterministic given the rng)."""

    def augment(self, wav, rng):
        return (wav + 0.01 * rng.standard_normal(wav.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(1)
    for s in range(NUM_SPEAKERS):
        for u in range(PER_SPEAKER):
            secs = 0.3 if u == 0 else rng.uniform(0.5, 2.5)
            noise = (0.1 * rng.standard_normal(int(secs * 16_000))).clip(-1, 1)
            write_wav(root / "corpus" / "wav" / f"spk{s}" / f"sess{u % 2}" / f"{u:05d}.wav", noise)
    # min_seconds=0: keep the 0.3 s utterances (preparation skips them by default), to test
    # wrap-padding of very short records.
    info = tfds_builder.prepare_dataset(
        "voxceleb",
        root / "corpus",
        data_dir=root / "tfds",
        name="pipe",
        num_threads=1,
        min_seconds=0.0,
    )
    src = tfds_builder.open_data_source(info)
    audio = [src[i]["audio"].astype(np.float32) / 32768 for i in range(len(src))]
    labels = [int(src[i]["speaker"]) for i in range(len(src))]
    return info, audio, labels


def _config(prepared, **train):
    info = prepared[0]
    return ml_collections.ConfigDict(
        dict(
            seed=7,
            data=dict(
                data_dir=str(info.builder_dir.parents[2]),
                name="pipe",
                crop_frames=200,
                num_workers=0,
                augment=dict(enabled=False),
            ),
            train=dict(global_batch_size=4, num_epochs=2, steps_per_epoch=-1, **train),
        )
    )


def _take(it, n):
    return [next(it) for _ in range(n)]


def _record_of(crop, label, prepared):
    """Index of the record ``crop`` was cut from (a window, or the wrap-padded utterance)."""
    _, audio, labels = prepared
    for i, (wav, lab) in enumerate(zip(audio, labels, strict=True)):
        if lab != label:
            continue
        if wav.size < S:
            if np.array_equal(np.pad(wav, (0, S - wav.size), mode="wrap"), crop):
                return i
            continue
        for start in np.flatnonzero(wav[: wav.size - S + 1] == crop[0]):
            if np.array_equal(wav[start : start + S], crop):
                return i
    raise AssertionError("crop is not a window of any record with its label")


def _records(batches, prepared):
    return [
        _record_of(w, int(lab), prepared)
        for b in batches
        for w, lab in zip(b["waveform"], b["label"], strict=True)
    ]


def test_batches_are_crops_covering_each_epoch(prepared):
    it = pipeline.make_train_iterator(_config(prepared), process_index=0, process_count=1)
    assert (it.steps_per_epoch, it.num_examples, it.per_host_batch_size) == (N // 4, N, 4)
    batches = list(it)  # num_epochs=2: finite
    assert len(batches) == 2 * N // 4
    b = batches[0]
    assert set(b) == {"waveform", "label"}
    assert b["waveform"].dtype == np.float32 and b["waveform"].shape == (4, S)
    assert b["label"].dtype == np.int32 and b["label"].shape == (4,)
    recs = _records(batches, prepared)  # also checks every crop is a window of its record
    epoch1, epoch2 = recs[:N], recs[N:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(N))  # each record once per epoch
    assert epoch1 != epoch2  # reshuffled each epoch
    # Among the records traced (wrap-padded, see _record_of) are the four 0.3 s utterances.
    assert sum(a.size == 4800 for a in prepared[1]) == NUM_SPEAKERS


def test_random_crop_wraps_short_and_windows_long():
    rng = np.random.default_rng(0)
    short = np.arange(1, 4801, dtype=np.int16)
    np.testing.assert_array_equal(
        pipeline.random_crop(short, 10_000, rng) * 32768, np.resize(short, 10_000)
    )
    long = np.random.default_rng(1).standard_normal(50_000).astype(np.float32)
    starts = set()
    for _ in range(20):
        crop = pipeline.random_crop(long, S, rng)
        start = int(np.flatnonzero(long == crop[0])[0])
        np.testing.assert_array_equal(crop, long[start : start + S])
        starts.add(start)
    assert len(starts) > 10  # offsets are drawn, not fixed
    with pytest.raises(ValueError, match="non-empty"):
        pipeline.random_crop(np.zeros(0, np.int16), S, rng)


def test_determinism_and_seed(prepared):
    cfg = _config(prepared)
    a = _take(pipeline.make_train_iterator(cfg, process_index=0, process_count=1), 3)
    b = _take(pipeline.make_train_iterator(cfg, process_index=0, process_count=1), 3)
    c = _take(pipeline.make_train_iterator(cfg, seed=8, process_index=0, process_count=1), 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["waveform"], y["waveform"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not all(np.array_equal(x["waveform"], z["waveform"]) for x, z in zip(a, c, strict=True))


def test_two_hosts_split_each_global_batch(prepared):
    cfg = _config(prepared)
    steps = N // 4
    single = _take(pipeline.make_train_iterator(cfg, process_index=0, process_count=1), steps)
    hosts = [
        _take(pipeline.make_train_iterator(cfg, process_index=p, process_count=2), steps)
        for p in (0, 1)
    ]
    assert hosts[0][0]["waveform"].shape == (2, S)
    recs = [_records(h, prepared) for h in hosts]
    assert not set(recs[0]) & set(recs[1])  # disjoint
    assert sorted(recs[0] + recs[1]) == list(range(N))  # together: the whole epoch
    # Global batch k is the same examples, in the same rows, with the same crops, whatever the
    # host count: host p supplies rows p * b ... (p + 1) * b - 1.
    for k in range(steps):
        for name in ("waveform", "label"):
            joint = np.concatenate([hosts[0][k][name], hosts[1][k][name]])
            np.testing.assert_array_equal(joint, single[k][name])


def test_resume_mid_epoch_exactly(prepared):
    cfg = _config(prepared)
    it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
    _take(it, 4)  # into the first epoch (6 steps)
    state = it.get_state()
    expected = _take(it, 5)  # crosses the epoch boundary
    resumed = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
    resumed.set_state(state)
    for x, y in zip(expected, _take(resumed, 5), strict=True):
        np.testing.assert_array_equal(x["waveform"], y["waveform"])
        np.testing.assert_array_equal(x["label"], y["label"])
    # start_step / start_epoch resume without a saved state at the same place.
    fresh = _take(pipeline.make_train_iterator(cfg, process_index=0, process_count=1), 8)
    by_step = next(
        pipeline.make_train_iterator(cfg, start_step=4, process_index=0, process_count=1)
    )
    by_epoch = next(
        pipeline.make_train_iterator(cfg, start_epoch=1, process_index=0, process_count=1)
    )
    np.testing.assert_array_equal(by_step["waveform"], fresh[4]["waveform"])
    np.testing.assert_array_equal(by_epoch["waveform"], fresh[6]["waveform"])
    # A state from a differently configured stream is refused, naming what differs.
    other = pipeline.make_train_iterator(cfg, seed=9, process_index=0, process_count=1)
    with pytest.raises(ValueError, match=r"seed=7 vs 9"):
        other.set_state(state)
    with pytest.raises(ValueError, match="not a TrainIterator state"):
        other.set_state({"foo": 1})


def test_worker_processes_same_batches_and_exact_resume(prepared):
    """Worker processes (spawned) give bit-identical batches and resume exactly mid-epoch."""
    cfg = _config(prepared)
    cfg.data.augment = dict(enabled=True, scheme="authors")
    kw = dict(process_index=0, process_count=1, augmenter=AddNoise())
    reference = _take(pipeline.make_train_iterator(cfg, num_workers=0, **kw), 7)
    it = pipeline.make_train_iterator(cfg, num_workers=1, **kw)
    first = _take(it, 3)
    state = it.get_state()
    it.close()
    resumed = pipeline.make_train_iterator(cfg, num_workers=1, **kw)
    resumed.set_state(state)
    rest = _take(resumed, 4)
    resumed.close()
    for x, y in zip(reference, first + rest, strict=True):
        for key in ("waveform", "waveform_aug", "label"):
            np.testing.assert_array_equal(x[key], y[key])


def test_augmentation_schemes(prepared):
    cfg = _config(prepared)
    kw = dict(process_index=0, process_count=1, augmenter=AddNoise())
    clean = next(pipeline.make_train_iterator(cfg, **kw))
    cfg.data.augment = dict(enabled=True, scheme="authors")
    authors = next(pipeline.make_train_iterator(cfg, **kw))
    assert set(authors) == {"waveform", "waveform_aug", "label"}
    np.testing.assert_array_equal(authors["waveform"], clean["waveform"])  # same clean crop
    noise = authors["waveform_aug"] - authors["waveform"]
    assert authors["waveform_aug"].dtype == np.float32 and 0.005 < noise.std() < 0.02
    cfg.data.augment = dict(enabled=True, scheme="wespeaker", prob=1.0)
    always = next(pipeline.make_train_iterator(cfg, **kw))
    assert set(always) == {"waveform", "label"}
    assert 0.005 < (always["waveform"] - clean["waveform"]).std() < 0.02
    cfg.data.augment = dict(enabled=True, scheme="wespeaker", prob=0.0)
    never = next(pipeline.make_train_iterator(cfg, **kw))
    np.testing.assert_array_equal(never["waveform"], clean["waveform"])


def test_real_augmenter_end_to_end(prepared):

    cfg = _config(prepared)
    cfg.data.augment = ml_collections.ConfigDict(
        dict(
            enabled=True,
            # Reverb and noise only: the built-in babble voices take seconds to synthesise.
            kinds=("reverb", "noise"),
            musan_root="",
            rir_root="",
            synthetic=True,
            snr_noise=(0.0, 15.0),
            snr_speech=(13.0, 20.0),
            snr_music=(5.0, 15.0),
        )
    )
    b = next(pipeline.make_train_iterator(cfg, process_index=0, process_count=1))
    assert b["waveform_aug"].shape == (4, S) and b["waveform_aug"].dtype == np.float32
    assert np.all(np.isfinite(b["waveform_aug"]))
    assert not np.array_equal(b["waveform_aug"], b["waveform"])


def test_steps_per_epoch_and_sizes():
    assert pipeline.steps_per_epoch(1000, 256) == 3
    assert pipeline.crop_samples(200) == S
    with pytest.raises(ValueError, match="smaller than global_batch_size"):
        pipeline.steps_per_epoch(10, 16)
    with pytest.raises(ValueError, match="global_batch_size=0"):
        pipeline.steps_per_epoch(10, 0)
    with pytest.raises(ValueError, match="crop_frames=0"):
        pipeline.crop_samples(0)


@pytest.mark.parametrize(
    ("kwargs", "train", "message"),
    [
        (dict(process_count=3), {}, r"global_batch_size=4: expected a positive multiple of"),
        (dict(process_index=2, process_count=2), {}, r"process_index=2, process_count=2"),
        ({}, dict(steps_per_epoch=7), r"train.steps_per_epoch=7: expected -1 or 1..6"),
        (dict(start_epoch=2), {}, r"num_epochs=0 \(after start_epoch=2\)"),
        (dict(global_batch_size=32), {}, "smaller than global_batch_size=32"),
    ],
)
def test_make_train_iterator_errors(prepared, kwargs, train, message):
    cfg = _config(prepared)
    cfg.train.update(train)
    kwargs = {"process_index": 0, "process_count": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipeline.make_train_iterator(cfg, **kwargs)


def test_bad_augment_config_and_missing_dataset(prepared, tmp_path):
    cfg = _config(prepared)
    cfg.data.augment = dict(enabled=True, scheme="specaug")
    with pytest.raises(ValueError, match=r"data.augment.scheme='specaug'"):
        pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
    cfg.data.augment = dict(enabled=True, scheme="wespeaker", prob=1.5)
    with pytest.raises(ValueError, match=r"data.augment.prob=1.5"):
        pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
    cfg = _config(prepared)
    cfg.data.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="no prepared dataset 'pipe'"):
        pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
