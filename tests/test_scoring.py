"""Tests for hamjax.scoring: protocols, cosine/Poincaré scoring, AS-norm and the cache."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hamjax import asnorm, embedding_cache, embeddings, heads, losses, scoring

E = 8  # embedding size of the synthetic embeddings


def toy_embed(variables, waveforms, mask):
    """A mask-aware 'encoder': [sum, mean, length, first sample, w * mean] of the valid samples."""
    m = mask.astype(waveforms.dtype)
    n = jnp.sum(m, axis=1)
    s = jnp.sum(waveforms * m, axis=1)
    mean = s / n
    base = jnp.stack([s, mean, n, waveforms[:, 0], s * s, mean * 3.0], axis=1)
    return jnp.concatenate([base, variables["w"] * mean[:, None]], axis=1)


def toy_embed_reference(w, wav):
    s, n = float(np.sum(wav, dtype=np.float64)), len(wav)
    mean = s / n
    return np.array([s, mean, n, wav[0], s * s, 3 * mean, *(w * mean)], np.float64)


@pytest.fixture(scope="module")
def waveforms():
    rng = np.random.default_rng(0)
    lengths = [8000, 16000, 16001, 40000, 52000, 52100, 20000, 100]
    return [rng.uniform(-1, 1, n).astype(np.float32) for n in lengths]


def test_authors_crops_match_the_authors_code():
    rng = np.random.default_rng(1)
    for n in (100_000, 48_240, 30_000, 10):
        audio = rng.normal(size=n).astype(np.float32)
        # The authors' eval_network, verbatim in numpy.
        max_audio = 300 * 160 + 240
        ref_audio = audio
        if ref_audio.shape[0] <= max_audio:
            ref_audio = np.pad(ref_audio, (0, max_audio - ref_audio.shape[0]), "wrap")
        startframe = np.linspace(0, ref_audio.shape[0] - max_audio, num=5)
        ref = np.stack([ref_audio[int(a) : int(a) + max_audio] for a in startframe])
        np.testing.assert_array_equal(embeddings.authors_crops(audio), ref)


def test_authors_crops_rejects_empty():
    with pytest.raises(ValueError, match="non-empty"):
        embeddings.authors_crops(np.zeros(0))


def test_bucket_lengths_cover_with_bounded_padding():
    lengths = np.unique(np.geomspace(1, 16000 * 60, 400).astype(int))
    buckets = np.array([embeddings.bucket_length(int(n)) for n in lengths])
    assert np.all(buckets >= lengths)
    assert np.all(buckets % embeddings.BUCKET_QUANTUM == 0)
    assert np.all(np.diff(buckets) >= 0)
    long = lengths > embeddings.MIN_BUCKET
    assert np.all(
        buckets[long] <= lengths[long] * embeddings.BUCKET_GROWTH + embeddings.BUCKET_QUANTUM
    )
    # Few distinct shapes (one compilation each) for a wide range of lengths.
    assert len(np.unique(buckets)) < 50


def test_extract_embeddings_pads_with_masks_and_keeps_order(waveforms):
    variables = {"w": jnp.linspace(-1, 1, 2)}
    shapes = []
    jitted = jax.jit(toy_embed)

    def spy(v, w, m):
        shapes.append(w.shape)
        return jitted(v, w, m)

    out = embeddings.extract_embeddings(spy, variables, waveforms, batch_samples=120_000)
    ref = np.stack([toy_embed_reference(np.linspace(-1, 1, 2), w) for w in waveforms])
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=1e-4)
    buckets = {embeddings.bucket_length(len(w)) for w in waveforms}
    assert {s[1] for s in shapes} == buckets
    # Every bucket always uses the same batch size (one compilation per bucket).
    for length in buckets:
        assert {s[0] for s in shapes if s[1] == length} == {max(1, 120_000 // length)}


def test_extract_embeddings_errors():
    with pytest.raises(ValueError, match="waveform 1 is empty"):
        embeddings.extract_embeddings(toy_embed, {"w": jnp.ones(1)}, [np.ones(5), np.ones(0)])
    with pytest.raises(ValueError, match="batch_samples=0"):
        embeddings.extract_embeddings(toy_embed, {"w": jnp.ones(1)}, [np.ones(5)], batch_samples=0)


@pytest.mark.parametrize("protocol", ["full", "authors"])
def test_extract_protocol_streams_in_chunks(waveforms, protocol):
    variables = {"w": jnp.ones(2)}
    names = [f"u{i}" for i in range(len(waveforms))]
    table = dict(zip(names, waveforms, strict=True))
    seen = []
    emb = embeddings.extract_protocol(
        jax.jit(toy_embed),
        variables,
        names[::-1],
        table.__getitem__,
        protocol=protocol,
        chunk_utterances=3,
        threads=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert emb.names == tuple(names[::-1])
    assert emb.protocol == protocol
    assert seen[-1] == (len(names), len(names)) and len(seen) == 3
    for i, name in enumerate(emb.names):
        ref = toy_embed_reference(np.ones(2), table[name])
        np.testing.assert_allclose(emb.full[i], ref, rtol=2e-5, atol=1e-4)
        if protocol == "authors":
            crops = embeddings.authors_crops(table[name])
            ref_c = np.stack([toy_embed_reference(np.ones(2), c) for c in crops])
            np.testing.assert_allclose(emb.crops[i], ref_c, rtol=2e-5, atol=1e-3)
        else:
            assert emb.crops is None


def random_embeddings(seed: int, n: int, authors: bool) -> embeddings.Embeddings:
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(n, E)).astype(np.float32) * 3
    crops = (full[:, None] + rng.normal(size=(n, 5, E))).astype(np.float32) if authors else None
    return embeddings.Embeddings(tuple(f"u{i}" for i in range(n)), full, crops)


def random_trials(seed: int, n_utts: int, n: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_utts, n), rng.integers(0, n_utts, n)


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("authors", [False, True])
def test_cosine_scores_match_direct_definition(authors):
    emb = random_embeddings(0, 12, authors)
    e, t = random_trials(1, 12, 40)
    got = scoring.score_trials(emb, e, t, score="cosine")
    for k in range(40):
        ref = cos(emb.full[e[k]], emb.full[t[k]])
        if authors:
            pair = [cos(a, b) for a in emb.crops[e[k]] for b in emb.crops[t[k]]]
            ref = 0.5 * (ref + np.mean(pair))
        assert got[k] == pytest.approx(ref, abs=1e-9)


@pytest.fixture(scope="module")
def ham_head():
    # ball_embed / curvature read no parameter when c is fixed: skip the (slow) head init.
    return heads.create_head("ham_softmax", 5, c=1.5, mode="expmap"), {}


def test_ball_geometry_reads_the_head(ham_head):
    head, params = ham_head
    geo = scoring.ball_geometry(head, params, "ham_softmax")
    assert geo.mode == "expmap" and geo.c == pytest.approx(1.5)


def test_ball_geometry_rejects_euclidean_heads():
    with pytest.raises(ValueError, match="needs a hyperbolic head.*head is 'aam'"):
        scoring.ball_geometry(heads.create_head("aam", 5), {}, "aam")


@pytest.mark.parametrize("authors", [False, True])
def test_poincare_scores_are_negative_distances_in_the_heads_ball(ham_head, authors):
    head, params = ham_head
    geo = scoring.ball_geometry(head, params)
    emb = random_embeddings(2, 10, authors)
    emb = embeddings.Embeddings(
        emb.names, emb.full / 10, None if emb.crops is None else emb.crops / 10
    )
    e, t = random_trials(3, 10, 30)
    got = scoring.score_trials(emb, e, t, score="poincare", geometry=geo)

    # Independent float64 reference: expmap0_c then d_c in its arcosh form.
    c = 1.5

    def ball(v):
        v = np.asarray(v, np.float64)
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        return np.tanh(np.sqrt(c) * n) * v / (np.sqrt(c) * n)

    def dist(x, y):
        num = 2 * c * np.sum((x - y) ** 2, -1)
        den = (1 - c * np.sum(x * x, -1)) * (1 - c * np.sum(y * y, -1))
        return np.arccosh(1 + num / den) / np.sqrt(c)

    ref = -dist(ball(emb.full[e]), ball(emb.full[t]))
    if authors:
        ce, ct = ball(emb.crops[e]), ball(emb.crops[t])
        ref = 0.5 * (ref - dist(ce[:, :, None], ct[:, None, :]).mean(axis=(1, 2)))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_poincare_clip_mode_matches_the_arcosh_formula():
    geo = scoring.BallGeometry(c=3.0, mode="clip")
    emb = random_embeddings(4, 6, False)
    e, t = random_trials(5, 6, 20)
    got = scoring.score_trials(emb, e, t, score="poincare", geometry=geo)
    r = (1 - 1e-5) / np.sqrt(3.0)
    x = emb.full.astype(np.float64)
    x = x * np.minimum(1, r / np.linalg.norm(x, axis=1, keepdims=True))
    a, b = x[e], x[t]
    t_arg = 2 * np.sum((a - b) ** 2, 1) / ((1 - np.sum(a * a, 1)) * (1 - np.sum(b * b, 1)))
    np.testing.assert_allclose(got, -np.arccosh(1 + t_arg), rtol=1e-4, atol=1e-4)


def test_score_trials_errors():
    emb = random_embeddings(0, 3, False)
    with pytest.raises(ValueError, match="score='dot': expected one of cosine, poincare"):
        scoring.score_trials(emb, [0], [1], score="dot")
    with pytest.raises(ValueError, match="needs geometry"):
        scoring.score_trials(emb, [0], [1], score="poincare")
    with pytest.raises(ValueError, match="expected two \\[N\\] arrays"):
        scoring.score_trials(emb, [0, 1], [1], score="cosine")


def test_speaker_means():
    emb = np.array([[3.0, 0], [0, 2], [1, 1], [5, 5]])
    means, names = asnorm.speaker_means(emb, ["b", "a", "b", "c"], score="cosine")
    assert names == ["a", "b", "c"]
    b = (np.array([1, 0]) + np.array([1, 1]) / np.sqrt(2)) / 2
    np.testing.assert_allclose(means[1], b / np.linalg.norm(b))
    raw, _ = asnorm.speaker_means(emb, ["b", "a", "b", "c"], score="poincare")
    np.testing.assert_allclose(raw[1], [2.0, 0.5])
    with pytest.raises(ValueError, match="one speaker per row"):
        asnorm.speaker_means(emb, ["a"])


def test_cohort_scores_consistent_with_trial_scores():
    # A cohort speaker is one vector: scoring an utterance against it must equal the trial
    # score against an utterance whose full and crop embeddings are all that vector.
    emb = random_embeddings(6, 5, True)
    cohort = np.random.default_rng(7).normal(size=(4, E))
    got = asnorm.cohort_scores(emb, cohort, score="cosine")
    as_utts = embeddings.Embeddings(
        tuple(f"c{i}" for i in range(4)),
        cohort.astype(np.float32),
        np.repeat(cohort[:, None], 5, axis=1).astype(np.float32),
    )
    joined = embeddings.Embeddings(
        emb.names + as_utts.names,
        np.concatenate([emb.full, as_utts.full]),
        np.concatenate([emb.crops, as_utts.crops]),
    )
    e, t = np.repeat(np.arange(5), 4), np.tile(np.arange(5, 9), 5)
    ref = scoring.score_trials(joined, e, t).reshape(5, 4)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_cohort_scores_poincare_match_trial_scores():
    geo = scoring.BallGeometry(c=2.0, mode="expmap")
    emb = random_embeddings(8, 4, True)
    emb = embeddings.Embeddings(emb.names, emb.full / 8, emb.crops / 8)
    cohort = np.random.default_rng(9).normal(size=(3, E)) / 8
    got = asnorm.cohort_scores(emb, cohort, score="poincare", geometry=geo)
    coh = embeddings.Embeddings(
        ("a", "b", "c"), cohort.astype(np.float32), np.repeat(cohort[:, None], 5, 1).astype("f4")
    )
    joined = embeddings.Embeddings(
        emb.names + coh.names,
        np.concatenate([emb.full, coh.full]),
        np.concatenate([emb.crops, coh.crops]),
    )
    e, t = np.repeat(np.arange(4), 3), np.tile(np.arange(4, 7), 4)
    ref = scoring.score_trials(joined, e, t, score="poincare", geometry=geo).reshape(4, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_cohort_stats_top_k_against_sorting():
    scores = np.random.default_rng(10).normal(size=(6, 20))
    mean, std = asnorm.cohort_stats(scores, 7)
    top = -np.sort(-scores, axis=1)[:, :7]
    np.testing.assert_allclose(mean, top.mean(1))
    np.testing.assert_allclose(std, top.std(1))
    mean_all, _ = asnorm.cohort_stats(scores, 1000)  # clipped to K
    np.testing.assert_allclose(mean_all, scores.mean(1))
    with pytest.raises(ValueError, match="top_k=0"):
        asnorm.cohort_stats(scores, 0)
    with pytest.raises(ValueError, match="expected \\[U, K\\]"):
        asnorm.cohort_stats(np.zeros((3, 0)), 1)


def test_as_norm_formula_and_affine_invariance():
    rng = np.random.default_rng(11)
    coh = rng.normal(size=(5, 30))
    raw = rng.normal(size=12)
    e, t = random_trials(12, 5, 12)
    mean, std = asnorm.cohort_stats(coh, 10)
    got = asnorm.as_norm(raw, e, t, mean, std)
    ref = 0.5 * ((raw - mean[e]) / std[e] + (raw - mean[t]) / std[t])
    np.testing.assert_allclose(got, ref)
    # s-norm is invariant to any increasing affine map applied to every score.
    m2, s2 = asnorm.cohort_stats(3.0 * coh - 2.0, 10)
    np.testing.assert_allclose(asnorm.as_norm(3.0 * raw - 2.0, e, t, m2, s2), got, atol=1e-12)


def _hubby_embeddings(rng, num_speakers, per_speaker, dim=32):
    """Speaker centres plus a per-utterance amount of one shared direction ("hubness").

    Utterances with much of the shared component score high against everyone: the raw cosine
    suffers, and an utterance's top cohort scores reveal its hubness.
    """
    centres = rng.normal(size=(num_speakers, dim))
    spk = np.repeat(np.arange(num_speakers), per_speaker)
    strength = rng.gamma(1.0, 3.0, size=spk.size)
    common = np.ones(dim) / np.sqrt(dim)
    x = centres[spk] + 3.0 * strength[:, None] * common + rng.normal(size=(spk.size, dim))
    return x, spk


def test_as_norm_with_a_training_cohort_lowers_the_eer():
    from hamjax import metrics

    rng = np.random.default_rng(0)
    x, spk = _hubby_embeddings(rng, 30, 6)
    train_x, train_spk = _hubby_embeddings(rng, 100, 4)  # disjoint cohort speakers
    emb = embeddings.Embeddings(tuple(str(i) for i in range(len(x))), x.astype(np.float32))
    e, t = np.triu_indices(len(x), 1)
    labels = (spk[e] == spk[t]).astype(int)
    raw = scoring.score_trials(emb, e, t)
    cohort, names = asnorm.speaker_means(train_x, [str(s) for s in train_spk])
    assert len(names) == 100
    mean, std = asnorm.cohort_stats(asnorm.cohort_scores(emb, cohort), 20)
    normed = asnorm.as_norm(raw, e, t, mean, std)
    # Measured over seeds 0-5: raw 0.29-0.32, normalised 0.20-0.25.
    assert metrics.eer(normed, labels)[0] < 0.9 * metrics.eer(raw, labels)[0]


def test_embedding_cache_round_trip_and_lookup(tmp_path):
    emb = random_embeddings(14, 6, True)
    key = {"step": 3, "model": "x"}
    path = embedding_cache.cache_path(tmp_path, key, list(emb.names), "authors")
    embedding_cache.save_embeddings(path, emb, {"key": key})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    loaded, meta = embedding_cache.load_embeddings(path)
    assert loaded.names == emb.names and meta["key"] == key
    np.testing.assert_array_equal(loaded.full, emb.full)
    np.testing.assert_array_equal(loaded.crops, emb.crops)
    # A subset in another order is served from the superset's file ...
    sub = embedding_cache.find_cached(tmp_path, key, ["u4", "u1"], "authors")
    assert sub.names == ("u4", "u1")
    np.testing.assert_array_equal(sub.crops[0], emb.crops[4])
    # ... and the authors' file also serves the full protocol (its full-utterance part).
    full = embedding_cache.find_cached(tmp_path, key, ["u2"], "full")
    assert full.crops is None
    np.testing.assert_array_equal(full.full[0], emb.full[2])
    assert embedding_cache.find_cached(tmp_path, {**key, "step": 4}, ["u1"], "authors") is None
    assert embedding_cache.find_cached(tmp_path, key, ["u1", "zzz"], "authors") is None
    # A full-protocol file cannot serve the authors protocol.
    f_emb = embeddings.Embeddings(("v",), emb.full[:1])
    f_key = {"other": 1}
    embedding_cache.save_embeddings(
        embedding_cache.cache_path(tmp_path, f_key, ["v"], "full"), f_emb, {"key": f_key}
    )
    assert embedding_cache.find_cached(tmp_path, f_key, ["v"], "authors") is None
    assert embedding_cache.find_cached(tmp_path, f_key, ["v"], "full").names == ("v",)
    # A corrupt cache file is ignored, not fatal.
    path.write_bytes(b"garbage")
    assert embedding_cache.find_cached(tmp_path, key, ["u1"], "authors") is None
    with pytest.raises(ValueError, match="not a readable hamjax embedding cache"):
        embedding_cache.load_embeddings(path)


def test_fingerprint_sees_every_weight_and_setting():
    tree = {"a": np.zeros((2, 3), np.float32), "b": {"c": np.ones(4, np.float32)}}
    fp = embedding_cache.fingerprint(tree)
    changed = {"a": tree["a"].copy(), "b": {"c": tree["b"]["c"].copy()}}
    changed["b"]["c"][2] = 1.0000001
    assert embedding_cache.fingerprint(changed) != fp
    assert embedding_cache.fingerprint(tree) == fp
    assert embedding_cache.fingerprint({"x": 1}) != embedding_cache.fingerprint({"x": 2})
    assert json.dumps(embedding_cache.fingerprint(["a", "b"]))  # plain lists of names work


def test_to_ball_is_what_ball_geometry_uses(ham_head):
    head, params = ham_head
    x = jnp.asarray(random_embeddings(15, 3, False).full / 10)
    np.testing.assert_allclose(
        head.apply({"params": params}, x, method="ball_embed"),
        losses.to_ball(x, c=1.5, mode="expmap"),
        rtol=1e-6,
    )
