"""Corpus listing: VoxCeleb layout, the authors' list files, Kaldi data dirs, hierarchy metadata.

Listing never reads audio, so most files here are placeholders.
"""

import json
import os
from pathlib import Path

import pytest

from hamjax.data import corpus


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture()
def vox(tmp_path):
    wav = tmp_path / "vox" / "wav"
    for rel in (
        "id2/sessB/00002.wav",
        "id2/sessA/00001.wav",
        "id10/sessA/00001.flac",
        "id1/s/00001.WAV",
    ):
        _touch(wav / rel)
    _touch(wav / "id1" / "s" / "notes.txt")  # not audio: ignored
    _touch(wav / "id1" / "stray.wav")  # wrong depth: not part of the layout
    return tmp_path / "vox"


def test_voxceleb_layout_sorted_ids_and_speakers(vox):
    utts = corpus.list_voxceleb(vox)
    ids = [u.utterance_id for u in utts]
    assert (
        ids
        == sorted(ids)
        == [
            "id1/s/00001.WAV",
            "id10/sessA/00001.flac",
            "id2/sessA/00001.wav",
            "id2/sessB/00002.wav",
        ]
    )
    assert [u.speaker for u in utts] == ["id1", "id10", "id2", "id2"]
    assert all(u.path.is_absolute() and u.path.is_file() for u in utts)
    assert all(u.base == "" and u.family == "" for u in utts)
    # The wav folder itself is accepted as root, with identical ids.
    assert corpus.list_voxceleb(vox / "wav") == utts
    assert corpus.speaker_names(utts) == ["id1", "id10", "id2"]


def test_voxceleb_errors(tmp_path):
    with pytest.raises(corpus.CorpusError, match="not a directory"):
        corpus.list_voxceleb(tmp_path / "missing")
    _touch(tmp_path / "flat" / "a.wav")
    with pytest.raises(corpus.CorpusError, match=r"no audio files .*<speaker>/<session>/<file>"):
        corpus.list_voxceleb(tmp_path / "flat")


def test_authors_list_file_restricts_and_keeps_speakers(vox, tmp_path):
    lst = tmp_path / "train_list.txt"
    absolute = vox / "wav" / "id10" / "sessA" / "00001.flac"
    lst.write_text(f"# comment\nid2 id2/sessB/00002.wav\n\nspkX {absolute}\nid2 id2/missing.wav\n")
    utts = corpus.list_voxceleb(vox, list_file=lst)
    assert [(u.speaker, u.utterance_id) for u in utts] == [
        ("spkX", "id10/sessA/00001.flac"),  # absolute path inside wav/ -> relative id
        ("id2", "id2/missing.wav"),  # missing files are kept: preparation reports them
        ("id2", "id2/sessB/00002.wav"),
    ]
    lst.write_text("id2 id2/sessB/00002.wav extra\n")
    with pytest.raises(corpus.CorpusError, match=r"train_list.txt:1: expected '<speaker> <path>'"):
        corpus.list_voxceleb(vox, list_file=lst)
    lst.write_text("id2 a.wav\nid3 a.wav\n")
    with pytest.raises(corpus.CorpusError, match="'a.wav' is listed twice"):
        corpus.list_voxceleb(vox, list_file=lst)
    lst.write_text("# nothing\n")
    with pytest.raises(corpus.CorpusError, match="empty"):
        corpus.read_speaker_list(lst)
    with pytest.raises(corpus.CorpusError, match="no such list file"):
        corpus.read_speaker_list(tmp_path / "nope.txt")


def test_hierarchy_shapes(vox, tmp_path):
    meta = vox / "metadata.json"
    meta.write_text(
        json.dumps({"speakers": {"id2": {"base": "b1", "family": "f0", "split": "train"}}})
    )
    utts = corpus.list_voxceleb(vox)  # <root>/metadata.json is picked up by default
    assert {u.speaker: (u.base, u.family) for u in utts} == {
        "id1": ("", ""),
        "id10": ("", ""),
        "id2": ("b1", "f0"),
    }
    other = tmp_path / "list_shape.json"
    other.write_text(json.dumps({"speakers": [{"speaker": "id1", "family": "g"}]}))
    assert corpus.read_hierarchy(other) == {"id1": ("", "g")}
    other.write_text(json.dumps({"id1": {"base": "x", "family": "y"}}))
    assert corpus.read_hierarchy(other) == {"id1": ("x", "y")}
    other.write_text(json.dumps({"speakers": [{"who": "id1"}]}))
    with pytest.raises(corpus.CorpusError, match="no 'speaker'/'name'/'id'"):
        corpus.read_hierarchy(other)
    other.write_text("[1, 2]")
    with pytest.raises(corpus.CorpusError, match="expected"):
        corpus.read_hierarchy(other)
    other.write_text("{not json")
    with pytest.raises(corpus.CorpusError, match="cannot read the hierarchy metadata"):
        corpus.read_hierarchy(other)


@pytest.fixture()
def kaldi(tmp_path):
    audio = tmp_path / "audio"
    _touch(audio / "a.wav")
    _touch(audio / "b.wav")
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "wav.scp").write_text(f"uttB ../../audio/b.wav\nuttA {audio / 'a.wav'}\n")
    (data / "utt2spk").write_text("uttA spk1\nuttB spk0\n")
    return data


def test_kaldi_lists(kaldi, tmp_path):
    utts = corpus.list_kaldi(kaldi)  # the data directory
    assert [(u.utterance_id, u.speaker) for u in utts] == [("uttA", "spk1"), ("uttB", "spk0")]
    # Relative paths resolve against the wav.scp folder.
    assert [os.path.realpath(u.path) for u in utts] == [
        os.path.realpath(tmp_path / "audio" / n) for n in ("a.wav", "b.wav")
    ]
    assert corpus.list_kaldi(kaldi / "wav.scp", kaldi / "utt2spk") == utts
    base = corpus.list_kaldi(kaldi / "wav.scp", wav_root=tmp_path / "elsewhere")
    assert base[1].path == tmp_path / "elsewhere" / "../../audio/b.wav"


@pytest.mark.parametrize(
    ("wav_scp", "utt2spk", "message"),
    [
        ("u1 sox a.wav -t wav - |\n", "u1 s\n", r"wav.scp:1: utterance 'u1' is a piped command"),
        ("u1 a.wav\nu2 feats.ark:1234\n", "u1 s\nu2 s\n", r"wav.scp:2: .* points into an archive"),
        ("u1 a.wav\nu1 b.wav\n", "u1 s\n", r"wav.scp:2: duplicate utterance id 'u1'"),
        ("u1 a.wav\nu2 |gunzip -c a.gz |\n", "u1 s\nu2 s\n", r"wav.scp:2: .*piped command"),
        ("u1 a b.ark:12\n", "u1 s\n", r"wav.scp:1: utterance 'u1' points into an archive"),
        ("u1\n", "u1 s\n", r"wav.scp:1: expected '<utterance-id> <path>'"),
        ("u1 a.wav\nu2 b.wav\n", "u1 s\n", r"utt2spk: no speaker for 1 utterance\(s\).*'u2'"),
        ("u1 a.wav\n", "u1 s\nu3 s\n", r"wav.scp: no audio path for 1 utterance\(s\).*'u3'"),
        ("u1 a.wav\n", "u1 s x\n", r"utt2spk:1: expected '<utterance-id> <speaker-id>'"),
        ("", "", r"wav.scp: no utterances"),
    ],
)
def test_kaldi_errors(tmp_path, wav_scp, utt2spk, message):
    (tmp_path / "wav.scp").write_text(wav_scp)
    (tmp_path / "utt2spk").write_text(utt2spk)
    with pytest.raises(corpus.CorpusError, match=message):
        corpus.list_kaldi(tmp_path)


def test_kaldi_path_with_a_space(tmp_path):
    """Everything after the utterance id is the path, spaces included (as evaluation reads it)."""
    audio = tmp_path / "my corpus"
    _touch(audio / "spk 1" / "take  2.wav")
    _touch(audio / "b.wav")
    (tmp_path / "wav.scp").write_text(
        "u1 my corpus/spk 1/take  2.wav\n"
        f"u2\t{audio / 'b.wav'}\n"
        f"u3   {audio / 'spk 1' / 'take  2.wav'}   \n"
    )
    (tmp_path / "utt2spk").write_text("u1 s1\nu2 s2\nu3 s1\n")
    utts = corpus.list_kaldi(tmp_path)
    assert [(u.utterance_id, u.speaker, u.path) for u in utts] == [
        ("u1", "s1", audio / "spk 1" / "take  2.wav"),
        ("u2", "s2", audio / "b.wav"),
        ("u3", "s1", audio / "spk 1" / "take  2.wav"),
    ]
    assert corpus.read_wav_scp(tmp_path / "wav.scp") == {u.utterance_id: u.path for u in utts}


def test_wav_scp_not_utf8(tmp_path):
    (tmp_path / "wav.scp").write_bytes(b"u1 \xff\xfe.wav\n")
    with pytest.raises(corpus.CorpusError, match=r"wav.scp: not a UTF-8 text list file"):
        corpus.read_wav_scp(tmp_path / "wav.scp")


def test_kaldi_missing_files(tmp_path):
    with pytest.raises(corpus.CorpusError, match=r"wav.scp: no such list file"):
        corpus.list_kaldi(tmp_path)


def test_fingerprint_tracks_content(vox):
    utts = corpus.list_voxceleb(vox)
    fp = corpus.fingerprint(utts)
    assert corpus.fingerprint(corpus.list_voxceleb(vox)) == fp
    _touch(utts[0].path, b"longer content")  # size (and mtime) change
    assert corpus.fingerprint(utts) != fp
    assert corpus.fingerprint(utts, stat=False) == corpus.fingerprint(
        corpus.list_voxceleb(vox), stat=False
    )
