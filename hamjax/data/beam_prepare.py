"""The Apache Beam half of the TFDS preparation (``data.prepare.runner = "beam"``).

:func:`hamjax.data.tfds_builder.prepare_dataset` hands TFDS a Beam ``PTransform`` instead of a
Python generator when asked to; TFDS then encodes, hashes, sorts and shards the examples with
its ``BeamWriter`` on whatever runner the pipeline options name: Beam's local DirectRunner
(``--direct_num_workers=N --direct_running_mode=multi_processing``), Flink, Spark or Dataflow.
This module builds that transform:

.. code-block:: text

    listing (JSON lines, one per listed file, written by the driver into TFDS's incomplete.*
    folder) -> ReadFromText -> Reshuffle (spread the files over the workers)
      -> Decode: (key, example) for TFDS ............................. main output
                 (index, utterance_id, path, reason, kind) per skip ..... "skipped" output
                    -> ToList -> hamjax_beam_skips.json (read back by the driver)

The decoding itself (``decode``: one :class:`hamjax.data.corpus.Utterance` -> ``(key, example)``
or a rejection with ``.kind`` and ``.error``) is the in-process path's own function, passed in,
so both paths produce the same bytes. TFDS orders examples by the hash of their key in both
paths (its ``Writer`` sorts the whole split, its ``BeamWriter`` each shard over hash ranges),
so the records come out in the same order; only the shard boundaries can differ.

Errors raised on a worker reach the driver wrapped by the runner (type and traceback vary by
runner); :func:`relay` marks the message of the errors hamjax means for the user
(:class:`~hamjax.data.audio.AudioError`, :class:`~hamjax.data.corpus.CorpusError`) so that
:func:`unrelay` can raise the same error, with the same message, in the driver. Counts go
through Beam metrics (namespace ``hamjax``: ``examples``, ``skipped_short``,
``skipped_unreadable``), which cluster UIs show while a job runs.

Apache Beam is imported only when a Beam preparation is asked for (``pip install
'hamjax[beam]'``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hamjax import io_utils
from hamjax.data.audio import AudioError
from hamjax.data.corpus import CorpusError, Utterance

#: The driver's listing of the files to decode, inside TFDS's incomplete.* folder.
LISTING_FILE = "hamjax_beam_listing.jsonl"
#: The skipped files, written by the pipeline into the same folder.
SKIPS_FILE = "hamjax_beam_skips.json"
#: Beam metrics namespace of the preparation's counters.
METRICS_NAMESPACE = "hamjax"
#: Seconds between two progress lines of one worker.
PROGRESS_EVERY_S = 30.0
_SKIPPED = "skipped"
_RELAYED: dict[str, type[Exception]] = {"AudioError": AudioError, "CorpusError": CorpusError}
_RELAY_RE = re.compile(r"<<hamjax (\w+)>>(.*?)<</hamjax>>", re.S)
_log = logging.getLogger(__name__)

#: A decoded file ``(key, example)``, or an object with ``.kind`` ("short" | "unreadable") and
#: ``.error`` (the :class:`AudioError` saying why).
Decoded = Any


def pipeline_options(beam_options: str | Sequence[str]) -> Any:
    """Beam ``PipelineOptions`` from a shell-quoted string (or a list of flags).

    Args:
      beam_options: e.g. ``"--direct_num_workers=2 --direct_running_mode=multi_processing"``
        or ``"--runner=FlinkRunner --flink_master=host:8081"``; ``""`` = Beam's defaults (the
        single-process DirectRunner).

    Raises:
      ImportError: Apache Beam is not installed (the message says what to install).
      ValueError: an option Beam does not know (a typo would otherwise be dropped silently
        and the run would quietly use the defaults); the message names it.
    """
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as err:
        raise ImportError(
            "data.prepare.runner = 'beam' needs Apache Beam: pip install 'hamjax[beam]' "
            "(or apache-beam>=2.60)"
        ) from err
    flags = shlex.split(beam_options) if isinstance(beam_options, str) else list(beam_options)
    options = PipelineOptions(flags)
    known = options.get_all_options()
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    if unknown:
        raise ValueError(
            f"data.prepare.beam_options = {beam_options!r}: unknown Beam pipeline option(s) "
            f"{', '.join('--' + u for u in unknown)} (see `python -m apache_beam.examples."
            "wordcount --help` for the options this Beam version knows)"
        )
    return options


def write_listing(path: Path, utterances: Sequence[Utterance]) -> None:
    """Writes the files to decode as JSON lines ``{"i": index, "path", "speaker", ...}``.

    A file, not ``beam.Create``: a listing of a million files inlined into the pipeline graph
    would exceed what cluster runners accept (Dataflow refuses graphs over 10 MB), whereas
    ``ReadFromText`` splits a file across workers. The folder must be visible to the workers
    (a shared file system, as ``data_dir`` must be anyway).
    """
    io_utils.write_text(
        path,
        "".join(
            json.dumps(
                {
                    "i": i,
                    "path": str(u.path),
                    "speaker": u.speaker,
                    "utterance_id": u.utterance_id,
                    "base": u.base,
                    "family": u.family,
                }
            )
            + "\n"
            for i, u in enumerate(utterances)
        ),
    )


def examples_transform(
    *,
    listing: Path,
    skips: Path,
    decode: Callable[[Utterance], Decoded],
    skip_bad: bool,
    check_skips: Callable[[Sequence[str]], None],
) -> Any:
    """The ``PTransform`` (``PBegin -> PCollection[(key, example)]``) TFDS runs for a split.

    Args:
      listing: the file :func:`write_listing` wrote.
      skips: where the pipeline writes the skipped files (JSON list of ``[index,
        utterance_id, path, reason, kind]``, sorted by index); read with :func:`read_skips`.
      decode: the in-process path's per-file function (module-level, so it pickles by name).
      skip_bad: False: an unreadable file stops the run with an :class:`AudioError` naming it.
      check_skips: called on the worker with the kinds of all skipped files (raises the
        in-process path's :class:`CorpusError` when no file is usable).
    """
    import apache_beam as beam

    @beam.ptransform_fn
    def _decode_listing(pbegin: Any) -> Any:
        decoded = (
            pbegin
            | "ReadListing" >> beam.io.ReadFromText(os.fspath(listing))
            # ReadFromText keeps a small file in one bundle: redistribute before decoding.
            | "SpreadFiles" >> beam.Reshuffle()
            | "Decode"
            >> beam.FlatMap(_decode_line, decode=decode, skip_bad=skip_bad).with_outputs(
                _SKIPPED, main="examples"
            )
        )
        _ = (
            decoded[_SKIPPED]
            | "CollectSkips" >> beam.combiners.ToList()
            | "WriteSkips" >> beam.Map(_write_skips, path=os.fspath(skips), check=check_skips)
        )
        return decoded.examples

    return _decode_listing()  # pylint: disable=no-value-for-parameter


def read_skips(path: Path) -> list[tuple[int, str, str, str, str]]:
    """The skipped files the pipeline recorded: ``(index, utterance_id, path, reason, kind)``."""
    if not path.is_file():
        raise RuntimeError(
            f"{path}: the Beam pipeline finished without writing its list of skipped files; "
            "were the workers writing to another file system than the driver's data_dir?"
        )
    return [tuple(s) for s in json.loads(path.read_text())]  # type: ignore[misc]


def counters(pipeline_result: Any) -> dict[str, int]:
    """The ``hamjax`` Beam counters of a finished pipeline (committed, else attempted)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = pipeline_result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except (NotImplementedError, AttributeError):  # runners without metrics support
        return {}
    out: dict[str, int] = {}
    for c in found["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


def relay(err: Exception) -> Exception:
    """``err`` with its message marked for :func:`unrelay` (raise it on a worker)."""
    return type(err)(f"<<hamjax {type(err).__name__}>>{err}<</hamjax>>")


def unrelay(err: BaseException) -> Exception | None:
    """The hamjax error a worker raised (via :func:`relay`) inside a runner's error, or None."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        match = _RELAY_RE.search(str(cur))
        if match and match.group(1) in _RELAYED:
            return _RELAYED[match.group(1)](match.group(2))
        cur = cur.__cause__ or cur.__context__
    return None


def _decode_line(line: str, *, decode: Callable[[Utterance], Decoded], skip_bad: bool) -> Iterator:
    """One listing line -> ``(key, example)``, or a tagged skip record (or an error)."""
    from apache_beam import pvalue
    from apache_beam.metrics import Metrics

    rec = json.loads(line)
    utt = Utterance(
        path=Path(rec["path"]),
        speaker=rec["speaker"],
        utterance_id=rec["utterance_id"],
        base=rec["base"],
        family=rec["family"],
    )
    result = decode(utt)
    _worker_progress.tick()
    if isinstance(result, tuple):
        Metrics.counter(METRICS_NAMESPACE, "examples").inc()
        yield result
        return
    Metrics.counter(METRICS_NAMESPACE, f"skipped_{result.kind}").inc()
    if result.kind == "unreadable" and not skip_bad:
        raise relay(result.error)
    # One line per file in skipped.txt: decoder messages may span lines.
    reason = " ".join(str(result.error).split())
    yield pvalue.TaggedOutput(
        _SKIPPED, (rec["i"], utt.utterance_id, str(utt.path), reason, result.kind)
    )


def _write_skips(
    skipped: Sequence[Sequence[Any]], *, path: str, check: Callable[[Sequence[str]], None]
) -> None:
    """Writes the skip records (sorted: the listing's order, as in-process) and checks them."""
    rows = sorted(list(s) for s in skipped)
    io_utils.write_json(Path(path), rows)
    try:
        check([r[4] for r in rows])
    except (AudioError, CorpusError) as err:
        raise relay(err) from None


class _WorkerProgress:
    """Logs, at most every :data:`PROGRESS_EVERY_S`, how many files this worker decoded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._start = self._last = time.monotonic()

    def tick(self) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now - self._last < PROGRESS_EVERY_S:
                return
            self._last = now
            count, rate = self._count, self._count / max(now - self._start, 1e-9)
        _log.info("beam worker %d: decoded %d files (%.0f files/s)", os.getpid(), count, rate)


_worker_progress = _WorkerProgress()


def stop_local_workers() -> list[int]:
    """Sends SIGTERM to the Beam SDK worker processes this process started; returns their ids.

    The DirectRunner in multi-process mode runs each worker as a child process. When the
    driver is interrupted (SIGTERM), the runner's cleanup waits for those workers to exit, but
    a worker whose control stream just closed hangs at exit (seen with Beam 2.77), and so
    would the driver, for ever. Stopping them first lets the cleanup finish: the driver exits
    143 with TFDS's incomplete.* folder removed. Only descendants of this process running
    ``apache_beam.runners.worker.sdk_worker_main`` are signalled. Linux (``/proc``) only;
    elsewhere (and for cluster runners, whose workers are not ours) it does nothing.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # The fields after the ")" closing the command name: state, ppid, ...
            ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not a process
        children.setdefault(ppid, []).append(int(entry.name))
    stopped, frontier = [], children.get(os.getpid(), [])
    while frontier:
        pid = frontier.pop()
        frontier += children.get(pid, [])
        try:
            if b"sdk_worker_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
        except (OSError, ProcessLookupError):
            continue
    return stopped


def summary(found: Mapping[str, int]) -> str:
    """``"N examples, S short, U unreadable"`` from :func:`counters` (for log lines)."""
    return (
        f"{found.get('examples', 0)} examples, {found.get('skipped_short', 0)} short, "
        f"{found.get('skipped_unreadable', 0)} unreadable"
    )
