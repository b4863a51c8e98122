"""Tests of the study's bookkeeping and statistics (scripts/reproduction_study.py).

The training runs themselves are train.py / eval.py (tested elsewhere); here the work
directories hold score files written in eval.py's format, with known separations.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hamjax import metrics

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location(
        "reproduction_study", REPO / "scripts" / "reproduction_study.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def _write_run(root: Path, name: str, lists, separation: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for t in lists:
        d = root / name / "eval" / t
        d.mkdir(parents=True)
        lines = ["# header", "# label enroll test score"]
        labels, scores = [], []
        for spk in range(40):
            for k in range(10):
                lab = k % 2
                # Speaker-dependent offsets make the speaker bootstrap matter.
                s = rng.normal(separation * lab + 0.3 * np.sin(spk), 1.0)
                lines.append(f"{lab} s{spk:03d}/a/{k:05d}.wav s{spk:03d}/b/{k:05d}.wav {s:.6f}")
                labels.append(lab)
                scores.append(float(f"{s:.6f}"))
        (d / "scores.txt").write_text("\n".join(lines) + "\n")
        (d / "report.json").write_text("{}")
        out[t] = (np.array(scores), np.array(labels))
    return out


def test_plan_orders_main_heads_first(study):
    names = [r.name for r in study.PLAN]
    assert len(names) == len(set(names)) == 8 * 3 + 4 * 3 + 6 * 3
    assert [r.group for r in study.PLAN[:24]] == ["main"] * 24
    assert [r.seed for r in study.PLAN[:8]] == [0] * 8  # every head once before any repeat
    ham = next(r for r in study.PLAN if r.name == "ham_expmap_s1")
    assert ham.flags() == ["--config.seed=1", "--config.head.mode=expmap"]


def test_collect_gives_seed_means_cis_and_paired_reductions(study, tmp_path):
    lists = study.TRIAL_LISTS
    truth = {}
    for seed in (0, 1):
        truth[("softmax", seed)] = _write_run(tmp_path, f"softmax_s{seed}", lists, 1.0, seed)
        truth[("h_softmax", seed)] = _write_run(
            tmp_path, f"h_softmax_s{seed}", lists, 2.5, 10 + seed
        )
    rows = study.collect(tmp_path, reps=200)
    assert set(rows) == {"softmax", "h_softmax"}
    for head in rows:
        for t in lists:
            e = rows[head]["lists"][t]
            want = np.mean([metrics.eer(*truth[(head, s)][t])[0] for s in (0, 1)])
            assert e["eer"] == pytest.approx(want)
            assert e["num_seeds"] == 2 and e["eer_seed_sd"] >= 0
            lo, hi = e["eer_ci"]
            assert lo <= e["eer"] <= hi and hi - lo > 0.005
            assert 0.0 <= e["min_dcf"] <= 1.0
    rel = study._relative(rows, "h_softmax", "softmax", lists[0])
    assert rel["reduction"] > 0.3 and rel["p_better"] > 0.95 and rel["ci"][0] > 0
    assert study._relative(rows, "softmax", "h_softmax", lists[0])["reduction"] < 0
    assert study._relative(rows, "ham_clip", "am", lists[0]) is None  # not run


def test_report_writes_tables_between_markers(study, tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1, 2):
        _write_run(root, f"am_s{seed}", study.TRIAL_LISTS, 1.5, seed)
        _write_run(root, f"ham_clip_s{seed}", study.TRIAL_LISTS, 1.8, 20 + seed)
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text(f"# Study\n\nprose\n\n{study.MARKERS[0]}\nold\n{study.MARKERS[1]}\n\ntail\n")
    out_json = tmp_path / "results.json"
    args = [
        "report", "--root", str(root), "--corpus", str(tmp_path / "none"),
        "--doc", str(doc), "--out_json", str(out_json), "--bootstrap", "100",
        "--readme", str(tmp_path / "README.md"),
    ]  # fmt: skip
    assert study.main(args) == 0
    text = doc.read_text()
    assert text.startswith("# Study\n\nprose\n") and text.endswith("\ntail\n")
    assert "old" not in text and "| ham_clip vs am | heldout_persons |" in text
    readme = (tmp_path / "README.md").read_text()
    assert "| ham_clip | 3 |" in readme and "EER reduction of ham_clip vs am" in readme
    result = json.loads(out_json.read_text())
    assert result["comparisons"]["ham_clip_vs_am/heldout_persons"]["seeds"] == 3
    assert study.main(args) == 0 and doc.read_text() == text  # idempotent


def test_report_without_runs_is_an_error(study, tmp_path, capsys):
    args = ["report", "--root", str(tmp_path), "--doc", str(tmp_path / "d.md"),
            "--out_json", str(tmp_path / "r.json"), "--readme", ""]  # fmt: skip
    assert study.main(args) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_runs_of_one_recipe_form_one_sweep_program(study, tmp_path):
    progs = study.programs(study.PLAN)
    assert len(progs) == 14 and sum(len(p.runs) for p in progs) == len(study.PLAN)
    ham = next(p for p in progs if p.name == "ham_softmax")
    assert [r.name for r in ham.runs] == ["ham_clip_s0", "ham_clip_s1", "ham_clip_s2"]
    assert ham.flags() == ["--config.sweep.shared_batches=False", "--zip", "--sweep=seed=0,1,2"]
    curv = next(p for p in progs if p.name == "ham_softmax-curvature")
    assert len(curv.runs) == 9 and curv.flags()[2:] == [
        "--sweep=seed=0,0,0,1,1,1,2,2,2",
        "--sweep=head.c=1.0,5.0,10.0,1.0,5.0,10.0,1.0,5.0,10.0",
    ]
    run = next(r for r in curv.runs if r.name == "ham_c10_s1")
    assert curv.workdir(tmp_path, run) == tmp_path / "ham_softmax-curvature/variants/seed1-c10.0"
    assert {p.name for p in progs} >= {"ham_ball", "h_mlr", "h_mlr_margin", "ham_feature_clip"}
    expmap = next(p for p in progs if p.name == "ham_softmax-modeexpmap")
    assert expmap.flags()[0] == "--config.head.mode=expmap"
    # One process per run without sweeps (the old layout).
    single = study.programs(study.PLAN, sweeps=False)
    assert len(single) == len(study.PLAN) and single[0].flags() == study.PLAN[0].flags()
    assert single[0].workdir(tmp_path, study.PLAN[0]) == tmp_path / study.PLAN[0].name


def test_collect_reads_sweep_variants_and_old_run_directories(study, tmp_path):
    ham = next(p for p in study.programs(study.PLAN) if p.name == "ham_softmax")
    lists = study.TRIAL_LISTS
    for seed in (0, 1):
        run = next(r for r in ham.runs if r.name == f"ham_clip_s{seed}")
        rel = ham.workdir(tmp_path, run).relative_to(tmp_path)
        _write_run(tmp_path, str(rel), lists, 2.0, seed)
        _write_run(tmp_path, f"am_s{seed}", lists, 1.0, 10 + seed)  # the old layout
    rows = study.collect(tmp_path, reps=50)
    assert set(rows) == {"ham_clip", "am"}
    assert rows["ham_clip"]["lists"][lists[0]]["num_seeds"] == 2


def test_report_has_the_toolbox_section_with_ball_scoring(study, tmp_path):
    root = tmp_path / "runs"
    progs = {p.name: p for p in study.programs(study.PLAN)}
    for prog, head, sep in (("ham_softmax", "ham_clip", 1.5), ("h_mlr", "h_mlr", 2.0)):
        for seed in (0, 1, 2):
            run = next(r for r in progs[prog].runs if r.name == f"{head}_s{seed}")
            rel = str(progs[prog].workdir(root, run).relative_to(root))
            _write_run(root, rel, study.TRIAL_LISTS, sep, seed)
            ball = root / rel / "eval_poincare"
            ball.parent.mkdir(parents=True, exist_ok=True)
            _write_run(ball.parent, "eval_poincare_tmp", study.TRIAL_LISTS, sep + 0.5, 30 + seed)
            (ball.parent / "eval_poincare_tmp" / "eval").rename(ball)
    args = ["report", "--root", str(root), "--corpus", str(tmp_path / "none"),
            "--doc", str(tmp_path / "d.md"), "--out_json", str(tmp_path / "r.json"),
            "--bootstrap", "100", "--readme", ""]  # fmt: skip
    assert study.main(args) == 0
    text = (tmp_path / "d.md").read_text()
    assert "**Toolbox heads vs ham_clip**" in text
    assert "| h_mlr (ball) | 3 |" in text and "| ham_clip (ball) | 3 |" in text
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved["rows_poincare"]) == {"ham_clip", "h_mlr"}


def test_compare_flags_rows_outside_seed_noise_and_counts_a_sweep_once(study, tmp_path):
    """The same study two ways (one process per run vs sweeps), reported, then compared."""
    progs = {p.name: p for p in study.programs(study.PLAN)}
    procs, sweeps = tmp_path / "procs", tmp_path / "sweeps"
    for seed in (0, 1, 2):
        for head, prog, sep_a, sep_b in (("ham_clip", "ham_softmax", 1.5, 1.5),
                                         ("am", "am_softmax", 1.5, 3.0)):  # fmt: skip
            _write_run(procs, f"{head}_s{seed}", study.TRIAL_LISTS, sep_a, seed + 10 * len(head))
            (procs / f"{head}_s{seed}" / "study.json").write_text(
                json.dumps({"seconds": {"train": 100.0, "eval": 20.0}})
            )
            run = next(r for r in progs[prog].runs if r.name == f"{head}_s{seed}")
            rel = str(progs[prog].workdir(sweeps, run).relative_to(sweeps))
            _write_run(sweeps, rel, study.TRIAL_LISTS, sep_b, 40 + seed)
            (sweeps / rel / "study.json").write_text(
                json.dumps({"program": prog, "seconds": {"train": 150.0, "eval": 30.0}})
            )
    for root in (procs, sweeps):
        args = ["report", "--root", str(root), "--corpus", str(tmp_path / "none"),
                "--doc", str(root / "d.md"), "--out_json", str(root / "r.json"),
                "--bootstrap", "50", "--readme", ""]  # fmt: skip
        assert study.main(args) == 0
    out = tmp_path / "compare.md"
    args = ["compare", str(procs / "r.json"), str(sweeps / "r.json"), "--out", str(out)]
    assert study.main(args) == 0
    text = out.read_text()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()]
    rows = {(c[0], c[1]): c for c in cells if len(c) == 6 and c[0] in ("ham_clip", "am")}
    assert len(rows) == 6
    for t in study.TRIAL_LISTS:
        assert rows[("am", t)][4].endswith("*")  # twice the separation: EER far lower
        assert float(rows[("am", t)][4].rstrip(" *")) < 0
        assert not rows[("ham_clip", t)][4].endswith("*")
    assert "6 cells: 3 outside the noise band" in text
    assert "| ham_clip vs am | heldout_persons |" in text
    # 6 runs of one process each; 2 sweep programs whose 3 variants each record the same time.
    assert "separate processes: 6 programs, 0.20 h" in text
    assert "sweeps: 2 programs, 0.10 h" in text


def test_compare_refuses_a_file_that_is_not_a_report(study, tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps([1, 2]))
    assert study.main(["compare", str(bad), str(bad)]) == 2
    assert "no 'rows' (expected the --out_json of report)" in capsys.readouterr().err
