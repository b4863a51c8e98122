"""Hierarchy analysis of a trained model: delta-hyperbolicity, tree statistics, disk pictures.

Usage::

    python scripts/analyze.py --workdir runs/quickstart_ham --checkpoint final

Restores the model (``hamjax.inference.Verifier``), embeds utterances of a corpus with
a speaker hierarchy (VoxCeleb layout plus ``metadata.json`` giving speaker -> base -> family,
as written by ``hamjax.data.synthetic.generate_corpus``; default: the training config's
``data.root``), and measures, for the utterance embeddings and for the head's class centres:

* Gromov relative delta-hyperbolicity (Khrulkov et al. 2020; :mod:`hamjax.analysis`);
* mean distance within speaker / base voice / family and across families, and the Spearman
  correlation between embedding distances and tree distances;
* centre norms per family and per base voice;

in the cosine geometry (angular distance of L2-normalised vectors, what cosine scoring sees) and,
for hyperbolic heads (``h_softmax``, ``ham_softmax``, ``combined``), in the head's own ball
(its ``ball_embed``; ``clip`` mode measures with the authors' unit-curvature distance,
``expmap`` with ``d_c``). Writes ``DIR/analysis/report.json`` and PNGs (Poincaré-disk pictures
coloured by family, centre norms against family).

Class centres are matched to speakers by label: label ``i`` is the ``i``-th training speaker in
sorted order (the prepared dataset's ``speaker_names`` when ``data.data_dir`` / ``data.name``
hold it, else the sorted speakers of ``train_list.txt``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py work directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "'latest', 'final' or a step number.")
_DATA_ROOT = flags.DEFINE_string(
    "data_root", None, "Corpus root (wav/, metadata.json); default: the config's data.root."
)
_SPLIT = flags.DEFINE_enum(
    "split",
    "all",
    ["all", "train", "heldout"],
    "Which speakers' utterances to embed (heldout = speakers not seen in training).",
)
_UTTS = flags.DEFINE_integer("utterances_per_speaker", 8, "Utterances embedded per speaker.")
_MAX_SPEAKERS = flags.DEFINE_integer("max_speakers", 0, "Speakers to sample (0: all).")
_SAMPLES = flags.DEFINE_integer("delta_samples", 500, "Points per delta-hyperbolicity subset.")
_TRIALS = flags.DEFINE_integer("delta_trials", 10, "Delta-hyperbolicity subsets.")
_PAIRS = flags.DEFINE_integer("num_pairs", 20_000, "Pairs sampled for the tree correlation.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random choice.")
_BATCH_SECONDS = flags.DEFINE_float("batch_seconds", 64.0, "Audio seconds per device call.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/analysis).")
flags.mark_flag_as_required("workdir")


def _which(text: str) -> str | int:
    text = text.strip()
    if text in ("latest", "final"):
        return text
    if text.isdigit():
        return int(text)
    raise app.UsageError(f"--checkpoint={text!r}: expected 'latest', 'final' or a step number")


def _select_utterances(
    utts: list[Any], split: str, train: set[str], per_speaker: int, max_speakers: int, seed: int
) -> list[Any]:
    """A seeded subset: ``max_speakers`` speakers of ``split``, ``per_speaker`` files each."""
    import numpy as np

    rng = np.random.default_rng(np.random.SeedSequence([seed, 8]))
    by_spk: dict[str, list[Any]] = {}
    for u in utts:
        if split == "all" or (split == "train") == (u.speaker in train):
            by_spk.setdefault(u.speaker, []).append(u)
    speakers = sorted(by_spk)
    if 0 < max_speakers < len(speakers):
        speakers = sorted(rng.choice(speakers, size=max_speakers, replace=False).tolist())
    chosen = []
    for s in speakers:
        group = sorted(by_spk[s], key=lambda u: u.utterance_id)
        if 0 < per_speaker < len(group):
            group = [group[i] for i in np.sort(rng.choice(len(group), per_speaker, replace=False))]
        chosen.extend(group)
    return chosen


def _centre_speakers(config: Any, root: Path, num_classes: int) -> tuple[list[str] | None, str]:
    """Speaker name of each class label, and where the mapping came from."""
    from hamjax.data import corpus as corpus_lib

    data = config.data
    if data.get("data_dir") and data.get("name"):
        try:
            from hamjax.data import tfds_builder

            info = tfds_builder.load_dataset_info(
                os.path.expanduser(data.data_dir), data.name, config=data.get("config") or None
            )
        except (FileNotFoundError, ValueError) as err:
            logging.info("no prepared dataset for the label mapping (%s)", err)
        else:
            names = list(info.speaker_names)
            if len(names) == num_classes:
                return names, f"TFDS dataset {data.name}"
    lst = root / "train_list.txt"
    if lst.is_file():
        names = corpus_lib.speaker_names(corpus_lib.list_voxceleb(root, list_file=lst))
        if len(names) == num_classes:
            return names, str(lst)
    return None, f"no listing with {num_classes} training speakers found"


def _class_tables(head_params: Any, num_classes: int) -> dict[str, Any]:
    """``{name: [C, D]}``: the head's class centres / weight rows, found by name and shape."""
    import numpy as np
    from flax import traverse_util

    flat = traverse_util.flatten_dict(head_params, sep="/")
    tables = {}
    for path, leaf in flat.items():
        arr = np.asarray(leaf, np.float64)
        last = path.rsplit("/", 1)[-1]
        if last in ("centres", "weights") and arr.ndim == 2 and arr.shape[0] == num_classes:
            tables[path] = arr
        elif last == "kernel" and arr.ndim == 2 and arr.shape[1] == num_classes:
            tables[path] = arr.T  # nn.Dense stores [D, C]
    return tables


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import numpy as np

    from hamjax import analysis, heads, io_utils, plots
    from hamjax.constants import seconds_to_samples
    from hamjax.data import corpus as corpus_lib
    from hamjax.inference import Verifier

    t0 = time.time()
    workdir = Path(_WORKDIR.value).expanduser()
    out = Path(_OUT.value).expanduser() if _OUT.value else workdir / "analysis"
    seed = int(_SEED.value)
    verifier = Verifier.from_workdir(
        workdir,
        _which(_CHECKPOINT.value),
        protocol="full",
        batch_samples=seconds_to_samples(_BATCH_SECONDS.value),
    )
    config = verifier.config
    root = Path(_DATA_ROOT.value or config.data.root).expanduser()
    if not (root / "metadata.json").is_file():
        raise app.UsageError(
            f"--data_root={root}: no metadata.json; the analysis needs a corpus with a speaker "
            "hierarchy (speaker -> base -> family), e.g. hamjax.data.synthetic.generate_corpus"
        )
    utts = corpus_lib.list_voxceleb(root)
    num_classes = int(config.head.num_classes)
    centre_names, mapping_source = _centre_speakers(config, root, num_classes)
    train_lst = root / "train_list.txt"
    train = (
        {u.speaker for u in corpus_lib.list_voxceleb(root, list_file=train_lst)}
        if train_lst.is_file()
        else set(centre_names or ())
    )
    chosen = _select_utterances(utts, _SPLIT.value, train, _UTTS.value, _MAX_SPEAKERS.value, seed)
    if len({u.speaker for u in chosen}) < 2:
        raise app.UsageError(f"--split={_SPLIT.value}: fewer than two speakers in {root}")
    missing = sorted({u.speaker for u in chosen if not (u.base and u.family)})
    if missing:
        raise app.UsageError(f"{root}/metadata.json: no base/family for speakers {missing[:5]}")
    logging.info(
        "embedding %d utterances of %d speakers", len(chosen), len({u.speaker for u in chosen})
    )

    # Embeddings through the inference layer, exactly as evaluation computes them (full
    # utterance, masked buckets), streamed so that --max_speakers 0 scales to big corpora.
    paths = {u.utterance_id: u.path for u in chosen}
    emb = verifier.embed_protocol(
        [u.utterance_id for u in chosen], lambda name: verifier.load(paths[name])
    ).full.astype(np.float64)
    labels = {
        "speaker": np.array([u.speaker for u in chosen]),
        "base": np.array([u.base for u in chosen]),
        "family": np.array([u.family for u in chosen]),
    }
    opts = dict(
        num_samples=_SAMPLES.value, num_trials=_TRIALS.value, num_pairs=_PAIRS.value, seed=seed
    )

    # The head's ball: clip mode measures with the authors' unit-curvature distance (c only sets
    # the clipping radius); below c = 1 its points leave the unit ball and the curvature-c ball
    # is used instead (an approximation: the authors' clamps make that case no metric at all).
    head, head_params = verifier.head, verifier.variables["params"]["head"]
    hyperbolic = heads.is_hyperbolic(str(config.head.name))
    ball: dict[str, Any] | None = None
    if hyperbolic:
        c = float(head.apply({"params": head_params}, method="curvature"))
        mode = str(head.mode)
        c_dist = c if mode == "expmap" else min(c, 1.0)

        def to_ball(x: np.ndarray) -> np.ndarray:
            p = head.apply({"params": head_params}, x.astype(np.float32), method="ball_embed")
            return np.asarray(p, np.float64)

        ball = dict(c=c, mode=mode, distance_curvature=c_dist, to_ball=to_ball)

    report: dict[str, Any] = dict(
        workdir=str(workdir),
        checkpoint=_CHECKPOINT.value,
        step=int(verifier.step),
        head=str(config.head.name),
        data_root=str(root),
        split=_SPLIT.value,
        num_utterances=len(chosen),
        num_speakers=len(set(labels["speaker"])),
        num_families=len(set(labels["family"])),
        options=opts,
        geometry={"cosine": "angular distance of L2-normalised vectors"},
    )
    if ball is not None:
        report["geometry"]["ball"] = {k: ball[k] for k in ("c", "mode", "distance_curvature")}
    figures = []

    emb_report = {"cosine": analysis.geometry_report(emb, labels, metric="cosine", **opts)}
    if ball is not None:
        pts = ball["to_ball"](emb)
        emb_report["ball"] = analysis.geometry_report(
            pts, labels, metric="poincare", c=ball["distance_curvature"], **opts
        )
        # Where the embeddings sit in the ball. When every norm is the same (the clip radius,
        # or the boundary after a saturated expmap0), the ball distance between embeddings is a
        # monotone function of their angle: the ball then ranks pairs exactly as cosine does.
        norms = np.linalg.norm(np.asarray(pts, np.float64), axis=1)
        emb_report["ball"]["norms"] = {
            "min": float(norms.min()),
            "median": float(np.median(norms)),
            "max": float(norms.max()),
            "radius": float(1.0 / np.sqrt(c)),
            "relative_spread": float((norms.max() - norms.min()) / max(norms.max(), 1e-30)),
        }
        disk = analysis.poincare_disk_projection(pts, c=ball["distance_curvature"])
        title = f"{config.head.name}: embeddings in the head's ball ({ball['mode']}, c={c:g})"
    else:
        # No ball: unit embeddings mapped by expmap0 (the cosine picture, same construction).
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        disk = analysis.poincare_disk_projection(np.tanh(1.0) * unit, c=1.0)
        title = f"{config.head.name}: unit embeddings via expmap0 (no hyperbolic head)"
    plots.plot_poincare_disk(disk, labels["family"], out / "disk_embeddings.png", title)
    figures.append("disk_embeddings.png")
    report["embeddings"] = emb_report

    # Class centres.
    centres: dict[str, Any] = {"label_mapping": mapping_source}
    if centre_names is not None:
        meta_spk = {u.speaker: (u.base, u.family) for u in utts}
        c_labels = {
            "base": np.array([meta_spk.get(s, ("?", "?"))[0] for s in centre_names]),
            "family": np.array([meta_spk.get(s, ("?", "?"))[1] for s in centre_names]),
        }
        c_opts = dict(opts, num_samples=min(opts["num_samples"], num_classes))
        for name, table in _class_tables(head_params, num_classes).items():
            entry = {"cosine": analysis.geometry_report(table, c_labels, metric="cosine", **c_opts)}
            norms = analysis.centre_norms_by_group(table, c_labels["family"])
            entry["norms_by_family"] = norms
            entry["norms_by_base"] = analysis.centre_norms_by_group(table, c_labels["base"])
            stem = name.replace("/", "_")
            plots.plot_centre_norms(
                norms["norms"],
                c_labels["family"],
                out / f"centre_norms_{stem}.png",
                f"{config.head.name}: |{name}| by family",
                ylabel="Euclidean norm",
            )
            figures.append(f"centre_norms_{stem}.png")
            if ball is not None and name.endswith("centres"):
                pts = ball["to_ball"](table)
                cd = ball["distance_curvature"]
                entry["ball"] = analysis.geometry_report(
                    pts, c_labels, metric="poincare", c=cd, **c_opts
                )
                bnorms = analysis.centre_norms_by_group(
                    pts, c_labels["family"], metric="poincare", c=cd
                )
                entry["ball_norms_by_family"] = bnorms
                entry["ball_norms_by_base"] = analysis.centre_norms_by_group(
                    pts, c_labels["base"], metric="poincare", c=cd
                )
                plots.plot_centre_norms(
                    bnorms["dist0"],
                    c_labels["family"],
                    out / f"centre_dist0_{stem}.png",
                    f"{config.head.name}: centre distance to 0 in the ball, by family",
                    ylabel="Poincaré distance to the origin",
                )
                disk = analysis.poincare_disk_projection(pts, c=cd)
                plots.plot_poincare_disk(
                    disk,
                    c_labels["family"],
                    out / f"disk_{stem}.png",
                    f"{config.head.name}: class centres in the head's ball",
                )
                figures += [f"centre_dist0_{stem}.png", f"disk_{stem}.png"]
            centres[name] = entry
    report["centres"] = centres
    report["figures"] = figures
    report["seconds"] = round(time.time() - t0, 1)
    io_utils.write_json(out / "report.json", _jsonable(report))
    cos = emb_report["cosine"]
    line = (
        f"cosine: rel. delta {cos['delta']['relative_delta']:.3f}, tree rho "
        f"{(cos['tree_correlation'] or {}).get('spearman', float('nan')):.3f}"
    )
    if "ball" in emb_report:
        b = emb_report["ball"]
        line += (
            f"; ball: rel. delta {b['delta']['relative_delta']:.3f}, tree rho "
            f"{(b['tree_correlation'] or {}).get('spearman', float('nan')):.3f}"
        )
    print(f"wrote {out / 'report.json'} ({len(figures)} figures)\n{line}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
