"""Tests for hamjax.trials: both formats, auto-detection, and every error message."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hamjax import trials

VOX = """\
1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav
0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav

1 id10273/0OCW1HUxZyg/00001.wav id10273/ow3Ka4_s0EM/00002.wav
"""

KALDI = """\
# enroll test label
id10270-x6uYqmx31kE-00001 id10270-8jEAjG6SegY-00008 target
id10270-x6uYqmx31kE-00001 id10300-ize_eiCFEg0-00003 nontarget
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_voxceleb_format(tmp_path):
    path = write(tmp_path, "vox1_o.txt", VOX)
    tl = trials.read_trials(path)
    assert tl.format == "voxceleb"
    assert tl.name == "vox1_o"
    assert len(tl) == 3 and tl.num_target == 2 and tl.num_nontarget == 1
    np.testing.assert_array_equal(tl.labels, [1, 0, 1])
    assert tl.enroll[2] == "id10273/0OCW1HUxZyg/00001.wav"
    assert tl.test[1] == "id10300/ize_eiCFEg0/00003.wav"
    assert tl.sha256 == hashlib.sha256(VOX.encode()).hexdigest()
    assert len(tl.utterances()) == 5


def test_reads_kaldi_format(tmp_path):
    tl = trials.read_trials(write(tmp_path, "trials", KALDI), name="custom")
    assert tl.format == "kaldi" and tl.name == "custom"
    np.testing.assert_array_equal(tl.labels, [1, 0])
    assert tl.enroll[0] == "id10270-x6uYqmx31kE-00001"
    assert tl.test[1] == "id10300-ize_eiCFEg0-00003"


def test_ambiguous_first_line_is_resolved_by_a_later_line(tmp_path):
    # '1 a target' fits both forms; the second line is unambiguously Kaldi.
    tl = trials.read_trials(write(tmp_path, "t.txt", "1 a target\nb c nontarget\n"))
    assert tl.format == "kaldi"
    np.testing.assert_array_equal(tl.labels, [1, 0])
    np.testing.assert_array_equal(tl.enroll, ["1", "b"])


def test_indices_map_trials_to_utterance_positions(tmp_path):
    tl = trials.read_trials(write(tmp_path, "vox.txt", VOX))
    utts = tl.utterances()[::-1]
    e, t = tl.indices(utts)
    assert [utts[i] for i in e] == tl.enroll.tolist()
    assert [utts[i] for i in t] == tl.test.tolist()
    with pytest.raises(trials.TrialListError, match=r"1 utterance\(s\) have no embedding"):
        tl.indices(utts[1:])


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty trial list"),
        ("# only a comment\n\n", "empty trial list"),
        (
            "1 a.wav b.wav\n1 c.wav\n",
            r":2: malformed trial '1 c.wav'; expected 'LABEL ENROLL",
        ),
        ("2 a.wav b.wav\n", r":1: malformed trial '2 a.wav b.wav'"),
        ("1 a.wav b.wav\n\n0 a.wav c.wav\nx y target\n", r":4: malformed trial 'x y target'.*"),
        ("a b target\n0 a c\n", r":2: malformed trial '0 a c'; expected 'ENROLL TEST target"),
        ("1 a.wav b.wav\n1 a.wav c.wav\n", r"all 2 trials are target \(no non-target trial\)"),
        ("a b nontarget\n", r"all 1 trials are non-target \(no target trial\)"),
    ],
)
def test_malformed_lists_raise_with_file_and_line(tmp_path, text, match):
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(trials.TrialListError, match=match) as info:
        trials.read_trials(path)
    assert str(path) in str(info.value)


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(trials.TrialListError, match="no such trial list"):
        trials.read_trials(tmp_path / "nope.txt")
    bad = tmp_path / "bin.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(trials.TrialListError, match="not a UTF-8 text"):
        trials.read_trials(bad)


def test_resolve_audio_reports_missing_files(tmp_path):
    root = tmp_path / "wav"
    (root / "a").mkdir(parents=True)
    for name in ("a/1.wav", "a/2.wav"):
        (root / name).write_bytes(b"")
    got = trials.resolve_audio(["a/1.wav", "a/2.wav"], root)
    assert got == {"a/1.wav": root / "a/1.wav", "a/2.wav": root / "a/2.wav"}
    wanted = ["a/1.wav"] + [f"b/{i}.wav" for i in range(8)]
    with pytest.raises(trials.TrialListError) as info:
        trials.resolve_audio(wanted, root, source="vox.txt")
    msg = str(info.value)
    assert "vox.txt: 8 of 9 audio file(s) missing under" in msg
    assert "b/0.wav" in msg and "b/4.wav" in msg and "b/5.wav" not in msg


def test_wav_scp_resolution_and_errors(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    scp = write(tmp_path, "wav.scp", "utt1 x.wav\n")
    table = trials.read_wav_scp(scp)
    assert table == {"utt1": tmp_path / "x.wav"}
    assert trials.resolve_audio(["utt1"], None, table) == {"utt1": tmp_path / "x.wav"}
    with pytest.raises(trials.TrialListError, match=r"missing \(no audio root given\) or in"):
        trials.resolve_audio(["utt2"], None, table)
    # One reader for training and eval (hamjax.data.corpus.read_wav_scp): the same messages.
    with pytest.raises(trials.TrialListError, match=r"p.scp:2: utterance 'b' is a piped command"):
        trials.read_wav_scp(write(tmp_path, "p.scp", "a x.wav\nb sox x.wav -t wav - |\n"))
    with pytest.raises(trials.TrialListError, match=r"k.scp:1: utterance 'a' points into an arch"):
        trials.read_wav_scp(write(tmp_path, "k.scp", "a raw.ark:1234\n"))
    with pytest.raises(trials.TrialListError, match=r"o.scp:2: expected '<utterance-id> <path>'"):
        trials.read_wav_scp(write(tmp_path, "o.scp", "a x.wav\nb\n"))
    with pytest.raises(
        trials.TrialListError, match=r"d.scp:2: duplicate utterance id 'a' \(first on line 1\)"
    ):
        trials.read_wav_scp(write(tmp_path, "d.scp", "a x.wav\na x.wav\n"))
    with pytest.raises(trials.TrialListError, match="none.scp: no such list file"):
        trials.read_wav_scp(tmp_path / "none.scp")


def test_wav_scp_path_with_a_space(tmp_path):
    """A path containing spaces is a path (evaluation reads it as training does)."""
    audio = tmp_path / "my corpus" / "spk 1"
    audio.mkdir(parents=True)
    (audio / "take  2.wav").write_bytes(b"")
    scp = write(
        tmp_path,
        "wav.scp",
        f"rel\tmy corpus/spk 1/take  2.wav\nabs   {audio / 'take  2.wav'}  \n",
    )
    table = trials.read_wav_scp(scp)
    assert table == {"rel": audio / "take  2.wav", "abs": audio / "take  2.wav"}
    assert trials.resolve_audio(["rel", "abs"], None, table) == table


def test_duplicate_trials_are_dropped_with_a_warning(tmp_path, caplog):
    text = (
        "1 a.wav b.wav\n"  # 1
        "0 a.wav c.wav\n"  # 2
        "1 a.wav b.wav\n"  # 3: repeats line 1
        "# comment\n"  # 4
        "1 b.wav a.wav\n"  # 5: line 1 with the sides swapped (scores are symmetric)
        "0 c.wav a.wav\n"  # 6: repeats line 2, swapped
        "0 b.wav c.wav\n"  # 7
    )
    path = write(tmp_path, "dup.txt", text)
    with caplog.at_level("WARNING", logger="hamjax.trials"):
        tl = trials.read_trials(path)
    assert len(tl) == 3 and tl.duplicates_removed == 3
    np.testing.assert_array_equal(tl.labels, [1, 0, 0])
    assert tl.enroll.tolist() == ["a.wav", "a.wav", "b.wav"]
    assert tl.test.tolist() == ["b.wav", "c.wav", "c.wav"]
    assert tl.sha256 == hashlib.sha256(text.encode()).hexdigest()  # the file, as read
    (record,) = [r for r in caplog.records if r.name == "hamjax.trials"]
    msg = record.getMessage()
    assert str(path) in msg and "3 duplicate trial line(s) dropped" in msg
    assert "line 3 = line 1, line 5 = line 1, line 6 = line 2" in msg


def test_duplicates_in_kaldi_format_and_no_warning_without_them(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="hamjax.trials"):
        tl = trials.read_trials(write(tmp_path, "vox.txt", VOX))
        assert tl.duplicates_removed == 0 and len(tl) == 3
        assert not caplog.records
        kaldi = KALDI + "id10270-8jEAjG6SegY-00008 id10270-x6uYqmx31kE-00001 target\n"
        tl = trials.read_trials(write(tmp_path, "trials", kaldi))
    assert len(tl) == 2 and tl.duplicates_removed == 1
    assert "line 4 = line 2" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    "text, lines",
    [
        ("1 a.wav b.wav\n0 a.wav c.wav\n0 a.wav b.wav\n", (1, 3)),
        ("1 a.wav b.wav\n0 a.wav c.wav\n\n0 b.wav a.wav\n", (1, 4)),  # swapped sides
        ("a b nontarget\nc d target\nb a target\n", (1, 3)),  # Kaldi
    ],
)
def test_contradictory_labels_name_both_lines_and_the_pair(tmp_path, text, lines):
    path = write(tmp_path, "conflict.txt", text)
    with pytest.raises(trials.TrialListError) as info:
        trials.read_trials(path)
    msg = str(info.value)
    assert f"{path}: lines {lines[0]} and {lines[1]} contradict each other" in msg
    first, second = text.splitlines()[lines[0] - 1], text.splitlines()[lines[1] - 1]
    assert repr(first) in msg and repr(second) in msg
    assert "target" in msg and "non-target" in msg
    a, b = second.split()[1:] if second[0] in "01" else second.split()[:2]
    assert f"({a}, {b})" in msg
