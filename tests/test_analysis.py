"""Tests for hamjax.analysis: Gromov delta, tree statistics, centre norms, disk pictures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph

from hamjax import analysis, model_builder, plots


def random_tree_metric(n: int, seed: int) -> np.ndarray:
    """Shortest-path distances of a random weighted tree on ``n`` nodes, ``[n, n]``."""
    rng = np.random.default_rng(seed)
    parent = np.array([rng.integers(0, i) for i in range(1, n)])
    weight = rng.uniform(0.5, 2.0, n - 1)
    graph = scipy.sparse.coo_matrix((weight, (np.arange(1, n), parent)), shape=(n, n))
    return scipy.sparse.csgraph.shortest_path(graph, directed=False)


def circle(n: int, radius: float = 1.0) -> np.ndarray:
    theta = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def hierarchy(
    families: int = 3, bases: int = 2, speakers: int = 3, utts: int = 4, noise: float = 0.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Points built from the tree's own coordinates: one-hot family, base and speaker axes.

    ``x = 4 e_family + 2 e_base + 1 e_speaker (+ noise)``, so pair distances are constant per
    tree level and increase with it: 0, sqrt(2), sqrt(10), sqrt(42).
    """
    spk = np.repeat(np.arange(families * bases * speakers), utts)
    base = spk // speakers
    fam = base // bases
    n_axes = families + families * bases + families * bases * speakers
    x = np.zeros((spk.size, n_axes))
    rows = np.arange(spk.size)
    x[rows, fam] = 4.0
    x[rows, families + base] = 2.0
    x[rows, families * (1 + bases) + spk] = 1.0
    x += noise * np.random.default_rng(0).normal(size=x.shape)
    labels = {"speaker": spk, "base": base, "family": fam}
    return x, labels


def brute_delta_per_base(d: np.ndarray) -> np.ndarray:
    """delta_w for every base point w, by explicit loops over (x, y, z): the reference."""
    n = d.shape[0]
    out = np.zeros(n)
    for w in range(n):
        a = 0.5 * (d[w][:, None] + d[w][None, :] - d)
        best = 0.0
        for x, y, z in itertools.product(range(n), repeat=3):
            best = max(best, min(a[x, z], a[z, y]) - a[x, y])
        out[w] = best
    return out


# ------------------------------------------------------------------------------ delta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delta_of_tree_metric_is_zero(seed):
    d = random_tree_metric(60, seed)
    res = analysis.delta_hyperbolicity(d, metric="precomputed", num_samples=40, num_trials=4)
    assert res["relative_delta"] < 1e-5
    assert res["diameter"] > 1.0
    assert res["num_samples"] == 40 and res["num_trials"] == 4


def test_delta_of_circle_is_clearly_positive():
    res = analysis.delta_hyperbolicity(circle(64), num_samples=64, num_trials=3)
    # Chordal metric of a circle: ~0.58 (the sampled subsets are the whole circle).
    assert 0.4 < res["relative_delta"] <= 1.0
    ang = analysis.delta_hyperbolicity(circle(64), metric="cosine", num_samples=64, num_trials=3)
    assert ang["relative_delta"] > 0.4
    assert ang["diameter"] == pytest.approx(np.pi, rel=1e-6)


def test_delta_matches_brute_force_four_point_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 3))
    d = analysis.distance_matrix(x)
    ref = brute_delta_per_base(d)
    res = analysis.delta_hyperbolicity(x, num_samples=9, num_trials=1, seed=5)
    # All points are used; the base point is random, so the value is delta_w for some w.
    assert np.min(np.abs(ref - res["delta"])) < 1e-5
    assert res["relative_delta"] == pytest.approx(2 * res["delta"] / d.max(), rel=1e-6)


def test_delta_is_scale_free_deterministic_and_seeded():
    x = np.random.default_rng(0).normal(size=(80, 5))
    a = analysis.delta_hyperbolicity(x, num_samples=30, num_trials=3, seed=1)
    b = analysis.delta_hyperbolicity(10.0 * x, num_samples=30, num_trials=3, seed=1)
    assert a["relative_delta"] == pytest.approx(b["relative_delta"], rel=1e-5)
    assert b["delta"] == pytest.approx(10.0 * a["delta"], rel=1e-5)
    assert analysis.delta_hyperbolicity(x, num_samples=30, num_trials=3, seed=1) == a
    c = analysis.delta_hyperbolicity(x, num_samples=30, num_trials=3, seed=2)
    assert c["relative_delta"] != a["relative_delta"]


def test_delta_poincare_points_agree_with_precomputed_matrix():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(40, 4))
    x = 0.9 * v / np.linalg.norm(v, axis=1, keepdims=True) / np.sqrt(2.0)  # inside c = 2 ball
    d = analysis.distance_matrix(x, metric="poincare", c=2.0)
    # Reference distance from the closed form, float64.
    sq = np.sum((x[:, None] - x[None]) ** 2, axis=-1)
    den = (1 - 2.0 * np.sum(x * x, 1))[:, None] * (1 - 2.0 * np.sum(x * x, 1))[None]
    ref = np.arccosh(1 + 2 * 2.0 * sq / den) / np.sqrt(2.0)
    np.testing.assert_allclose(d, ref, atol=1e-4)
    a = analysis.delta_hyperbolicity(x, metric="poincare", c=2.0, num_samples=30, num_trials=2)
    b = analysis.delta_hyperbolicity(d, metric="precomputed", num_samples=30, num_trials=2)
    assert a["relative_delta"] == pytest.approx(b["relative_delta"], abs=1e-4)


# ------------------------------------------------------------------------------ hierarchy


def test_tree_correlation_is_one_for_tree_coordinates():
    x, labels = hierarchy()
    res = analysis.tree_correlation(x, labels, num_pairs=3000, seed=0)
    assert res["spearman"] == pytest.approx(1.0, abs=1e-12)
    assert sum(res["pairs_per_level"].values()) == 3000
    assert set(res["pairs_per_level"]) == {
        "within_speaker",
        "within_base",
        "within_family",
        "across_family",
    }
    noisy = analysis.tree_correlation(*hierarchy(noise=0.3), metric="cosine", num_pairs=3000)
    assert 0.6 < noisy["spearman"] < 1.0
    rand = np.random.default_rng(0).normal(size=x.shape)
    assert abs(analysis.tree_correlation(rand, labels, num_pairs=3000)["spearman"]) < 0.1


def test_hierarchy_distances_are_ordered_and_exact(monkeypatch):
    x, labels = hierarchy(noise=0.1)
    # Small row blocks: the blocked accumulation must equal the one-shot computation.
    monkeypatch.setattr(analysis, "_ROW_BLOCK_ELEMENTS", 5 * x.shape[0])
    res = analysis.hierarchy_distances(x, labels)
    assert res["order"] == ["within_speaker", "within_base", "within_family", "across_family"]
    means = [res["levels"][k]["mean"] for k in res["order"]]
    assert np.all(np.diff(means) > 0) and res["monotone"] is True
    # Pair counts: 18 speakers x C(4, 2); 6 bases x C(3, 2) speaker pairs x 16; ...
    counts = [res["levels"][k]["count"] for k in res["order"]]
    assert counts == [18 * 6, 6 * 3 * 16, 3 * 1 * 144, 3 * 576]
    assert sum(counts) == math.comb(x.shape[0], 2)
    assert res["levels"]["across_family"]["relative"] == pytest.approx(1.0)
    # Reference from the full matrix.
    d = analysis.distance_matrix(x)
    iu = np.triu_indices(x.shape[0], 1)
    spk, base = labels["speaker"], labels["base"]
    same_spk = (spk[:, None] == spk[None])[iu]
    same_base = (base[:, None] == base[None])[iu] & ~same_spk
    assert res["levels"]["within_speaker"]["mean"] == pytest.approx(d[iu][same_spk].mean())
    assert res["levels"]["within_base"]["std"] == pytest.approx(d[iu][same_base].std())
    pre = analysis.hierarchy_distances(d, labels, metric="precomputed")
    assert pre["levels"]["within_family"]["mean"] == pytest.approx(
        res["levels"]["within_family"]["mean"]
    )


def test_hierarchy_distances_reports_empty_levels():
    x, labels = hierarchy(utts=1, noise=0.1)  # one point per speaker: no within-speaker pairs
    res = analysis.hierarchy_distances(x, labels, metric="cosine")
    assert res["levels"]["within_speaker"] == {
        "mean": None,
        "std": None,
        "count": 0,
        "relative": None,
    }
    assert res["monotone"] is True


def test_centre_norms_by_group():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 6))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    groups = np.repeat(np.array(["deep", "mid", "root"]), 10)
    radii = np.repeat([0.8, 0.5, 0.1], 10)
    w = v * radii[:, None]
    res = analysis.centre_norms_by_group(w, groups, metric="poincare", c=1.0)
    assert res["groups"]["deep"]["norm"]["mean"] == pytest.approx(0.8)
    assert res["groups"]["root"]["count"] == 10
    assert res["groups"]["mid"]["dist0"]["mean"] == pytest.approx(2 * np.arctanh(0.5), rel=1e-5)
    assert res["kruskal_pvalue"] < 1e-4
    np.testing.assert_allclose(res["dist0"], 2 * np.arctanh(radii), rtol=1e-5)
    eu = analysis.centre_norms_by_group(w, groups)
    assert eu["dist0"] is None and "dist0" not in eu["groups"]["deep"]
    same = analysis.centre_norms_by_group(v, groups)
    assert same["kruskal_pvalue"] is None  # all norms equal: no test


# ------------------------------------------------------------------------------ pictures


def test_disk_projection_inside_deterministic_and_isometric_in_2d():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 8))
    x = 0.999 * v / np.linalg.norm(v, axis=1, keepdims=True) / np.sqrt(3.0)
    x *= rng.uniform(0.0, 1.0, size=(50, 1))
    p = analysis.poincare_disk_projection(x, c=3.0)
    assert p.shape == (50, 2)
    assert np.all(np.linalg.norm(p, axis=1) < 1.0)
    np.testing.assert_array_equal(p, analysis.poincare_disk_projection(x, c=3.0))
    # Points near the boundary stay strictly inside.
    edge = analysis.poincare_disk_projection(
        x / np.linalg.norm(x, axis=1, keepdims=True) * ((1 - 1e-6) / np.sqrt(3.0)), c=3.0
    )
    assert np.all(np.linalg.norm(edge, axis=1) < 1.0)
    # In 2-D the projection is a rotation / reflection: radii are kept (scaled by sqrt(c)).
    x2 = x[:, :2] / np.linalg.norm(x[:, :2], axis=1, keepdims=True) * 0.5
    p2 = analysis.poincare_disk_projection(x2, c=3.0)
    np.testing.assert_allclose(np.linalg.norm(p2, axis=1), 0.5 * np.sqrt(3.0), rtol=1e-5)
    # The origin stays at the centre.
    x0 = np.concatenate([np.zeros((1, 8)), x])
    assert np.linalg.norm(analysis.poincare_disk_projection(x0, c=3.0)[0]) < 1e-12


def test_plots_write_png(tmp_path):
    x, labels = hierarchy(noise=0.1)
    ball = 0.5 * x / np.linalg.norm(x, axis=1, keepdims=True)
    p = analysis.poincare_disk_projection(ball, c=1.0)
    disk = tmp_path / "out" / "disk.png"
    plots.plot_poincare_disk(p, labels["family"], disk, "families")
    norms = tmp_path / "norms.png"
    plots.plot_centre_norms(np.linalg.norm(x, axis=1), labels["family"], norms, "norms")
    for path in (disk, norms):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f.name for f in tmp_path.rglob("*") if f.is_file()) == ["disk.png", "norms.png"]
    with pytest.raises(ValueError, match="inside the unit disk"):
        plots.plot_poincare_disk(1.5 * p / np.abs(p).max(), labels["family"], disk, "bad")
    with pytest.raises(ValueError, match="groups"):
        plots.plot_centre_norms(np.ones(3), np.ones(4), norms, "bad")


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(metric="manhattan"), "metric='manhattan'"),
        (dict(metric="euclidean", c=1.0), "only used with metric='poincare'"),
        (dict(metric="poincare"), "needs the curvature"),
        (dict(metric="poincare", c=-1.0), "c=-1.0"),
        (dict(metric="poincare", c=100.0), "inside the ball"),
        (dict(num_samples=3), "num_samples=3"),
        (dict(num_trials=0), "num_trials=0"),
    ],
)
def test_delta_errors(kwargs, match):
    x = np.random.default_rng(0).normal(size=(10, 3)) * 0.1
    with pytest.raises(ValueError, match=match):
        analysis.delta_hyperbolicity(x, **kwargs)


def test_input_errors():
    x, labels = hierarchy()
    with pytest.raises(ValueError, match="non-finite"):
        analysis.delta_hyperbolicity(np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        analysis.delta_hyperbolicity(np.ones(5))
    with pytest.raises(ValueError, match="N >= 4"):
        analysis.delta_hyperbolicity(np.eye(3))
    with pytest.raises(ValueError, match="not symmetric"):
        analysis.delta_hyperbolicity(np.triu(np.ones((5, 5)), 1), metric="precomputed")
    with pytest.raises(ValueError, match="square"):
        analysis.hierarchy_distances(x, labels, metric="precomputed")
    with pytest.raises(ValueError, match="zero row"):
        analysis.distance_matrix(np.zeros((4, 3)), metric="cosine")
    with pytest.raises(ValueError, match="does not nest"):
        analysis.hierarchy_distances(
            x, {"speaker": labels["speaker"], "family": np.arange(x.shape[0]) % 3}
        )
    with pytest.raises(ValueError, match=r"labels\['base'\]: 71 ids for 72 points"):
        analysis.tree_correlation(x, {"speaker": labels["speaker"], "base": labels["base"][1:]})
    with pytest.raises(ValueError, match="non-empty"):
        analysis.tree_correlation(x, {})
    with pytest.raises(ValueError, match="two or more levels"):
        analysis.tree_correlation(x, {"family": np.zeros(x.shape[0], int)}, num_pairs=50)
    with pytest.raises(ValueError, match="coordinates"):
        analysis.centre_norms_by_group(np.eye(3), np.arange(3), metric="precomputed")
    with pytest.raises(ValueError, match=r"group_ids: expected shape \(3,\)"):
        analysis.centre_norms_by_group(np.eye(3), np.arange(4))
    with pytest.raises(ValueError, match="D >= 2"):
        analysis.poincare_disk_projection(np.full((4, 1), 0.1), c=1.0)


# ------------------------------------------------------------------------------ the script


@pytest.mark.slow
def test_analyze_script_end_to_end(tmp_path):
    """scripts/analyze.py on an untrained tiny HAM model saved as WORKDIR/final."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import jax

    from hamjax import checkpointing, io_utils
    from hamjax.data import synthetic

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("cfg_qs", repo / "configs/quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    meta = synthetic.generate_corpus(tmp_path / "corpus", seed=0, num_workers=0, **synthetic.TINY)
    config.data.root = str(tmp_path / "corpus")
    config.data.data_dir = str(tmp_path / "no_tfds")  # not prepared: labels from train_list.txt
    for key, value in dict(
        channels=8,
        scale=2,
        dilations=(2,),
        mfa_channels=16,
        attention_channels=8,
        se_bottleneck=4,
        embed_dim=16,
    ).items():
        config.model[key] = value
    config.head.num_classes = len(meta["splits"]["train"])
    encoder, head = model_builder.build_modules(config, config.head.num_classes)
    variables = model_builder.init_variables(config, encoder, head, jax.random.PRNGKey(0))
    workdir = tmp_path / "run"
    checkpointing.save_final(workdir, variables, {"step": 0})
    io_utils.write_json(workdir / checkpointing.CONFIG_FILE, config.to_dict())

    cmd = [sys.executable, str(repo / "scripts/analyze.py"), "--workdir", str(workdir)]
    cmd += ["--checkpoint", "final", "--delta_samples", "12", "--delta_trials", "2"]
    cmd += ["--num_pairs", "500"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((workdir / "analysis/report.json").read_text())
    assert report["head"] == "ham_softmax" and report["num_utterances"] == 48
    assert report["geometry"]["ball"] == {"c": 3.0, "mode": "clip", "distance_curvature": 1.0}
    for geometry in ("cosine", "ball"):
        emb = report["embeddings"][geometry]
        assert 0.0 <= emb["delta"]["relative_delta"] <= 1.0
        assert -1.0 <= emb["tree_correlation"]["spearman"] <= 1.0
        assert emb["hierarchy"]["levels"]["within_speaker"]["count"] == 12 * 6
    norms = report["embeddings"]["ball"]["norms"]
    assert 0.0 < norms["min"] <= norms["median"] <= norms["max"] <= norms["radius"] + 1e-6
    centres = report["centres"]["centres"]
    assert set(centres["ball_norms_by_family"]["groups"]) == {"f01", "f02"}
    assert report["centres"]["label_mapping"].endswith("train_list.txt")
    for name in report["figures"]:
        assert (workdir / "analysis" / name).read_bytes()[:4] == b"\x89PNG"
