"""TFDS speaker-corpus datasets: prepare once (needs TensorFlow), read anywhere (does not).

:func:`prepare_dataset` lists a corpus (:mod:`hamjax.data.corpus`), decodes every file with
:func:`hamjax.data.audio.load_audio` (any rate or channel count -> 16 kHz mono) and writes
``array_record`` shards through a ``tfds.core.GeneratorBasedBuilder`` with features

==================  =============================================================
``audio``           ``Tensor(int16)`` -- ``[samples]`` 16 kHz mono PCM
``speaker``         ``ClassLabel`` index; names = the sorted speaker names
``speaker_name``    ``Text``
``utterance_id``    ``Text`` -- path relative to ``wav/`` (VoxCeleb) or Kaldi utt id
``base``            ``Text`` -- base-voice label, "" when unknown
``family``          ``Text`` -- family label, "" when unknown
==================  =============================================================

Layout on disk (TFDS's own): ``<data_dir>/<name>/<config>/<version>/``, where ``config`` is
``<source>-<digest>`` and the digest covers the source arguments *and* the corpus listing (paths,
sizes, mtimes). Two roots, two sources, or a corpus that changed on disk therefore become two
datasets under one name, never one overwriting the other; re-preparing an unchanged corpus is a
no-op. TFDS writes into ``incomplete.XXXXXX_<version>/`` and renames it only when everything
(shards, ``dataset_info.json`` and our ``speakers.txt``, ``skipped.txt``, ``hamjax_source.json``)
is written, so a failure midway leaves no dataset that looks complete.

Reading (:func:`load_dataset_info`, :func:`open_data_source`) goes through
``tfds.builder_from_directory(...).as_data_source()`` and plain JSON, and never imports
TensorFlow.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamjax import io_utils
from hamjax.data import corpus as corpus_lib
from hamjax.data.audio import SAMPLE_RATE, AudioError, load_audio

#: Version of the on-disk schema; bump it when the features change.
VERSION = "1.0.0"
SOURCES = ("voxceleb", "kaldi", "synthetic")
SPEAKERS_FILE = "speakers.txt"
SKIPPED_FILE = "skipped.txt"
SOURCE_FILE = "hamjax_source.json"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a prepared dataset holds; unpacks as ``(num_speakers, speaker_names, num_examples)``.

    Attributes:
      num_speakers: number of classes (``ClassLabel`` size), including speakers whose every file
        was skipped (so that labels stay stable whatever was skipped).
      speaker_names: ``speaker_names[i]`` is the name of label ``i`` (sorted).
      num_examples: examples in the ``train`` split.
      name: the TFDS dataset name.
      config: the builder-config name (``<source>-<digest>``).
      version: schema version.
      builder_dir: ``<data_dir>/<name>/<config>/<version>``.
      source: how it was prepared (source kind, paths, listing digest ...).
      skipped: ``(utterance_id, path, reason)`` for each file skipped with ``skip_bad``.
    """

    num_speakers: int
    speaker_names: tuple[str, ...]
    num_examples: int
    name: str
    config: str
    version: str
    builder_dir: Path
    source: Mapping[str, Any]
    skipped: tuple[tuple[str, str, str], ...] = ()

    def __iter__(self) -> Iterator[Any]:
        # The architecture contract returns (num_speakers, speaker_names, num_examples).
        return iter((self.num_speakers, list(self.speaker_names), self.num_examples))


def prepare_dataset(
    source: str = "voxceleb",
    root: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str],
    name: str,
    list_file: str | os.PathLike[str] | None = None,
    metadata: str | os.PathLike[str] | None = None,
    wav_scp: str | os.PathLike[str] | None = None,
    utt2spk: str | os.PathLike[str] | None = None,
    synthetic: Mapping[str, Any] | None = None,
    skip_bad: bool = False,
    num_threads: int | None = None,
) -> DatasetInfo:
    """Prepares (or finds already prepared) a TFDS ``array_record`` dataset of a speaker corpus.

    Args:
      source: ``"voxceleb"`` (``root`` in VoxCeleb layout, optional ``list_file`` in the authors'
        ``<speaker> <path>`` format), ``"kaldi"`` (``wav_scp`` or ``root`` = Kaldi data dir,
        optional ``utt2spk``; relative paths resolve against the ``wav.scp`` folder) or
        ``"synthetic"`` (:func:`hamjax.data.synthetic.generate_corpus` writes into ``root``
        with keyword arguments ``synthetic``; its ``train_list.txt`` selects the training
        speakers and its ``metadata.json`` gives the hierarchy).
      root: the corpus folder (see ``source``).
      data_dir: TFDS data directory (created if needed).
      name: dataset name (letters, digits, ``_``; starting with a letter).
      list_file: authors'-format list restricting a VoxCeleb-layout corpus.
      metadata: hierarchy JSON (see :func:`hamjax.data.corpus.read_hierarchy`); defaults to
        ``<root>/metadata.json`` if present.
      wav_scp: Kaldi ``wav.scp`` (or its folder).
      utt2spk: Kaldi ``utt2spk`` (default: beside ``wav.scp``).
      synthetic: keyword arguments of ``generate_corpus`` (``seed`` included).
      skip_bad: skip unreadable, empty or non-audio files (listed in ``skipped.txt`` and
        :attr:`DatasetInfo.skipped`) instead of stopping with an error naming the file.
      num_threads: threads decoding audio (default: ``min(8, cpu count)``); the examples are
        written in listing order whatever the thread count.

    Returns:
      the prepared dataset's :class:`DatasetInfo`.

    Raises:
      ValueError: unknown ``source``, invalid ``name``, or missing arguments.
      hamjax.data.corpus.CorpusError: the corpus layout or lists are wrong.
      hamjax.data.audio.AudioError: a file cannot be used and ``skip_bad`` is False (the message
        names the file); nothing is left that looks prepared.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: expected one of {SOURCES}")
    _check_name(name)
    data_dir = Path(data_dir).expanduser().absolute()
    desc: dict[str, Any] = {"source": source, "skip_bad": bool(skip_bad)}
    if source == "voxceleb":
        if root is None:
            raise ValueError("source='voxceleb' needs root=<corpus folder>")
        utts = corpus_lib.list_voxceleb(root, list_file=list_file, metadata=metadata)
        desc.update(
            root=str(corpus_lib.voxceleb_wav_root(root)),
            list_file=_abs(list_file),
            metadata=_abs(metadata),
        )
    elif source == "kaldi":
        if wav_scp is None and root is None:
            raise ValueError("source='kaldi' needs wav_scp=<wav.scp> or root=<Kaldi data dir>")
        utts = corpus_lib.list_kaldi(
            wav_scp if wav_scp is not None else root, utt2spk, metadata=metadata
        )
        desc.update(wav_scp=_abs(wav_scp or root), utt2spk=_abs(utt2spk), metadata=_abs(metadata))
    else:
        if root is None:
            raise ValueError("source='synthetic' needs root=<folder to generate the corpus in>")
        from hamjax.data import synthetic as synthetic_lib  # numpy/scipy only; loaded on demand

        kwargs = dict(synthetic or {})
        synthetic_lib.generate_corpus(root, **kwargs)
        root = Path(root)
        utts = corpus_lib.list_voxceleb(
            root, list_file=root / "train_list.txt", metadata=metadata or root / "metadata.json"
        )
        desc.update(root=str(root.absolute()), synthetic=kwargs)
    listing = corpus_lib.fingerprint(utts)
    digest = hashlib.sha256(
        json.dumps(desc, sort_keys=True, default=str).encode() + listing.encode()
    ).hexdigest()
    config = f"{source}-{digest[:16]}"
    desc.update(listing_sha256=listing, num_listed=len(utts))

    builder_dir = data_dir / name / config / VERSION
    if not _is_complete(builder_dir):
        builder = _make_builder(
            name=name,
            config=config,
            data_dir=data_dir,
            utterances=utts,
            source_desc=desc,
            skip_bad=skip_bad,
            num_threads=num_threads or min(8, os.cpu_count() or 1),
        )
        import tensorflow_datasets as tfds

        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    compute_stats=tfds.download.ComputeStatsMode.SKIP
                ),
                file_format=tfds.core.FileFormat.ARRAY_RECORD,
            )
        except OSError:
            # Another process preparing the same dataset renamed its copy into place first
            # (our rename then fails): the result is the same data, so use theirs.
            if not _is_complete(builder_dir):
                raise
    return load_dataset_info(data_dir, name, config=config)


def prepare_from_config(config: Any) -> DatasetInfo:
    """Prepares (``data.auto_prepare``) or just loads the dataset a training config names.

    Reads ``data.source``, ``data.root``, ``data.data_dir``, ``data.name``, ``data.skip_bad``,
    ``data.auto_prepare`` and, when present, ``data.config``, ``data.list_file`` (VoxCeleb
    source; default ``<root>/train_list.txt`` when that file exists, as in the authors' recipe),
    ``data.metadata``, ``data.utt2spk`` (Kaldi source) and ``data.synthetic.size`` (a preset of
    :mod:`hamjax.data.synthetic`, e.g. ``"quickstart"``, ``"tiny"``) with
    ``data.synthetic.overrides`` (``generate_corpus`` keyword arguments, ``seed`` included).

    Multi-host: preparation is not coordinated across processes; prepare on one host (or
    before launching) when ``data_dir`` is shared.

    Args:
      config: the training ``ConfigDict`` or its ``data`` section.
    """
    data = config.data if "data" in config else config
    data_dir = Path(str(data.data_dir)).expanduser()
    if not bool(data.get("auto_prepare", True)):
        return load_dataset_info(data_dir, str(data.name), data.get("config", None) or None)
    root = Path(str(data.root)).expanduser()
    kwargs: dict[str, Any] = {"metadata": data.get("metadata", None) or None}
    if data.source == "voxceleb":
        list_file = data.get("list_file", None) or None
        if list_file is None and (root / "train_list.txt").is_file():
            list_file = root / "train_list.txt"
        kwargs["list_file"] = list_file
    elif data.source == "kaldi":
        kwargs["utt2spk"] = data.get("utt2spk", None) or None
    elif data.source == "synthetic":
        from hamjax.data import synthetic as synthetic_lib

        syn = data.get("synthetic", None) or {}
        size = str(syn.get("size", "quickstart"))
        preset = getattr(synthetic_lib, size.upper(), None)
        if not isinstance(preset, Mapping):
            raise ValueError(
                f"data.synthetic.size={size!r}: expected a preset of hamjax.data.synthetic "
                "(e.g. 'quickstart', 'tiny')"
            )
        overrides = syn.get("overrides", None) or {}
        overrides = overrides.to_dict() if hasattr(overrides, "to_dict") else dict(overrides)
        kwargs["synthetic"] = {**preset, **overrides}
    return prepare_dataset(
        str(data.source),
        root,
        data_dir=data_dir,
        name=str(data.name),
        skip_bad=bool(data.get("skip_bad", False)),
        **kwargs,
    )


def load_dataset_info(
    data_dir: str | os.PathLike[str], name: str, config: str | None = None
) -> DatasetInfo:
    """Reads a prepared dataset's :class:`DatasetInfo` (no TensorFlow, no audio decoding).

    Args:
      data_dir: the TFDS data directory given to :func:`prepare_dataset`.
      name: the dataset name.
      config: the builder config (``<source>-<digest>``); may be omitted when ``name`` holds
        exactly one prepared config.

    Raises:
      FileNotFoundError: no complete dataset ``name`` (or ``name/config``) under ``data_dir``.
      ValueError: ``config`` omitted but several configs are prepared under ``name`` (they
        are listed with their sources).
    """
    _check_name(name)
    name_dir = Path(data_dir).expanduser().absolute() / name
    complete = {
        d.name: d / VERSION
        for d in (sorted(name_dir.iterdir()) if name_dir.is_dir() else [])
        if d.is_dir() and _is_complete(d / VERSION)
    }
    if config is None:
        if not complete:
            raise FileNotFoundError(
                f"{name_dir}: no prepared dataset {name!r} (version {VERSION}); run "
                "hamjax.data.prepare_dataset first"
            )
        if len(complete) > 1:
            listing = "; ".join(
                f"{c}: {json.loads((d / SOURCE_FILE).read_text()).get('root', '?')}"
                for c, d in complete.items()
            )
            raise ValueError(
                f"{name_dir}: dataset {name!r} has {len(complete)} prepared configs ({listing}); "
                "pass config=... (data.config) or use a different name per corpus"
            )
        config = next(iter(complete))
    if config not in complete:
        raise FileNotFoundError(
            f"{name_dir / config / VERSION}: not a complete prepared dataset "
            f"(complete configs: {sorted(complete) or 'none'})"
        )
    builder_dir = complete[config]
    speakers = tuple((builder_dir / SPEAKERS_FILE).read_text().splitlines())
    desc = json.loads((builder_dir / SOURCE_FILE).read_text())
    skipped = tuple(
        tuple(line.split("\t", 2))
        for line in (builder_dir / SKIPPED_FILE).read_text().splitlines()
        if line and not line.startswith("#")
    )
    return DatasetInfo(
        num_speakers=len(speakers),
        speaker_names=speakers,
        num_examples=int(desc["num_examples"]),
        name=name,
        config=config,
        version=VERSION,
        builder_dir=builder_dir,
        source=desc,
        skipped=skipped,  # type: ignore[arg-type]
    )


def open_data_source(info: DatasetInfo | str | os.PathLike[str], split: str = "train") -> Any:
    """Random-access reader of a prepared split (``len``, ``[i]`` -> dict of numpy values).

    ``tfds.builder_from_directory(...).as_data_source(split)``: an ``ArrayRecordDataSource``
    that grain can read from worker processes; TensorFlow is not imported.

    Args:
      info: a :class:`DatasetInfo` or a builder directory.
      split: the split name.
    """
    import tensorflow_datasets as tfds

    builder_dir = info.builder_dir if isinstance(info, DatasetInfo) else Path(info)
    if not _is_complete(builder_dir):
        raise FileNotFoundError(f"{builder_dir}: not a complete prepared dataset")
    return tfds.builder_from_directory(os.fspath(builder_dir)).as_data_source(split=split)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"name={name!r}: a dataset name must start with a letter and contain only letters, "
            "digits and '_'"
        )


def _abs(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def _is_complete(builder_dir: Path) -> bool:
    """A builder dir is complete once TFDS renamed it from incomplete.* with all our files."""
    return all(
        (builder_dir / f).is_file() for f in ("dataset_info.json", SPEAKERS_FILE, SOURCE_FILE)
    )


def _to_int16(wav: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16, lossless for 16-bit PCM sources (soundfile scales by 1/32768)."""
    return np.clip(np.rint(wav * 32768.0), -32768, 32767).astype(np.int16)


def _make_builder(
    *,
    name: str,
    config: str,
    data_dir: Path,
    utterances: Sequence[corpus_lib.Utterance],
    source_desc: Mapping[str, Any],
    skip_bad: bool,
    num_threads: int,
) -> Any:
    """Builds the (unregistered) GeneratorBasedBuilder instance for one corpus."""
    import tensorflow_datasets as tfds

    speakers = corpus_lib.speaker_names(utterances)

    class SpeakerCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """A speaker-classification corpus: 16 kHz int16 audio, speaker label, hierarchy."""

        VERSION = tfds.core.Version(VERSION)
        # Nothing is downloaded, so there are no URL checksums to look up. Setting these also
        # skips tfds' probe of the builder's source file (which needs importlib_resources, an
        # etils extra not installed with tensorflow-datasets).
        code_path = None
        url_infos = None

        def __init__(self) -> None:
            # Name and config are per instance (user-given), as in tfds' AdhocBuilder.
            self.name = name
            cfg = tfds.core.BuilderConfig(
                name=config, version=VERSION, description=json.dumps(source_desc, default=str)
            )
            self.BUILDER_CONFIGS = [cfg]
            self._skipped: list[tuple[str, str, str]] = []
            self._num_examples = 0
            self._speakers_seen: set[str] = set()
            super().__init__(data_dir=os.fspath(data_dir), config=cfg, file_format="array_record")

        def _info(self) -> Any:
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {
                        # A plain int16 Tensor, not tfds.features.Audio: Audio's constructor
                        # imports TensorFlow, which would make every reader load TF. Stored
                        # as raw bytes: tf.Example's int64_list costs ~10 ms per utterance to
                        # serialise (a Python list of ints) and 4x the disk of 2-byte PCM.
                        "audio": tfds.features.Tensor(
                            shape=(None,),
                            dtype=np.int16,
                            encoding=tfds.features.Encoding.BYTES,
                            doc=f"mono PCM at {SAMPLE_RATE} Hz (divide by 32768 for [-1, 1])",
                        ),
                        "speaker": tfds.features.ClassLabel(names=speakers),
                        "speaker_name": tfds.features.Text(),
                        "utterance_id": tfds.features.Text(),
                        "base": tfds.features.Text(),
                        "family": tfds.features.Text(),
                    }
                ),
                description="Speaker corpus prepared by hamjax from "
                + json.dumps(source_desc, default=str),
            )

        def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
            del dl_manager  # nothing is downloaded
            return {"train": self._generate_examples()}

        def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
            for utt, result in _decode_in_order(utterances, num_threads):
                if isinstance(result, AudioError):
                    if not skip_bad:
                        raise result
                    self._skipped.append((utt.utterance_id, str(utt.path), str(result)))
                    continue
                self._num_examples += 1
                self._speakers_seen.add(utt.speaker)
                yield (
                    utt.utterance_id,
                    {
                        "audio": result,
                        "speaker": utt.speaker,
                        "speaker_name": utt.speaker,
                        "utterance_id": utt.utterance_id,
                        "base": utt.base,
                        "family": utt.family,
                    },
                )
            if self._num_examples == 0:
                raise corpus_lib.CorpusError(
                    f"{source_desc.get('root') or source_desc.get('wav_scp')}: none of the "
                    f"{len(utterances)} listed files could be read (see the errors above)"
                )

        def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
            super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
            # self.data_path is still the incomplete.* dir here: these files are renamed into
            # place together with the shards, or removed with them on failure.
            out = self.data_path
            io_utils.write_text(out / SPEAKERS_FILE, "".join(f"{s}\n" for s in speakers))
            lines = [f"# {len(self._skipped)} file(s) skipped (utterance_id, path, reason)\n"]
            empty = sorted(set(speakers) - self._speakers_seen)
            if empty:
                # Their labels stay reserved (stable mapping) but no example carries them.
                lines.append(f"# speakers left without any example: {' '.join(empty)}\n")
            lines += [f"{u}\t{p}\t{r}\n" for u, p, r in self._skipped]
            io_utils.write_text(out / SKIPPED_FILE, "".join(lines))
            io_utils.write_json(
                out / SOURCE_FILE,
                {
                    **source_desc,
                    "num_examples": self._num_examples,
                    "num_speakers": len(speakers),
                    "sample_rate": SAMPLE_RATE,
                },
            )

    return SpeakerCorpus()


def _decode_in_order(
    utterances: Sequence[corpus_lib.Utterance], num_threads: int
) -> Iterator[tuple[corpus_lib.Utterance, np.ndarray | AudioError]]:
    """Decodes files on a thread pool (I/O and soxr release the GIL), yielding in list order.

    At most ``4 * num_threads`` decoded files are held at once, so memory stays bounded for
    corpora of any size.
    """

    def load(utt: corpus_lib.Utterance) -> np.ndarray | AudioError:
        try:
            return _to_int16(load_audio(utt.path))
        except AudioError as err:
            return err

    if num_threads <= 1:
        for utt in utterances:
            yield utt, load(utt)
        return
    window: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        it = iter(utterances)
        for utt in it:
            window.append((utt, pool.submit(load, utt)))
            if len(window) >= 4 * num_threads:
                break
        while window:
            utt, fut = window.popleft()
            nxt = next(it, None)
            if nxt is not None:
                window.append((nxt, pool.submit(load, nxt)))
            yield utt, fut.result()
