"""Tests of the MBROLA real-voice corpus (hamjax.data.mbrola, scripts/make_mbrola_corpus.py).

The planning (hierarchy, splits, trial lists) is pure and tested everywhere; the end-to-end
generation needs Debian's espeak-ng, mbrola and the voices of ``mbrola.TINY`` and is skipped,
with the reason, where they are absent (``scripts/make_mbrola_corpus.py --install``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hamjax.data import corpus, mbrola

REPO = Path(__file__).resolve().parent.parent
_missing = mbrola.missing_tools()
_tiny_absent = [p for p in mbrola.TINY["persons"] if p not in mbrola.available_persons()]
needs_espeak = pytest.mark.skipif(
    bool(_missing or _tiny_absent),
    reason=(
        f"needs espeak-ng, mbrola and the voices {list(mbrola.TINY['persons'])} "
        f"(missing: {_missing or _tiny_absent}); install with "
        "`python scripts/make_mbrola_corpus.py --install`"
    ),
)


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_mbrola_corpus", REPO / "scripts" / "make_mbrola_corpus.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _plan_args(**kw):
    args = dict(mbrola._DEFAULTS, seed=0, **mbrola.DEFAULT)
    args.update(kw)
    return args


# ------------------------------------------------------------------------------ planning


def test_persons_cover_the_debian_voices():
    assert len(mbrola.PERSONS) == 72
    assert len(set(mbrola.PERSONS.values())) == 11
    # English voices belong to persons of the table (mb-xx-en is the person xx).
    assert mbrola._ENGLISH <= set(mbrola.PERSONS)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_plan_never_shares_a_person_between_train_and_heldout_trials(seed):
    plan = mbrola._plan(_plan_args(seed=seed), list(mbrola.PERSONS))
    rows = {r["name"]: r for r in plan["rows"]}
    train_persons = {r["person"] for r in plan["rows"] if r["split"] == "train"}
    assert set(plan["trials"]) == set(mbrola.TRIAL_LISTS)
    for name, lines in plan["trials"].items():
        persons = {rows[p.split("/")[0]]["person"] for _, e, t in lines for p in (e, t)}
        assert persons and not persons & train_persons, name
        labels = [lab for lab, _, _ in lines]
        assert 0 < sum(labels) < len(labels), name
    # Held-out families are held out whole; held-out persons come from training families.
    held_fams = set(plan["heldout_families"])
    assert len(held_fams) == 2
    for r in plan["rows"]:
        assert (r["split"] == "heldout_family") == (r["family"] in held_fams)
    hp = {r["family"] for r in plan["rows"] if r["split"] == "heldout_person"}
    assert hp and not hp & held_fams
    # Every training family keeps at least one training person.
    for fam in {r["family"] for r in plan["rows"]} - held_fams:
        assert any(r["split"] == "train" and r["family"] == fam for r in plan["rows"])


def test_plan_sizes_and_derivation_ranges():
    plan = mbrola._plan(_plan_args(), list(mbrola.PERSONS))
    rows = plan["rows"]
    assert len(rows) == 72 * 11
    assert sum(len(u) for u in plan["utts"]) == 72 * 11 * 14
    assert len({r["name"] for r in rows}) == len(rows)
    for key, (lo, hi) in (("vtl_warp", (0.88, 1.13)), ("pitch_ratio", (0.8, 1.25)),
                          ("rate", (0.85, 1.18)), ("tilt", (-0.5, 0.5))):  # fmt: skip
        v = np.array([r[key] for r in rows])
        assert lo <= v.min() and v.max() <= hi and v.std() > 0, key
    within = [(lab, e, t) for lab, e, t in plan["trials"]["within_family"] if lab == 0]
    by_name = {r["name"]: r for r in rows}
    for _, e, t in within:
        a, b = by_name[e.split("/")[0]], by_name[t.split("/")[0]]
        assert a["family"] == b["family"] and a["person"] != b["person"]


def test_plan_is_a_function_of_the_seed():
    a = mbrola._plan(_plan_args(seed=3), list(mbrola.PERSONS))
    b = mbrola._plan(_plan_args(seed=3), list(mbrola.PERSONS))
    c = mbrola._plan(_plan_args(seed=4), list(mbrola.PERSONS))
    assert a["trials"] == b["trials"] and a["rows"] == b["rows"]
    assert a["trials"] != c["trials"]


def test_sentences_are_seeded_and_number_only_on_request():
    rng = np.random.default_rng(0)
    s = mbrola._sentence(rng)
    assert s.endswith(".") and s == mbrola._sentence(np.random.default_rng(0))
    nums = mbrola._sentence(np.random.default_rng(1), "numbers")
    assert all(tok.strip(",.").isdigit() for tok in nums.split())
    words = mbrola._sentence(np.random.default_rng(1), "words")
    assert not any(ch.isdigit() for ch in words)


def test_bad_arguments_are_named(tmp_path):
    installed = list(mbrola.PERSONS)
    with pytest.raises(ValueError, match="persons: unknown MBROLA databases \\['xx9'\\]"):
        mbrola._validate(_plan_args(persons=("de1", "xx9")), installed)
    with pytest.raises(ValueError, match="heldout_families: unknown families"):
        mbrola._validate(_plan_args(heldout_families=("klingon",)), installed)
    with pytest.raises(ValueError, match="vtl_warp_range"):
        mbrola._validate(_plan_args(vtl_warp_range=(0.2, 1.0)), installed)
    with pytest.raises(ValueError, match="speakers_per_person=0"):
        mbrola._validate(_plan_args(speakers_per_person=0), installed)


def test_missing_tools_give_an_install_hint(tmp_path):
    assert any("MBROLA voices" in m for m in mbrola.missing_tools(tmp_path))
    with pytest.raises(RuntimeError, match="make_mbrola_corpus.py --install"):
        mbrola.generate_corpus(tmp_path / "out", mbrola_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_install_enables_contrib_and_non_free():
    mod = _script()
    deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nComponents: main\n\n"
    deb822 += "Types: deb\nComponents: main contrib\n"
    out = mod.enable_components(deb822, deb822=True)
    assert out.count("Components: main contrib non-free\n") == 2
    assert mod.enable_components(out, deb822=True) == out  # idempotent
    one = "deb http://deb.debian.org/debian bookworm main\n# deb-src x main\n"
    assert mod.enable_components(one, deb822=False) == (
        "deb http://deb.debian.org/debian bookworm main contrib non-free\n# deb-src x main\n"
    )


# ------------------------------------------------------------------------------ generation


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mbrola") / "tiny"
    meta = mbrola.generate_corpus(root, **mbrola.TINY, num_workers=2)
    return root, meta


@needs_espeak
def test_tiny_corpus_layout_and_hierarchy(tiny):
    root, meta = tiny
    assert meta["format"] == mbrola.FORMAT_NAME
    s = meta["summary"]
    assert s["num_persons"] == 10 and s["num_speakers"] == 20 and s["num_utterances"] == 80
    assert meta["heldout_families"] == ["hellenic"]
    utts = corpus.list_voxceleb(root, list_file=root / "train_list.txt")
    train_spk = {u.speaker for u in utts}
    assert train_spk == set(meta["splits"]["train"])
    hier = corpus.read_hierarchy(root / "metadata.json")
    assert hier[next(iter(train_spk))][0] in mbrola.PERSONS  # base level = the person
    # Every held-out trial person is absent from training.
    train_persons = {hier[s][0] for s in train_spk}
    for name in mbrola.TRIAL_LISTS:
        path = root / "trials" / f"{name}.txt"
        assert path.is_file(), name
        for line in path.read_text().splitlines():
            _, e, t = line.split()
            for p in (e, t):
                assert (root / "wav" / p).is_file()
                assert hier[p.split("/")[0]][0] not in train_persons
        assert 0.0 <= meta["trials"][name]["pitch_only_eer"] <= 1.0
    wav, sr = sf.read(root / "wav" / utts[0].utterance_id)
    assert sr == 16000 and wav.ndim == 1 and 0.5 < wav.shape[0] / sr < 15
    assert np.isfinite(wav).all() and 0 < np.abs(wav).max() < 1.0


@needs_espeak
def test_tiny_corpus_is_reproducible_and_reused(tiny, tmp_path):
    root, meta = tiny
    assert mbrola.generate_corpus(root, **mbrola.TINY, num_workers=2) == meta  # reused
    with pytest.raises(ValueError, match="different arguments"):
        mbrola.generate_corpus(root, **{**mbrola.TINY, "english_prob": 0.9})
    # The bytes depend on the arguments only, not on the worker count.
    small = {**mbrola.TINY, "persons": ("de1", "nl2", "gr1", "gr2")}
    a, b = tmp_path / "a", tmp_path / "b"
    mbrola.generate_corpus(a, **small, num_workers=0)
    mbrola.generate_corpus(b, **small, num_workers=2)

    def digests(r):
        return {
            str(p.relative_to(r)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(r.rglob("*"))
            if p.is_file()
        }

    assert digests(a) == digests(b) and len(digests(a)) > 10


@needs_espeak
def test_phoneme_batches_split_per_sentence():
    texts = ["eins zwei.", "17, 4412.", "kalo mitu."]
    phos = mbrola._phonemes("mb-de2", texts)
    assert len(phos) == 3 and all(p is not None and p.startswith(b"_ 150") for p in phos)
    one = mbrola._phonemes("mb-de2", texts[1:2])[0]

    def phones(pho):  # the phoneme symbols, pauses aside
        return [ln.split()[0] for ln in pho.splitlines() if ln.strip() and ln[:1] != b"_"]

    assert phones(one) == phones(phos[1]) and len(phones(one)) > 5
    wav, rate = mbrola._mbrola("de2", phos[0], 1.0, 1.0, mbrola.MBROLA_DIR)
    assert rate == 16000 and wav.shape[0] > 0.3 * rate and np.abs(wav).max() > 0.01


@needs_espeak
def test_script_writes_the_corpus(tmp_path, capsys):
    code = _script().main(
        ["--root", str(tmp_path / "c"), "--size", "tiny", "--num_workers", "0",
         "--set", "persons=('de1','de2','gr1','gr2')", "--set", "heldout_person_fraction=0.5"]
    )  # fmt: skip
    assert code == 0
    meta = json.loads((tmp_path / "c" / "metadata.json").read_text())
    assert meta["summary"]["num_persons"] == 4
    assert "utterances in" in capsys.readouterr().out
