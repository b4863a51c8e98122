"""Speaker-verification trial lists: parsing (VoxCeleb and Kaldi formats) and audio lookup.

Two formats are accepted, detected per file from its lines:

- VoxCeleb (``veri_test2.txt``, ``list_test_all2.txt``, ``list_test_hard2.txt``, used unchanged):
  ``label enroll test`` with ``label`` 1 (target) or 0 (non-target) and the utterances given as
  paths relative to the audio root, e.g. ``1 id10270/x6uYqmx31kE/00001.wav id10270/...``.
- Kaldi (``trials`` files of the Kaldi/WeSpeaker recipes): ``enroll test target|nontarget``,
  the utterances given as utterance ids resolved through a ``wav.scp`` (``utt-id path``) or,
  without one, as paths relative to the audio root.

Blank lines and lines starting with ``#`` are ignored. Every error names the file, and for a
malformed line its 1-based line number and content.

A trial is an *unordered* pair: every score hamjax computes is symmetric in enrolment and test
(one embedding per utterance whichever side it is on; cosine and Poincaré distance are
symmetric; AS-norm averages both sides' normalisations), and "same speaker" is a symmetric
relation. So ``1 a b`` and ``1 b a`` are the same trial: a line repeating an earlier trial (in
either order, with the same label) is dropped with a logged warning (the count and the first
line numbers), since it would silently weigh that trial twice in EER and minDCF; a line giving
an earlier pair the other label (``1 a b`` then ``0 a b`` or ``0 b a``) is an error naming both
lines and the pair.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from hamjax.data import corpus as corpus_lib

__all__ = [
    "TrialList",
    "TrialListError",
    "read_trials",
    "read_wav_scp",
    "resolve_audio",
]

_KALDI_LABELS = {"target": 1, "nontarget": 0}
_VOX_LABELS = {"1": 1, "0": 0}
#: How many missing files an error message names before giving only the count.
MAX_LISTED = 5

_log = logging.getLogger(__name__)


class TrialListError(ValueError):
    """A trial list (or the audio it names) cannot be used; the message says why and where."""


@dataclasses.dataclass(frozen=True)
class TrialList:
    """A parsed trial list.

    Attributes:
      name: the list's name (file name without extension), used for output directories.
      path: the file it was read from.
      sha256: hex digest of the file's bytes (reports quote it so results are reproducible).
      format: ``"voxceleb"`` or ``"kaldi"``.
      enroll: ``[N]`` enrolment utterance of each trial (object array of str).
      test: ``[N]`` test utterance of each trial.
      labels: ``[N]`` int8, 1 = target, 0 = non-target.
      duplicates_removed: how many lines repeated an earlier trial (same pair, either order,
        same label) and were dropped; ``enroll``/``test``/``labels`` hold each trial once.
    """

    name: str
    path: Path
    sha256: str
    format: str
    enroll: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    duplicates_removed: int = 0

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def num_target(self) -> int:
        return int(self.labels.sum())

    @property
    def num_nontarget(self) -> int:
        return len(self) - self.num_target

    def utterances(self) -> list[str]:
        """The distinct utterances the list names, sorted (the extraction order)."""
        return sorted(set(self.enroll.tolist()) | set(self.test.tolist()))

    def indices(self, utterances: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Positions of each trial's enrolment and test utterance in ``utterances``.

        Args:
          utterances: a list containing every utterance of this trial list.

        Returns:
          ``(enroll_idx [N], test_idx [N])`` int64.

        Raises:
          TrialListError: an utterance of the list is not in ``utterances``.
        """
        names = np.asarray(utterances, dtype=object)
        order = np.argsort(names)
        sorted_names = names[order]

        def lookup(wanted: np.ndarray) -> np.ndarray:
            pos = np.searchsorted(sorted_names, wanted)
            pos = np.minimum(pos, len(sorted_names) - 1)
            missing = sorted_names[pos] != wanted
            if missing.any():
                absent = sorted(set(wanted[missing].tolist()))
                raise TrialListError(
                    f"{self.path}: {len(absent)} utterance(s) have no embedding, e.g. "
                    f"{absent[:MAX_LISTED]}"
                )
            return order[pos].astype(np.int64)

        return lookup(self.enroll), lookup(self.test)


def _detect(tokens: list[str]) -> str | None:
    """The format a 3-token line fits, or None when it fits both or neither."""
    vox = tokens[0] in _VOX_LABELS
    kaldi = tokens[2] in _KALDI_LABELS
    if vox and not kaldi:
        return "voxceleb"
    if kaldi and not vox:
        return "kaldi"
    return None


def read_trials(path: str | os.PathLike[str], name: str | None = None) -> TrialList:
    """Reads a VoxCeleb- or Kaldi-format trial list (format detected from its lines).

    Args:
      path: the trial-list file.
      name: the list's name; defaults to the file name without its extension.

    Returns:
      A :class:`TrialList` holding each trial once: a line repeating an earlier trial (the same
      pair in either order, the same label) is dropped, and a warning is logged with the count
      and the first line numbers.

    Raises:
      TrialListError: the file is missing or not UTF-8 text, a line is malformed (the message
        gives the file, line number and the expected forms), the two formats are mixed, two
        lines give the same pair (in either order) different labels (both line numbers and the
        pair are named), the list has no trials, or all trials have the same label.
    """
    path = Path(path)
    if not path.is_file():
        raise TrialListError(f"{path}: no such trial list")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TrialListError(f"{path}: not a UTF-8 text trial list ({err})") from err

    rows: list[tuple[int, list[str]]] = []
    fmt: str | None = None
    fmt_line = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        if len(tokens) != 3 or not _fits_any(tokens):
            raise TrialListError(
                f"{path}:{lineno}: malformed trial {stripped!r}; expected 'LABEL ENROLL TEST' "
                "with LABEL 0 or 1 (VoxCeleb) or 'ENROLL TEST target|nontarget' (Kaldi)"
            )
        if fmt is None:
            fmt = _detect(tokens)
            fmt_line = lineno
        rows.append((lineno, tokens))
    if not rows:
        raise TrialListError(f"{path}: empty trial list (no trials); expected one trial per line")
    fmt = fmt or "voxceleb"  # every line fitted both forms: '1 a target' reads the same as Vox

    arr = np.array([tokens for _, tokens in rows], dtype=object)
    if fmt == "voxceleb":
        raw_labels, enroll, test, table = arr[:, 0], arr[:, 1], arr[:, 2], _VOX_LABELS
        expected = f"'LABEL ENROLL TEST' with LABEL 0 or 1 (VoxCeleb, as line {fmt_line})"
    else:
        enroll, test, raw_labels, table = arr[:, 0], arr[:, 1], arr[:, 2], _KALDI_LABELS
        expected = f"'ENROLL TEST target|nontarget' (Kaldi, as line {fmt_line})"
    valid = np.fromiter((lab in table for lab in raw_labels), dtype=bool, count=len(rows))
    if not valid.all():
        i = int(np.flatnonzero(~valid)[0])
        lineno, tokens = rows[i]
        raise TrialListError(
            f"{path}:{lineno}: malformed trial {' '.join(tokens)!r}; expected {expected}"
        )
    labels = np.fromiter((table[lab] for lab in raw_labels), dtype=np.int8, count=len(rows))
    keep = _unique_trials(path, rows, enroll, test, labels)
    duplicates = len(rows) - int(keep.size)
    if duplicates:
        enroll, test, labels = enroll[keep], test[keep], labels[keep]
    n_tar = int(labels.sum())
    if n_tar == 0 or n_tar == labels.size:
        have, lack = ("target", "non-target") if n_tar else ("non-target", "target")
        raise TrialListError(
            f"{path}: all {labels.size} trials are {have} (no {lack} trial); EER and minDCF "
            "need both target and non-target trials"
        )
    return TrialList(
        name=name or path.stem,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        enroll=enroll,
        test=test,
        labels=labels,
        duplicates_removed=duplicates,
    )


def _unique_trials(
    path: Path,
    rows: Sequence[tuple[int, list[str]]],
    enroll: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
) -> np.ndarray:
    """Rows to keep: the first line of each unordered pair; repeats are logged, conflicts raise.

    Returns:
      ``[M]`` int64 row indices, ascending (file order is kept).

    Raises:
      TrialListError: two lines give one pair (in either order) different labels.
    """
    first: dict[tuple[str, str], int] = {}
    repeats: list[tuple[int, int]] = []  # (row, row it repeats)
    for i, (a, b) in enumerate(zip(enroll.tolist(), test.tolist(), strict=True)):
        j = first.setdefault((a, b) if a <= b else (b, a), i)
        if j == i:
            continue
        if labels[j] != labels[i]:
            (line_j, tokens_j), (line_i, tokens_i) = rows[j], rows[i]
            raise TrialListError(
                f"{path}: lines {line_j} and {line_i} contradict each other: the pair "
                f"({a}, {b}) is labelled {'target' if labels[j] else 'non-target'} on line "
                f"{line_j} ({' '.join(tokens_j)!r}) and "
                f"{'target' if labels[i] else 'non-target'} on line {line_i} "
                f"({' '.join(tokens_i)!r}); a trial is an unordered pair and needs one label"
            )
        repeats.append((i, j))
    if not repeats:
        return np.arange(len(rows), dtype=np.int64)
    examples = ", ".join(f"line {rows[i][0]} = line {rows[j][0]}" for i, j in repeats[:MAX_LISTED])
    _log.warning(
        "%s: %d duplicate trial line(s) dropped (the same pair, in either order, with the same "
        "label as an earlier line; kept once so no trial counts twice), e.g. %s",
        path,
        len(repeats),
        examples,
    )
    drop = np.zeros(len(rows), dtype=bool)
    drop[[i for i, _ in repeats]] = True
    return np.flatnonzero(~drop)


def _fits_any(tokens: list[str]) -> bool:
    return tokens[0] in _VOX_LABELS or tokens[2] in _KALDI_LABELS


def read_wav_scp(path: str | os.PathLike[str]) -> dict[str, Path]:
    """Reads a Kaldi ``wav.scp`` (``utt-id path`` per line) into ``{utt-id: path}``.

    The same reader and rule as training (:func:`hamjax.data.corpus.read_wav_scp`): everything
    after the utterance id is the path (spaces included), relative paths are taken relative to
    the file's directory, and piped commands (``utt sox ... |``) and archive offsets
    (``foo.ark:12``) are refused: hamjax reads audio files, so produce them first.

    Raises:
      TrialListError: missing file, a malformed, piped or archive line (file and line number),
        or a duplicated utterance id.
    """
    try:
        return corpus_lib.read_wav_scp(path)
    except corpus_lib.CorpusError as err:
        raise TrialListError(str(err)) from err


def resolve_audio(
    utterances: Iterable[str],
    audio_root: str | os.PathLike[str] | None,
    wav_scp: Mapping[str, str | os.PathLike[str]] | None = None,
    *,
    source: str = "trial list",
) -> dict[str, Path]:
    """Maps utterance names to existing audio files, failing once for all missing ones.

    Args:
      utterances: names from a trial list (paths or Kaldi utterance ids).
      audio_root: directory the names are relative to (ignored for absolute names and for
        names found in ``wav_scp``).
      wav_scp: optional ``{utt-id: path}`` (see :func:`read_wav_scp`), consulted first.
      source: what the names came from, for the error message.

    Returns:
      ``{name: path}`` for every name.

    Raises:
      TrialListError: some files do not exist; the message gives the count, the first
        :data:`MAX_LISTED` names and where they were looked for.
    """
    root = Path(audio_root) if audio_root is not None else None
    resolved: dict[str, Path] = {}
    missing: list[str] = []
    for utt in utterances:
        if wav_scp is not None and utt in wav_scp:
            candidate = Path(wav_scp[utt])
        elif root is not None and not os.path.isabs(utt):
            candidate = root / utt
        else:
            candidate = Path(utt)
        if candidate.is_file():
            resolved[utt] = candidate
        else:
            missing.append(utt)
    if missing:
        where = f"under {root}" if root is not None else "(no audio root given)"
        if wav_scp is not None:
            where += " or in the wav.scp"
        raise TrialListError(
            f"{source}: {len(missing)} of {len(missing) + len(resolved)} audio file(s) missing "
            f"{where}, e.g. {missing[:MAX_LISTED]}"
        )
    return resolved
