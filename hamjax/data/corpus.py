"""Listing speaker corpora: which audio files exist, whose voice each one is, and its hierarchy.

Three on-disk conventions are understood, all reduced to one list of :class:`Utterance`:

* **VoxCeleb layout** -- ``<root>/wav/<speaker>/<session>/<n>.wav`` (``root`` may also be the
  ``wav`` folder itself). The utterance id is the path relative to the ``wav`` folder, exactly as
  VoxCeleb trial lists name files (``id10001/1zcIwhmdeo4/00001.wav``).
* **The authors' list file** -- one ``<speaker> <path>`` per line, path relative to the ``wav``
  folder (or absolute); the ECAPA-TDNN ``train_list.txt`` format. Restricts training to the
  listed files (e.g. only the training speakers of a corpus that also holds test speakers).
* **Kaldi data directory** -- ``wav.scp`` (``<utt> <path>``) and ``utt2spk`` (``<utt> <spk>``).
  Only plain file paths are supported: Kaldi's piped commands (``sox ... |``) and archive
  offsets (``foo.ark:123``) are rejected with an error naming the line. :func:`read_wav_scp` is
  the one ``wav.scp`` reader of hamjax: training (:func:`list_kaldi`) and evaluation
  (:func:`hamjax.trials.read_wav_scp`) both use it, so a file either side accepts the other does.

Hierarchy labels (base voice, family, e.g. language or gender group) come from an optional
``metadata.json``; see :func:`read_hierarchy` for the accepted shapes. Nothing here reads audio:
preparation (:mod:`hamjax.data.tfds_builder`) does, so that a bad file is reported once, with its
name, at the point where it is decoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: File extensions listed from a VoxCeleb-layout folder (VoxCeleb1 ships WAV, VoxCeleb2 M4A).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".m4a", ".ogg", ".mp3")


class CorpusError(ValueError):
    """A corpus folder or list file does not have the expected layout or contents."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One audio file of a speaker corpus.

    Attributes:
      path: absolute path of the audio file.
      speaker: speaker name (VoxCeleb id, Kaldi speaker id ...).
      utterance_id: stable id of the file: its path relative to the ``wav`` folder for
        VoxCeleb-style corpora, the Kaldi utterance id for Kaldi data directories.
      base: base-voice label of the speaker ("" when unknown).
      family: family label of the speaker's base voice ("" when unknown).
    """

    path: Path
    speaker: str
    utterance_id: str
    base: str = ""
    family: str = ""


def voxceleb_wav_root(root: str | os.PathLike[str]) -> Path:
    """Returns the folder holding ``<speaker>/<session>/<file>``: ``root/wav`` if it exists.

    Raises:
      CorpusError: ``root`` is not a directory.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CorpusError(f"corpus root {root}: not a directory")
    wav = root / "wav"
    return wav.resolve() if wav.is_dir() else root.resolve()


def list_voxceleb(
    root: str | os.PathLike[str],
    *,
    list_file: str | os.PathLike[str] | None = None,
    metadata: str | os.PathLike[str] | Mapping[str, tuple[str, str]] | None = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
) -> list[Utterance]:
    """Lists a VoxCeleb-layout corpus, optionally restricted to the authors' list file.

    Args:
      root: the corpus root (holding ``wav/``) or the ``wav`` folder itself.
      list_file: optional ``<speaker> <path>`` list (see :func:`read_speaker_list`); when given,
        exactly the listed files are used, in list order, and they need not all exist yet (a
        missing file is reported by preparation, like any unreadable one).
      metadata: optional hierarchy: a ``metadata.json`` path or a mapping
        ``speaker -> (base, family)``. Defaults to ``<root>/metadata.json`` when that exists.
      extensions: audio file suffixes to list (case-insensitive) when there is no list file.

    Returns:
      utterances sorted by utterance id (list-file order is not kept: sorting makes the listing,
      and hence the prepared dataset, independent of file-system order).

    Raises:
      CorpusError: ``root`` is missing, holds no audio in the expected layout, or the list file
        is malformed.
    """
    root = Path(root).expanduser()
    wav_root = voxceleb_wav_root(root)
    if metadata is None and (root / "metadata.json").is_file():
        metadata = root / "metadata.json"
    hierarchy = _as_hierarchy(metadata)
    if list_file is not None:
        pairs = read_speaker_list(list_file)
        utts = []
        for speaker, rel in pairs:
            path = Path(rel)
            path = path if path.is_absolute() else wav_root / path
            utt_id = _relative_id(path, wav_root)
            utts.append(_with_hierarchy(Utterance(path, speaker, utt_id), hierarchy))
    else:
        suffixes = {e.lower() for e in extensions}
        utts = []
        # Exactly three levels: speaker / session (YouTube id) / file, as VoxCeleb ships.
        for path in wav_root.glob("*/*/*"):
            if path.suffix.lower() in suffixes and path.is_file():
                rel = path.relative_to(wav_root)
                utts.append(
                    _with_hierarchy(Utterance(path, rel.parts[0], rel.as_posix()), hierarchy)
                )
        if not utts:
            raise CorpusError(
                f"{wav_root}: no audio files ({', '.join(sorted(suffixes))}) in the VoxCeleb "
                "layout <speaker>/<session>/<file>"
            )
    return _sorted_unique(utts, origin=str(list_file or wav_root))


def read_speaker_list(list_file: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Reads the authors' training list: one ``<speaker> <path>`` per line.

    Blank lines and lines starting with ``#`` are ignored.

    Returns:
      ``(speaker, path)`` pairs in file order.

    Raises:
      CorpusError: the file is missing, empty, or a line does not have exactly two fields.
    """
    list_file = Path(list_file)
    pairs = []
    for lineno, fields in _read_table(list_file):
        if len(fields) != 2:
            raise CorpusError(
                f"{list_file}:{lineno}: expected '<speaker> <path>', got {len(fields)} fields"
            )
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise CorpusError(f"{list_file}: the speaker list is empty")
    return pairs


def list_kaldi(
    wav_scp: str | os.PathLike[str],
    utt2spk: str | os.PathLike[str] | None = None,
    *,
    wav_root: str | os.PathLike[str] | None = None,
    metadata: str | os.PathLike[str] | Mapping[str, tuple[str, str]] | None = None,
) -> list[Utterance]:
    """Lists a Kaldi data directory from its ``wav.scp`` and ``utt2spk``.

    Args:
      wav_scp: the ``wav.scp`` file, or the Kaldi data directory holding ``wav.scp`` and
        ``utt2spk``.
      utt2spk: the ``utt2spk`` file (default: next to ``wav.scp``).
      wav_root: folder that relative paths in ``wav.scp`` are relative to (Kaldi resolves them
        against the recipe directory, which a data directory does not record). Default: the
        folder holding ``wav.scp``.
      metadata: optional hierarchy, as in :func:`list_voxceleb`.

    Returns:
      utterances sorted by Kaldi utterance id.

    Raises:
      CorpusError: a missing file, a malformed or duplicate line, a piped command or archive
        offset in ``wav.scp``, or utterances present in one file but not the other.
    """
    wav_scp = Path(wav_scp).expanduser()
    if wav_scp.is_dir():
        wav_scp = wav_scp / "wav.scp"
    utt2spk = Path(utt2spk) if utt2spk is not None else wav_scp.with_name("utt2spk")
    paths = read_wav_scp(wav_scp, wav_root=wav_root)
    speakers: dict[str, str] = {}
    for lineno, fields in _read_table(utt2spk):
        if len(fields) != 2:
            raise CorpusError(f"{utt2spk}:{lineno}: expected '<utterance-id> <speaker-id>'")
        if fields[0] in speakers:
            raise CorpusError(f"{utt2spk}:{lineno}: duplicate utterance id {fields[0]!r}")
        speakers[fields[0]] = fields[1]
    if not paths:
        raise CorpusError(f"{wav_scp}: no utterances")
    missing = sorted(set(paths) - set(speakers))
    if missing:
        raise CorpusError(
            f"{utt2spk}: no speaker for {len(missing)} utterance(s) of {wav_scp}, "
            f"e.g. {missing[:3]}"
        )
    extra = sorted(set(speakers) - set(paths))
    if extra:
        raise CorpusError(
            f"{wav_scp}: no audio path for {len(extra)} utterance(s) of {utt2spk}, e.g. {extra[:3]}"
        )
    hierarchy = _as_hierarchy(metadata)
    utts = [
        _with_hierarchy(Utterance(paths[u].absolute(), speakers[u], u), hierarchy) for u in paths
    ]
    return _sorted_unique(utts, origin=str(wav_scp))


def read_wav_scp(
    wav_scp: str | os.PathLike[str], *, wav_root: str | os.PathLike[str] | None = None
) -> dict[str, Path]:
    """Reads a Kaldi ``wav.scp`` into ``{utterance-id: audio path}`` (file order).

    The rule, for training and evaluation alike: a line is ``<utterance-id><whitespace><rest>``
    (blank lines and ``#`` comments are skipped, surrounding whitespace is stripped) and
    ``rest`` is the audio file's path, spaces inside it included, except when

    * it ends with ``|``: a Kaldi piped command (``sox a.flac -t wav - |``), which hamjax does
      not run -- an error says to run the command first and list the file it writes;
    * it is an archive offset (``feats.ark:1234``) -- an error says to extract the audio to
      files first.

    Relative paths are taken relative to ``wav_root`` (default: the folder holding ``wav.scp``);
    ``~`` is expanded. Nothing is checked for existence here: missing files are reported where
    the audio is read (preparation) or looked up (:func:`hamjax.trials.resolve_audio`), all at
    once.

    Args:
      wav_scp: the ``wav.scp`` file.
      wav_root: folder relative paths are relative to.

    Returns:
      ``{utterance-id: path}``.

    Raises:
      CorpusError: the file is missing or not UTF-8; a line without a path, with a piped
        command or an archive offset, or repeating an utterance id (file and line named).
    """
    wav_scp = Path(wav_scp).expanduser()
    base = Path(wav_root).expanduser() if wav_root is not None else wav_scp.parent
    paths: dict[str, Path] = {}
    first_line: dict[str, int] = {}
    for lineno, line in _read_lines(wav_scp):
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise CorpusError(f"{wav_scp}:{lineno}: expected '<utterance-id> <path>', got {line!r}")
        utt, rest = fields
        if rest.endswith("|"):
            raise CorpusError(
                f"{wav_scp}:{lineno}: utterance {utt!r} is a piped command ({rest!r}); hamjax "
                "reads audio files, not commands -- run the command first to write the audio to "
                "a file (e.g. '... -t wav utt.wav' instead of '... -t wav - |') and put that "
                "file's path in wav.scp"
            )
        if _is_ark_offset(rest):
            raise CorpusError(
                f"{wav_scp}:{lineno}: utterance {utt!r} points into an archive ({rest!r}); hamjax "
                "reads plain audio files -- extract each utterance to its own file first and put "
                "those paths in wav.scp"
            )
        if utt in paths:
            raise CorpusError(
                f"{wav_scp}:{lineno}: duplicate utterance id {utt!r} (first on line "
                f"{first_line[utt]})"
            )
        path = Path(rest).expanduser()
        paths[utt] = path if path.is_absolute() else base / path
        first_line[utt] = lineno
    return paths


def read_hierarchy(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Reads ``speaker -> (base, family)`` from a JSON metadata file.

    Accepted shapes (the first matching wins):

    * ``{"speakers": {spk: {"base": b, "family": f, ...}, ...}, ...}`` (the synthetic corpus);
    * ``{"speakers": [{"speaker"|"name"|"id": spk, "base": b, "family": f}, ...]}``;
    * ``{spk: {"base": b, "family": f}, ...}`` at the top level.

    Missing ``base``/``family`` entries become "".

    Raises:
      CorpusError: unreadable JSON, or none of the shapes above.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CorpusError(f"{path}: cannot read the hierarchy metadata: {err}") from err
    table: Any = obj.get("speakers", obj) if isinstance(obj, dict) else None
    if isinstance(table, list):
        out = {}
        for entry in table:
            key = None
            if isinstance(entry, dict):
                key = next((k for k in ("speaker", "name", "id") if k in entry), None)
            if key is None:
                raise CorpusError(f"{path}: speaker entry {entry!r} has no 'speaker'/'name'/'id'")
            out[str(entry[key])] = (str(entry.get("base", "")), str(entry.get("family", "")))
        return out
    if isinstance(table, dict) and all(isinstance(v, dict) for v in table.values()):
        return {
            str(k): (str(v.get("base", "")), str(v.get("family", ""))) for k, v in table.items()
        }
    raise CorpusError(
        f"{path}: expected {{'speakers': {{speaker: {{'base': ..., 'family': ...}}}}}} or a "
        "list of speaker entries"
    )


def speaker_names(utterances: Iterable[Utterance]) -> list[str]:
    """The sorted, de-duplicated speaker names: index ``i`` of this list is class label ``i``.

    Sorting (rather than first-seen order) makes the mapping independent of listing order, so the
    same corpus always gets the same labels.
    """
    return sorted({u.speaker for u in utterances})


def fingerprint(utterances: Sequence[Utterance], *, stat: bool = True) -> str:
    """A SHA-256 hex digest of the listing (ids, speakers, paths and, if ``stat``, size+mtime).

    Two listings with the same fingerprint describe the same data; preparation names datasets by
    it, so a corpus that changed on disk is prepared anew instead of silently reusing the old one.
    Missing files are fingerprinted as such (preparation then reports them).
    """
    h = hashlib.sha256()
    for u in utterances:
        h.update(f"{u.utterance_id}\0{u.speaker}\0{u.base}\0{u.family}\0{u.path}\0".encode())
        if stat:
            try:
                st = u.path.stat()
                h.update(f"{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(b"missing\n")
    return h.hexdigest()


def _read_lines(path: Path) -> Iterable[tuple[int, str]]:
    """Yields ``(line number, stripped line)`` of a UTF-8 text file, skipping blanks and ``#``."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such list file")
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if line and not line.startswith("#"):
                    yield lineno, line
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not a UTF-8 text list file ({err})") from err


def _read_table(path: Path) -> Iterable[tuple[int, list[str]]]:
    """Yields ``(line number, whitespace-split fields)`` of a text table, skipping blanks/#."""
    for lineno, line in _read_lines(path):
        yield lineno, line.split()


def _is_ark_offset(entry: str) -> bool:
    """True for Kaldi ``file.ark:1234`` style entries (archive byte offsets)."""
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and head.endswith(".ark")


def _relative_id(path: Path, wav_root: Path) -> str:
    try:
        return path.resolve().relative_to(wav_root).as_posix()
    except ValueError:
        return path.as_posix()


def _as_hierarchy(
    metadata: str | os.PathLike[str] | Mapping[str, tuple[str, str]] | None,
) -> Mapping[str, tuple[str, str]]:
    if metadata is None:
        return {}
    if isinstance(metadata, Mapping):
        return metadata
    return read_hierarchy(metadata)


def _with_hierarchy(utt: Utterance, hierarchy: Mapping[str, tuple[str, str]]) -> Utterance:
    base, family = hierarchy.get(utt.speaker, ("", ""))
    return dataclasses.replace(utt, base=base, family=family)


def _sorted_unique(utts: list[Utterance], origin: str) -> list[Utterance]:
    utts = sorted(utts, key=lambda u: u.utterance_id)
    for a, b in zip(utts, utts[1:], strict=False):
        if a.utterance_id == b.utterance_id:
            raise CorpusError(f"{origin}: utterance {a.utterance_id!r} is listed twice")
    return utts
