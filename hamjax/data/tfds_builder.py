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

Interruptions: SIGTERM during preparation exits with status 143 after TFDS has removed its
``incomplete.*`` folder. A run killed outright (SIGKILL, power loss) cannot clean up; the next
preparation under the same name removes such leftovers (and logs what it removed). Preparations
of one dataset are serialised by a lock file in ``<data_dir>/.hamjax_locks/``, so a leftover is
never a concurrent run's work in progress.

Skipped files: audio shorter than ``min_seconds`` (default
:data:`hamjax.data.audio.MIN_SECONDS`) is always left out of training data, and with
``skip_bad=True`` unreadable files are too. Every skip is logged (count and first names) and
recorded in ``skipped.txt``, ``hamjax_source.json`` (``num_skipped``) and
:attr:`DatasetInfo.skipped`.

Reading (:func:`load_dataset_info`, :func:`open_data_source`) goes through
``tfds.builder_from_directory(...).as_data_source()`` and plain JSON, and never imports
TensorFlow.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamjax import io_utils
from hamjax.data import corpus as corpus_lib
from hamjax.data.audio import MIN_SECONDS, SAMPLE_RATE, AudioError, check_duration, load_audio

#: Version of the on-disk schema; bump it when the features change.
VERSION = "1.0.0"
SOURCES = ("voxceleb", "kaldi", "synthetic")
#: ``data.prepare.runner``: hamjax's in-process preparation, or an Apache Beam pipeline.
RUNNERS = ("direct", "beam")
#: Seconds between two progress lines of a preparation.
PROGRESS_EVERY_S = 30.0
SPEAKERS_FILE = "speakers.txt"
SKIPPED_FILE = "skipped.txt"
SOURCE_FILE = "hamjax_source.json"
#: Folder (under ``data_dir``) of the lock files serialising preparations of one dataset.
LOCK_DIR = ".hamjax_locks"
#: How many file names a log line about skipped files shows before giving only the count.
MAX_LOGGED = 5
_INCOMPLETE = "incomplete."  # TFDS's prefix for a builder dir being written
# TFDS's BeamWriter's error for an empty split (tensorflow_datasets/core/writer.py).
_TFDS_NO_EXAMPLES = "The total number of generated examples is 0"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_log = logging.getLogger(__name__)
# Progress and summary lines (INFO) apart from the warnings about skipped files, so that either
# can be silenced alone.
_progress_log = logging.getLogger(__name__ + ".progress")


class _QuietTfdsConfigNotice(logging.Filter):
    """Drops TFDS's "Using custom data configuration: BuilderConfig(<long JSON>)" warning:
    every hamjax dataset has a custom configuration (the source and listing digest)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_QuietTfdsConfigNotice())


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
      skipped: ``(utterance_id, path, reason)`` for each file left out: shorter than the
        minimum duration, or unreadable with ``skip_bad``.
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
    min_seconds: float = MIN_SECONDS,
    num_threads: int | None = None,
    runner: str = "direct",
    beam_options: str | Sequence[str] = "",
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
      skip_bad: skip unreadable, empty or non-audio files instead of stopping with an error
        naming the file.
      min_seconds: audio shorter than this (after conversion to 16 kHz) is left out of the
        training data whatever ``skip_bad`` says; 0 keeps everything. Part of the dataset's
        identity (the config digest).
      num_threads: threads decoding audio (default: ``min(8, cpu count)``; ``runner="direct"``
        only); the dataset is the same whatever the thread count.
      runner: ``"direct"``: hamjax's in-process preparation (``num_threads`` threads in this
        process). ``"beam"``: an Apache Beam pipeline (:mod:`hamjax.data.beam_prepare`) on the
        runner ``beam_options`` names -- Beam's own DirectRunner by default, which is *not*
        what ``"direct"`` means here. Both write the same dataset, example for example, and
        neither is part of the dataset's identity: a dataset prepared one way is reused the
        other way.
      beam_options: Beam pipeline options (``runner="beam"`` only), a shell-quoted string or a
        list of flags, e.g. ``"--direct_num_workers=2 --direct_running_mode=multi_processing"``
        or ``"--runner=FlinkRunner --flink_master=host:8081"``. ``data_dir`` and the corpus
        must be on a file system every worker sees.

    Every skipped file is logged (a warning with the count and the first names) and listed in
    ``skipped.txt`` and :attr:`DatasetInfo.skipped`. SIGTERM during preparation (from the main
    thread) exits with status 143 and leaves no partial dataset; ``incomplete.*`` folders left by
    a killed run are removed (and logged) by the next preparation of the dataset. With a Beam
    cluster runner the job itself may outlive the driver (cancel it with the cluster's tools);
    only the driver marks a dataset complete, so what it writes is never taken for a dataset.
    Progress is logged every :data:`PROGRESS_EVERY_S` seconds (by each worker with Beam).

    Returns:
      the prepared dataset's :class:`DatasetInfo`.

    Raises:
      ValueError: unknown ``source`` or ``runner``, invalid ``name``, ``min_seconds``,
        ``beam_options`` or missing arguments.
      ImportError: ``runner="beam"`` without Apache Beam installed.
      hamjax.data.corpus.CorpusError: the corpus layout or lists are wrong, or no listed file
        could be used.
      hamjax.data.audio.AudioError: a file cannot be used and ``skip_bad`` is False (the message
        names the file); nothing is left that looks prepared.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: expected one of {SOURCES}")
    _check_name(name)
    min_seconds = float(min_seconds)
    if not 0.0 <= min_seconds < float("inf"):
        raise ValueError(f"min_seconds={min_seconds!r}: expected a finite number of seconds >= 0")
    options = check_runner(runner, beam_options)  # before any work: a typo fails in seconds
    data_dir = Path(data_dir).expanduser().absolute()
    with _exit_on_sigterm(on_signal=_stop_beam_workers if options is not None else None):
        utts, desc = _list_corpus(
            source,
            root,
            list_file=list_file,
            metadata=metadata,
            wav_scp=wav_scp,
            utt2spk=utt2spk,
            synthetic=synthetic,
        )
        desc.update(skip_bad=bool(skip_bad), min_seconds=min_seconds)
        listing = corpus_lib.fingerprint(utts)
        digest = hashlib.sha256(
            json.dumps(desc, sort_keys=True, default=str).encode() + listing.encode()
        ).hexdigest()
        config = f"{source}-{digest[:16]}"
        desc.update(listing_sha256=listing, num_listed=len(utts))
        fresh = False
        if not _is_complete(data_dir / name / config / VERSION):
            with _preparation_lock(data_dir, name, config):
                _remove_stale_incomplete(data_dir, name, held_config=config)
                # Another process may have finished this dataset while we waited for the lock.
                if not _is_complete(data_dir / name / config / VERSION):
                    _progress_log.info(
                        "preparing %d utterances from %s into %s (runner=%s)",
                        len(utts),
                        desc.get("root") or desc.get("wav_scp") or source,
                        data_dir / name / config,
                        runner,
                    )
                    start = time.monotonic()
                    _build(
                        name=name,
                        config=config,
                        data_dir=data_dir,
                        utterances=utts,
                        source_desc=desc,
                        skip_bad=skip_bad,
                        min_seconds=min_seconds,
                        num_threads=num_threads or min(8, os.cpu_count() or 1),
                        beam_options=options,
                    )
                    fresh = True
                    seconds = time.monotonic() - start
    info = load_dataset_info(data_dir, name, config=config)
    if fresh:
        _progress_log.info(
            "dataset %s (%s): prepared %d examples from %d listed files in %.1f s (%.1f files/s, "
            "runner=%s) in %s",
            name,
            config,
            info.num_examples,
            len(utts),
            seconds,
            len(utts) / max(seconds, 1e-9),
            runner,
            info.builder_dir,
        )
    else:
        _progress_log.info(
            "dataset %s (%s): already prepared in %s", name, config, info.builder_dir
        )
    _log_skipped(info, fresh=fresh)
    return info


def check_runner(runner: str, beam_options: str | Sequence[str] = "") -> Any:
    """Checks ``runner`` / ``beam_options``; returns Beam ``PipelineOptions`` or None (direct).

    Raises:
      ValueError: ``runner`` not in :data:`RUNNERS`, options given to the in-process runner,
        or an option Beam does not know.
      ImportError: ``runner="beam"`` without Apache Beam installed.
    """
    if runner not in RUNNERS:
        raise ValueError(
            f"runner={runner!r}: expected one of {RUNNERS} ('direct' = hamjax's in-process "
            "preparation; 'beam' = Apache Beam on the runner that beam_options name)"
        )
    if runner == "direct":
        if beam_options:
            raise ValueError(
                f"beam_options={beam_options!r} given with runner='direct', which does not use "
                "Beam: set runner='beam' (data.prepare.runner) or drop the options"
            )
        return None
    from hamjax.data import beam_prepare

    return beam_prepare.pipeline_options(beam_options)


def runner_kwargs(data: Any) -> dict[str, Any]:
    """``runner`` / ``beam_options`` of :func:`prepare_dataset` from a ``data`` config section.

    Configs without a ``data.prepare`` section (saved before it existed) mean the in-process
    runner.
    """
    prepare = data.get("prepare", None) or {}
    return {
        "runner": str(prepare.get("runner", "direct")),
        "beam_options": str(prepare.get("beam_options", "") or ""),
    }


def _list_corpus(
    source: str,
    root: str | os.PathLike[str] | None,
    *,
    list_file: str | os.PathLike[str] | None,
    metadata: str | os.PathLike[str] | None,
    wav_scp: str | os.PathLike[str] | None,
    utt2spk: str | os.PathLike[str] | None,
    synthetic: Mapping[str, Any] | None,
) -> tuple[list[corpus_lib.Utterance], dict[str, Any]]:
    """Lists the corpus of :func:`prepare_dataset` (generating a synthetic one first).

    Returns:
      ``(utterances, source description)``; the description identifies the dataset.
    """
    desc: dict[str, Any] = {"source": source}
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
    return utts, desc


def _build(
    *, data_dir: Path, name: str, config: str, beam_options: Any = None, **builder_kwargs: Any
) -> None:
    """Writes the dataset ``data_dir/name/config/VERSION`` through TFDS (see _make_builder).

    ``beam_options`` (Beam ``PipelineOptions``) switches TFDS to its Beam writer; None = the
    in-process path.
    """
    import tensorflow_datasets as tfds

    builder = _make_builder(
        name=name, config=config, data_dir=data_dir, beam=beam_options is not None, **builder_kwargs
    )
    # TFDS's nested progress bars leave "[A" fragments in piped logs; our progress lines say
    # what is done instead (its "Downloading ..." prints are silenced in the builder class).
    tfds.disable_progress_bar()
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP, beam_options=beam_options
            ),
            file_format=tfds.core.FileFormat.ARRAY_RECORD,
        )
    except Exception as err:
        # Another process (not holding our lock, e.g. on another host of a shared file system)
        # renamed its copy into place first (our rename then fails): the result is the same
        # data, so use theirs.
        if isinstance(err, OSError) and _is_complete(data_dir / name / config / VERSION):
            return
        if beam_options is not None:
            _raise_from_beam(err, builder_kwargs["utterances"], builder_kwargs["source_desc"])
        raise


def _raise_from_beam(
    err: Exception, utterances: Sequence[corpus_lib.Utterance], source_desc: Mapping[str, Any]
) -> None:
    """Raises the in-process path's error for a failed Beam run, if it is one of ours.

    The runner wraps a worker's exception in its own (type and text vary by runner); the
    :class:`AudioError` / :class:`CorpusError` a worker raised is found in it and raised again.
    """
    from hamjax.data import beam_prepare

    relayed = beam_prepare.unrelay(err)
    if relayed is not None:
        raise relayed from err
    if _TFDS_NO_EXAMPLES in str(err):
        # TFDS's own check of an empty split ran before ours (both run once every file is
        # decoded; the runner picks the order), so the counts per kind are not known here.
        raise corpus_lib.CorpusError(
            f"{_origin(source_desc)}: none of the {len(utterances)} listed files could be used "
            f"(each shorter than min_seconds={source_desc.get('min_seconds')} s or unreadable; "
            "the Beam workers' logs name them)"
        ) from err


def _in_distributed_job() -> bool:
    """Whether this process is part of a ``jax.distributed`` job.

    There, the coordination service's preemption notifier owns SIGTERM (a C++ handler that
    Python cannot see: ``signal.signal`` would report the default action as the previous one,
    and restoring it would leave the job without its preemption notice).
    """
    jax = sys.modules.get("jax")  # never import JAX from the data layer just to ask
    return jax is not None and jax.distributed.is_initialized()


def _stop_beam_workers() -> None:
    from hamjax.data import beam_prepare

    stopped = beam_prepare.stop_local_workers()
    if stopped:
        _log.warning("stopped %d Beam worker process(es): %s", len(stopped), stopped)


@contextlib.contextmanager
def _exit_on_sigterm(on_signal: Callable[[], None] | None = None) -> Iterator[None]:
    """Turns SIGTERM into ``SystemExit(143)`` for the duration, so cleanup code runs.

    Python's default SIGTERM action kills the process on the spot, leaving TFDS's
    ``incomplete.*`` folder and our temporary files behind; raising instead unwinds through
    their ``finally`` blocks and exits with the conventional status 128 + 15. Only the main
    thread can install handlers; elsewhere this does nothing (leftovers are then removed by the
    next preparation). ``on_signal`` runs first (e.g. stopping Beam's local worker processes,
    without which the runner's cleanup would wait for them for ever).
    """
    if threading.current_thread() is not threading.main_thread() or _in_distributed_job():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        del frame
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut cleanup
        _log.warning("signal %d received: stopping the preparation and removing its files", signum)
        if on_signal is not None:
            on_signal()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _preparation_lock(
    data_dir: Path, name: str, config: str, *, block: bool = True
) -> Iterator[bool]:
    """Holds an exclusive ``flock`` on ``<data_dir>/.hamjax_locks/<name>.<config>.lock``.

    Yields whether the lock is held (always True when ``block``). The kernel releases the lock
    when its holder dies, however it dies, so an ``incomplete.*`` folder whose lock is free is a
    leftover, never a live preparation.
    """
    lock_dir = data_dir / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.{config}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale_incomplete(data_dir: Path, name: str, *, held_config: str) -> None:
    """Removes ``incomplete.*`` folders of dataset ``name`` left by killed preparations.

    The folders of ``held_config`` (whose lock the caller holds) are removed; those of other
    configs only when their lock is free (no live preparation).
    """
    name_dir = data_dir / name
    for config_dir in sorted(name_dir.iterdir()) if name_dir.is_dir() else []:
        if not config_dir.is_dir() or not any(config_dir.glob(_INCOMPLETE + "*")):
            continue
        if config_dir.name == held_config:
            _remove_incomplete(config_dir)
            continue
        with _preparation_lock(data_dir, name, config_dir.name, block=False) as held:
            if held:
                _remove_incomplete(config_dir)


def _remove_incomplete(config_dir: Path) -> None:
    stale = sorted(config_dir.glob(_INCOMPLETE + "*"))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    _log.warning(
        "%s: removed %d incomplete preparation folder(s) left by an interrupted run: %s",
        config_dir,
        len(stale),
        ", ".join(p.name for p in stale),
    )


def _log_skipped(info: DatasetInfo, *, fresh: bool) -> None:
    """Logs the files a preparation left out (a warning when just prepared, else info)."""
    if not info.skipped:
        return
    counts = info.source.get("num_skipped") or {}
    short = int(counts.get("short", 0))
    parts = []
    if short:
        parts.append(f"{short} shorter than the minimum {info.source.get('min_seconds', '?')} s")
    if len(info.skipped) - short:
        parts.append(f"{len(info.skipped) - short} unreadable (skip_bad=True)")
    names = [s[0] for s in info.skipped[:MAX_LOGGED]]
    _log.log(
        logging.WARNING if fresh else logging.INFO,
        "dataset %s (%s): %s %d of %d listed file(s): %s; first: %s%s; each file and why: %s",
        info.name,
        info.config,
        "skipped" if fresh else "prepared without",
        len(info.skipped),
        info.source.get("num_listed", "?"),
        ", ".join(parts),
        ", ".join(names),
        ", ..." if len(info.skipped) > MAX_LOGGED else "",
        info.builder_dir / SKIPPED_FILE,
    )


def prepare_from_config(config: Any) -> DatasetInfo:
    """Prepares (``data.auto_prepare``) or just loads the dataset a training config names.

    Reads ``data.source``, ``data.root``, ``data.data_dir``, ``data.name``, ``data.skip_bad``,
    ``data.auto_prepare`` and, when present, ``data.min_seconds`` (default
    :data:`hamjax.data.audio.MIN_SECONDS`), ``data.config``, ``data.list_file`` (VoxCeleb
    source; default ``<root>/train_list.txt`` when that file exists, as in the authors' recipe),
    ``data.metadata``, ``data.utt2spk`` (Kaldi source) and ``data.synthetic.size`` (a preset of
    :mod:`hamjax.data.synthetic`, e.g. ``"quickstart"``, ``"tiny"``) with
    ``data.synthetic.overrides`` (``generate_corpus`` keyword arguments, ``seed`` included),
    and ``data.prepare.runner`` / ``data.prepare.beam_options`` (how: see
    :func:`prepare_dataset`'s ``runner``; default the in-process runner).

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
        min_seconds=float(data.get("min_seconds", MIN_SECONDS)),
        **runner_kwargs(data),
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


@dataclasses.dataclass
class _Progress:
    """What a preparation produced, filled in while its examples are generated."""

    num_examples: int = 0
    speakers_seen: set[str] = dataclasses.field(default_factory=set)
    #: ``(utterance_id, path, reason, kind)`` per skipped file, kind "short" or "unreadable".
    skipped: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Rejected:
    """A file that will not become an example: ``kind`` "short" or "unreadable"."""

    kind: str
    error: AudioError


def _make_builder(
    *,
    name: str,
    config: str,
    data_dir: Path,
    utterances: Sequence[corpus_lib.Utterance],
    source_desc: Mapping[str, Any],
    skip_bad: bool,
    min_seconds: float,
    num_threads: int,
    beam: bool = False,
) -> Any:
    """Builds the (unregistered) GeneratorBasedBuilder instance for one corpus.

    ``beam``: generate through a Beam ``PTransform`` (:mod:`hamjax.data.beam_prepare`) instead
    of a Python generator; TFDS then runs it on the pipeline options of the download config.
    """
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
            self._progress = _Progress()
            super().__init__(data_dir=os.fspath(data_dir), config=cfg, file_format="array_record")

        def _info(self) -> Any:
            return self.dataset_info_from_configs(
                features=_features(speakers),
                description="Speaker corpus prepared by hamjax from "
                + json.dumps(source_desc, default=str),
            )

        def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
            del dl_manager  # nothing is downloaded
            return {"train": self._generate_examples()}

        def _generate_examples(self) -> Any:
            if beam:
                return _beam_examples(
                    Path(os.fspath(self.data_path)),
                    utterances,
                    skip_bad=skip_bad,
                    min_seconds=min_seconds,
                    origin=_origin(source_desc),
                )
            return _generate_examples(
                utterances,
                progress=self._progress,
                skip_bad=skip_bad,
                min_seconds=min_seconds,
                num_threads=num_threads,
                origin=_origin(source_desc),
            )

        def _example_writer(self) -> Any:
            return _CanonicalExampleWriter(self.info.file_format)

        def _process_pipeline_result(self, pipeline_result: Any) -> None:
            from hamjax.data import beam_prepare

            found = beam_prepare.counters(pipeline_result)
            _progress_log.info("Beam pipeline done (counters: %s)", beam_prepare.summary(found))

        # TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown
        # size ...)" and "... downloaded and prepared to ..." for every builder: nothing is
        # downloaded here, and prepare_dataset logs what it does itself.
        def _log_download_bytes(self) -> None:
            pass

        def _log_download_done(self) -> None:
            pass

        def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
            super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
            # self.data_path is still the incomplete.* dir here: these files are renamed into
            # place together with the shards, or removed with them on failure.
            if beam:
                self._progress = _beam_progress(Path(os.fspath(self.data_path)), utterances)
            _check_written(
                self.info.splits["train"], Path(os.fspath(self.data_path)), self._progress
            )
            _write_hamjax_files(self.data_path, speakers, self._progress, source_desc)

    return SpeakerCorpus()


class _CanonicalExampleWriter:
    """TFDS's example writer, writing each ``tf.Example`` with its features in name order.

    protobuf serialises a map field (``Example.features.feature``) in an order that depends on
    the process (upb's hash tables are seeded per process), so the same example became
    different bytes in two runs, or in the driver and a Beam worker. Re-serialising with
    ``deterministic=True`` sorts the names: a dataset is then the same bytes however, and
    however often, it is prepared. Readers parse records, so datasets written before this are
    read exactly as before. Plain (not a subclass of TFDS's ``ExampleWriter``) and
    module-level so that Beam pickles it by name without importing TFDS here.
    """

    def __init__(self, file_format: Any) -> None:
        import tensorflow_datasets as tfds

        self.file_format = file_format
        self._inner = tfds.core.writer.ExampleWriter(file_format)

    def write(self, path: Any, examples: Iterable[tuple[Any, bytes]]) -> Any:
        # TFDS's own copy of the tf.Example proto (the one it serialises with): no TensorFlow.
        from tensorflow_datasets.proto import tf_example_pb2

        parse = tf_example_pb2.Example.FromString
        return self._inner.write(
            path, ((key, parse(ex).SerializeToString(deterministic=True)) for key, ex in examples)
        )


def _check_written(split: Any, out: Path, progress: _Progress) -> None:
    """Checks that the shards TFDS wrote hold every decoded example, each shard file present.

    Raises:
      RuntimeError: examples or shard files missing (the dataset is then not kept). Seen with
        Beam 2.77's DirectRunner in multi-process mode with one worker on a 1 GB corpus: whole
        shards silently left out, the pipeline reporting success.
    """
    missing = [f for f in split.filenames if not (out / f).is_file()]
    if split.num_examples != progress.num_examples or missing:
        raise RuntimeError(
            f"{out}: the runner wrote {split.num_examples} examples in {split.num_shards} "
            f"shard(s), but {progress.num_examples} files were decoded"
            + (f"; shard files missing: {', '.join(missing[:3])}" if missing else "")
            + ". The runner lost data: nothing is kept. Prepare again (runner='direct' "
            "prepares in-process; Beam's DirectRunner is meant for corpora of a few hundred MB)"
        )


def _features(speakers: Sequence[str]) -> Any:
    """The TFDS features of a prepared speaker corpus (the table in the module docstring)."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            # A plain int16 Tensor, not tfds.features.Audio: Audio's constructor imports
            # TensorFlow, which would make every reader load TF. Stored as raw bytes:
            # tf.Example's int64_list costs ~10 ms per utterance to serialise (a Python list of
            # ints) and 4x the disk of 2-byte PCM.
            "audio": tfds.features.Tensor(
                shape=(None,),
                dtype=np.int16,
                encoding=tfds.features.Encoding.BYTES,
                doc=f"mono PCM at {SAMPLE_RATE} Hz (divide by 32768 for [-1, 1])",
            ),
            "speaker": tfds.features.ClassLabel(names=list(speakers)),
            "speaker_name": tfds.features.Text(),
            "utterance_id": tfds.features.Text(),
            "base": tfds.features.Text(),
            "family": tfds.features.Text(),
        }
    )


def _generate_examples(
    utterances: Sequence[corpus_lib.Utterance],
    *,
    progress: _Progress,
    skip_bad: bool,
    min_seconds: float,
    num_threads: int,
    origin: Any,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(key, example)`` in listing order, recording skips and counts in ``progress``."""
    log = _ProgressLog(len(utterances))
    for done, (utt, result) in enumerate(
        _decode_in_order(utterances, num_threads, min_seconds), start=1
    ):
        log.tick(done)
        if isinstance(result, _Rejected):
            if result.kind == "unreadable" and not skip_bad:
                raise result.error
            # One line per file in skipped.txt: decoder messages may span lines.
            reason = " ".join(str(result.error).split())
            progress.skipped.append((utt.utterance_id, str(utt.path), reason, result.kind))
            continue
        progress.num_examples += 1
        progress.speakers_seen.add(utt.speaker)
        yield _example(utt, result)
    _check_usable(
        [kind for *_, kind in progress.skipped],
        origin=origin,
        num_listed=len(utterances),
        min_seconds=min_seconds,
    )


def _example(utt: corpus_lib.Utterance, pcm: np.ndarray) -> tuple[str, dict[str, Any]]:
    """``(key, example)`` of one decoded file; the key (the utterance id) orders the split."""
    return (
        utt.utterance_id,
        {
            "audio": pcm,
            "speaker": utt.speaker,
            "speaker_name": utt.speaker,
            "utterance_id": utt.utterance_id,
            "base": utt.base,
            "family": utt.family,
        },
    )


def _decode_file(utt: corpus_lib.Utterance, min_seconds: float) -> np.ndarray | _Rejected:
    """One listed file as int16 PCM, or a :class:`_Rejected` saying why not."""
    try:
        wav = load_audio(utt.path)
    except AudioError as err:
        return _Rejected("unreadable", err)
    try:
        check_duration(wav, path=utt.path, min_seconds=min_seconds)
    except AudioError as err:
        return _Rejected("short", err)
    return _to_int16(wav)


def _decode_example(
    utt: corpus_lib.Utterance, *, min_seconds: float
) -> tuple[str, dict[str, Any]] | _Rejected:
    """:func:`_decode_file` + :func:`_example`: what a Beam worker does with one file."""
    result = _decode_file(utt, min_seconds)
    return result if isinstance(result, _Rejected) else _example(utt, result)


def _check_usable(
    kinds: Sequence[str], *, origin: Any, num_listed: int, min_seconds: float
) -> None:
    """Raises :class:`CorpusError` when every listed file was skipped (``kinds``: one per skip)."""
    if len(kinds) < num_listed:
        return
    short = sum(kind == "short" for kind in kinds)
    raise corpus_lib.CorpusError(
        f"{origin}: none of the {num_listed} listed files could be used ({short} "
        f"shorter than min_seconds={min_seconds:g} s, {len(kinds) - short} "
        "unreadable; see the errors above)"
    )


def _origin(source_desc: Mapping[str, Any]) -> Any:
    """The corpus a dataset comes from, for messages: its root or its ``wav.scp``."""
    return source_desc.get("root") or source_desc.get("wav_scp")


def _beam_examples(
    out: Path,
    utterances: Sequence[corpus_lib.Utterance],
    *,
    skip_bad: bool,
    min_seconds: float,
    origin: Any,
) -> Any:
    """Writes the listing into ``out`` (TFDS's incomplete.* dir) and returns the PTransform."""
    from hamjax.data import beam_prepare

    beam_prepare.write_listing(out / beam_prepare.LISTING_FILE, utterances)
    return beam_prepare.examples_transform(
        listing=out / beam_prepare.LISTING_FILE,
        skips=out / beam_prepare.SKIPS_FILE,
        # Module-level functions under partial: the workers unpickle them by name.
        decode=functools.partial(_decode_example, min_seconds=min_seconds),
        skip_bad=skip_bad,
        check_skips=functools.partial(
            _check_usable, origin=origin, num_listed=len(utterances), min_seconds=min_seconds
        ),
    )


def _beam_progress(out: Path, utterances: Sequence[corpus_lib.Utterance]) -> _Progress:
    """What a finished Beam run produced, from its skip records; removes its working files."""
    from hamjax.data import beam_prepare

    skips = beam_prepare.read_skips(out / beam_prepare.SKIPS_FILE)
    for f in (beam_prepare.LISTING_FILE, beam_prepare.SKIPS_FILE):
        (out / f).unlink()
    left_out = {index for index, *_ in skips}
    kept = [u for i, u in enumerate(utterances) if i not in left_out]
    return _Progress(
        num_examples=len(kept),
        speakers_seen={u.speaker for u in kept},
        skipped=[(uid, path, reason, kind) for _, uid, path, reason, kind in skips],
    )


class _ProgressLog:
    """Logs ``done/total`` files, rate and time left, at most every :data:`PROGRESS_EVERY_S`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        _progress_log.info(
            "preparing: %d/%d files (%.0f%%, %.1f files/s, about %.0f s left)",
            done,
            self.total,
            100.0 * done / max(self.total, 1),
            rate,
            (self.total - done) / max(rate, 1e-9),
        )


def _write_hamjax_files(
    out: Path, speakers: Sequence[str], progress: _Progress, source_desc: Mapping[str, Any]
) -> None:
    """Writes ``speakers.txt``, ``skipped.txt`` and ``hamjax_source.json`` into ``out``."""
    io_utils.write_text(out / SPEAKERS_FILE, "".join(f"{s}\n" for s in speakers))
    lines = [f"# {len(progress.skipped)} file(s) skipped (utterance_id, path, reason)\n"]
    empty = sorted(set(speakers) - progress.speakers_seen)
    if empty:
        # Their labels stay reserved (stable mapping) but no example carries them.
        lines.append(f"# speakers left without any example: {' '.join(empty)}\n")
    lines += [f"{u}\t{p}\t{r}\n" for u, p, r, _ in progress.skipped]
    io_utils.write_text(out / SKIPPED_FILE, "".join(lines))
    kinds = collections.Counter(kind for *_, kind in progress.skipped)
    io_utils.write_json(
        out / SOURCE_FILE,
        {
            **source_desc,
            "num_examples": progress.num_examples,
            "num_speakers": len(speakers),
            "num_skipped": {"short": kinds["short"], "unreadable": kinds["unreadable"]},
            "sample_rate": SAMPLE_RATE,
        },
    )


def _decode_in_order(
    utterances: Sequence[corpus_lib.Utterance], num_threads: int, min_seconds: float = 0.0
) -> Iterator[tuple[corpus_lib.Utterance, np.ndarray | _Rejected]]:
    """Decodes files on a thread pool (I/O and soxr release the GIL), yielding in list order.

    Each file becomes int16 PCM, or a :class:`_Rejected` saying why not (unreadable, or shorter
    than ``min_seconds``). At most ``4 * num_threads`` decoded files are held at once, so memory
    stays bounded for corpora of any size.
    """
    load = functools.partial(_decode_file, min_seconds=min_seconds)
    if num_threads <= 1:
        for utt in utterances:
            yield utt, load(utt)
        return
    window: collections.deque = collections.deque()
    pool = concurrent.futures.ThreadPoolExecutor(num_threads)
    try:
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
    finally:
        # On an error or a stop (SIGTERM), drop the queued decodes instead of finishing them.
        pool.shutdown(wait=True, cancel_futures=True)
