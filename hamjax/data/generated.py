"""What the generated corpora share: ids, trial sampling, lists, baseline verifiers, publishing.

:mod:`hamjax.data.synthetic` (source-filter voices) and :mod:`hamjax.data.mbrola` (recorded
MBROLA voices) differ only in how a speaker's audio is made. Both plan a speaker tree, give
every speaker VoxCeleb-like session ids, sample balanced trial lists across sessions, write
``train_list.txt`` / ``all_list.txt`` / ``trials/<name>.txt``, score two non-learned
verifiers on each list (pitch only, long-term cepstrum), and publish the folder atomically.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal

from hamjax import io_utils
from hamjax.data.source_filter import yin_f0

#: Characters of VoxCeleb-like 11-character session ids.
ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def seeded_rng(*key: int) -> np.random.Generator:
    """A generator keyed by integers (seed, domain, indices...) through ``SeedSequence``."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def plan_utterances(
    rows: Sequence[dict[str, Any]],
    id_rng: Callable[[int], np.random.Generator],
    sessions: int,
    per_session: int,
) -> list[list[tuple[str, int]]]:
    """Session ids and utterance paths of every speaker.

    Sets ``row["sessions"]`` (``sessions`` distinct 11-character ids drawn from
    ``id_rng(row["index"])``) on each row.

    Returns:
      Per row, ``[(name/<sid>/<n>.wav, session)]`` with ``n`` counting from 00001 within each
      session.
    """
    utts = []
    for row in rows:
        rng = id_rng(row["index"])
        sids: list[str] = []
        while len(sids) < sessions:
            sid = "".join(rng.choice(ID_ALPHABET, 11))
            if sid not in sids:
                sids.append(sid)
        row["sessions"] = sids
        utts.append(
            [
                (f"{row['name']}/{sids[k // per_session]}/{k % per_session + 1:05d}.wav",
                 k // per_session)
                for k in range(sessions * per_session)
            ]
        )  # fmt: skip
    return utts


def sample_trial_lists(
    rows: Sequence[Mapping[str, Any]],
    lists: Mapping[str, tuple[str | None, str | None]],
    utts: Sequence[Sequence[tuple[str, int]]],
    sessions_per_speaker: int,
    trials_per_speaker: int,
    rng_of: Callable[[int], np.random.Generator],
) -> dict[str, list[tuple[int, str, str]]]:
    """The trial lists of a corpus plan (:func:`sample_trials` per list).

    Args:
      rows: speakers in index order, with ``split`` and ``family``.
      lists: name -> ``(split, differ)``. Members are the speakers of ``split`` (None: every
        speaker not in ``"train"``). ``differ`` None draws non-targets from any other member;
        a row key draws them from members of the same family whose value of that key differs
        (e.g. ``"person"``: same language, another person).
      utts, sessions_per_speaker, trials_per_speaker: as :func:`sample_trials`.
      rng_of: the generator of the ``i``-th list.

    Returns:
      name -> lines, for the lists that have any.
    """
    trials = {}
    for t_idx, (name, (split, differ)) in enumerate(lists.items()):
        members = [
            i
            for i, r in enumerate(rows)
            if (r["split"] == split if split else r["split"] != "train")
        ]

        def pool_of(spk: int, members=members, differ=differ) -> list[int]:
            if differ is None:
                return [m for m in members if m != spk]
            fam, own = rows[spk]["family"], rows[spk][differ]
            return [m for m in members if rows[m]["family"] == fam and rows[m][differ] != own]

        lines = sample_trials(
            members, pool_of, utts, sessions_per_speaker, trials_per_speaker, rng_of(t_idx)
        )
        if lines:
            trials[name] = lines
    return trials


def map_jobs(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    initializer: Callable[[Any], None],
    state: Any,
    num_workers: int | None,
    chunksize: int | None = None,
    desc: str = "",
) -> list[Any]:
    """``[fn(job) for job in jobs]``, in this process or in spawned worker processes.

    ``initializer(state)`` runs once per process first. ``num_workers`` None means the usable
    CPUs; 0 or 1 runs in this process (so a monkeypatched ``fn`` is honoured). Results keep the
    order of ``jobs`` whatever the worker count. With ``desc``, a progress bar (tqdm, on stderr)
    counts the finished jobs: generating a corpus takes minutes.
    """
    from tqdm import tqdm

    if num_workers is None:
        num_workers = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ) or 1
    num_workers = min(num_workers, len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not desc, mininterval=2.0)
    with bar:
        if num_workers <= 1:
            initializer(state)
            out = []
            for job in jobs:
                out.append(fn(job))
                bar.update(1)
            return out
        # "spawn": the parent may hold JAX/TensorFlow threads, which fork() would copy unsafely.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=ctx, initializer=initializer, initargs=(state,)
        ) as pool:
            size = chunksize or max(1, len(jobs) // (8 * num_workers))
            out = []
            for result in pool.map(fn, jobs, chunksize=size):
                out.append(result)
                bar.update(1)
            return out


def sample_trials(
    members: Sequence[int],
    pool_of: Callable[[int], list[int]],
    utts: Sequence[Sequence[tuple[str, int]]],
    sessions_per_speaker: int,
    trials_per_speaker: int,
    rng: np.random.Generator,
) -> list[tuple[int, str, str]]:
    """A balanced trial list over ``members`` (speaker indices into ``utts``).

    Each member gets up to ``trials_per_speaker`` target trials (pairs of its utterances from
    different sessions when it has several) and as many non-targets against utterances of
    ``pool_of(member)`` (members without a pool get none).

    Returns:
      ``(label, enrol, test)`` tuples sorted by ``(enrol, test, label)``.
    """
    lines: set[tuple[int, str, str]] = set()
    for spk in members:
        pool = pool_of(spk)
        if not pool:
            continue
        mine = utts[spk]
        pairs = [
            (i, j)
            for i in range(len(mine))
            for j in range(i + 1, len(mine))
            if sessions_per_speaker == 1 or mine[i][1] != mine[j][1]
        ]
        k = min(trials_per_speaker, len(pairs))
        for p in rng.choice(len(pairs), k, replace=False):
            i, j = pairs[int(p)]
            lines.add((1, mine[i][0], mine[j][0]))
        added, attempts = 0, 0
        while added < k and attempts < 20 * k:
            attempts += 1
            other = pool[int(rng.integers(len(pool)))]
            line = (
                0,
                mine[int(rng.integers(len(mine)))][0],
                utts[other][int(rng.integers(len(utts[other])))][0],
            )
            if line not in lines:
                lines.add(line)
                added += 1
    return sorted(lines, key=lambda x: (x[1], x[2], x[0]))


def baseline_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate of ``scores`` (higher = same speaker) for boolean ``labels``."""
    order = np.argsort(-scores, kind="stable")
    lab = labels[order]
    # Thresholds just below each score: accept the top k trials, k = 0..N.
    fa = np.concatenate([[0], np.cumsum(~lab)]) / max(1, (~lab).sum())
    fr = 1.0 - np.concatenate([[0], np.cumsum(lab)]) / max(1, lab.sum())
    i = int(np.argmin(np.abs(fa - fr)))
    return float((fa[i] + fr[i]) / 2.0)


def utterance_stats(wav: np.ndarray, sample_rate: int) -> tuple[float, list[float]]:
    """The two baseline verifiers' per-utterance features.

    Returns:
      (median YIN F0 in Hz over the loud frames, ``[19]`` long-term cepstrum: DCT coefficients
      1-19 of the Welch log-power spectrum -- an MFCC-mean-like spectral summary).
    """
    f0, rms = yin_f0(wav, sample_rate)
    loud = rms > 0.3 * np.percentile(rms, 95) if rms.size else rms.astype(bool)
    median_f0 = float(np.median(f0[loud])) if loud.any() else float("nan")
    # Welch's averaged periodogram (scipy.signal.welch loops over frames in Python: 20x slower).
    frames = np.lib.stride_tricks.sliding_window_view(wav, 512)[::256]
    psd = np.mean(
        np.abs(np.fft.rfft(frames * scipy.signal.get_window("hann", 512), axis=1)) ** 2, 0
    )
    cep = scipy.fft.dct(np.log(psd + 1e-12), norm="ortho")[1:20]
    return median_f0, [float(v) for v in cep]


def gather_results(
    results: Sequence[tuple[int, int, int, float, list[float]]],
    utts: Sequence[Sequence[tuple[str, int]]],
) -> tuple[np.ndarray, dict[str, tuple[float, list[float]]]]:
    """Per-utterance render results ``(speaker, utterance, samples, F0, cepstrum)`` ->
    (``[speakers, utterances]`` lengths in samples, path -> (F0, cepstrum) where measured)."""
    lengths = np.zeros((len(utts), len(utts[0])), np.int64)
    stats: dict[str, tuple[float, list[float]]] = {}
    for spk, k, n, f0, cep in results:
        lengths[spk, k] = n
        if cep:
            stats[utts[spk][k][0]] = (f0, cep)
    return lengths, stats


def summary(
    rows: Sequence[Mapping[str, Any]],
    lengths: np.ndarray,
    sample_rate: int,
    trials_meta: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The speaker / utterance / duration counts and baseline EERs of ``metadata["summary"]``."""
    durations = lengths / sample_rate
    train_idx = [r["index"] for r in rows if r["split"] == "train"]
    num_train = len(train_idx)
    return dict(
        num_speakers=len(rows),
        num_train_speakers=num_train,
        num_heldout_speakers=len(rows) - num_train,
        num_utterances=int(lengths.size),
        num_train_utterances=int(lengths[train_idx].size),
        hours=round(float(durations.sum()) / 3600.0, 4),
        duration_s=dict(
            min=round(float(durations.min()), 3),
            mean=round(float(durations.mean()), 3),
            max=round(float(durations.max()), 3),
        ),
        pitch_only_eer={k: v["pitch_only_eer"] for k, v in trials_meta.items()},
        cepstrum_eer={k: v["cepstrum_eer"] for k, v in trials_meta.items()},
    )


def write_lists_and_trials(
    out: Path,
    rows: Sequence[Mapping[str, Any]],
    utts: Sequence[Sequence[tuple[str, int]]],
    trials: Mapping[str, Sequence[tuple[int, str, str]]],
    stats: Mapping[str, tuple[float, list[float]]],
    extra: Callable[[Sequence[tuple[int, str, str]]], dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Writes the speaker lists and trial lists; scores the baseline verifiers on each list.

    Args:
      out: the corpus folder being built.
      rows: speakers, with ``index``, ``name`` and ``split`` (``"train"`` goes to the train list).
      utts: per speaker index, ``(relative path, session)`` of its utterances.
      trials: list name -> ``(label, enrol, test)`` lines.
      stats: utterance path -> :func:`utterance_stats` (every trial utterance).
      extra: per-list additional metadata entries.

    Returns:
      Per list: path, target / non-target / speaker counts, ``pitch_only_eer``,
      ``cepstrum_eer`` (and ``extra``'s entries).
    """
    train_lines = [
        f"{r['name']} {rel}" for r in rows if r["split"] == "train" for rel, _ in utts[r["index"]]
    ]
    all_lines = [f"{r['name']} {rel}" for r in rows for rel, _ in utts[r["index"]]]
    io_utils.write_text(out / "train_list.txt", "\n".join(train_lines) + "\n")
    io_utils.write_text(out / "all_list.txt", "\n".join(all_lines) + "\n")
    meta = {}
    for name, lines in trials.items():
        io_utils.write_text(
            out / "trials" / f"{name}.txt", "".join(f"{lab} {e} {t}\n" for lab, e, t in lines)
        )
        labels = np.array([lab == 1 for lab, _, _ in lines])
        log_e = np.log(np.array([stats[e][0] for _, e, _ in lines]))
        log_t = np.log(np.array([stats[t][0] for _, _, t in lines]))
        pitch_scores = np.nan_to_num(-np.abs(log_e - log_t), nan=-1e9)
        paths = sorted({p for _, e, t in lines for p in (e, t)})
        mf = np.array([stats[p][1] for p in paths])
        mf = mf - mf.mean(0)
        mf /= np.linalg.norm(mf, axis=1, keepdims=True) + 1e-12
        pos = {p: i for i, p in enumerate(paths)}
        cos = np.array([mf[pos[e]] @ mf[pos[t]] for _, e, t in lines])
        meta[name] = dict(
            path=f"trials/{name}.txt",
            num_target=int(labels.sum()),
            num_nontarget=int((~labels).sum()),
            num_speakers=len({e.split("/")[0] for _, e, _ in lines}),
            **(extra(lines) if extra is not None else {}),
            pitch_only_eer=round(baseline_eer(pitch_scores, labels), 4),
            cepstrum_eer=round(baseline_eer(cos, labels), 4),
        )
    return meta


def load_metadata(root: Path, format_name: str) -> dict[str, Any] | None:
    """``root/metadata.json`` if it exists (None otherwise).

    Raises:
      ValueError: unreadable, or written by another generator (``format`` differs).
    """
    meta = root / "metadata.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta}: not a readable {format_name} metadata file ({e})") from e
    if data.get("format") != format_name:
        raise ValueError(f"{meta}: format {data.get('format')!r}, expected {format_name!r}")
    return data


def build_atomically(
    root: Path,
    canonical: Mapping[str, Any],
    version: int,
    format_name: str,
    overwrite: bool,
    build: Callable[[Path], dict[str, Any]],
) -> dict[str, Any]:
    """Builds a corpus with ``build(tmp)`` in a hidden sibling folder and renames it onto ``root``.

    An existing complete corpus with the same ``canonical`` arguments and ``version`` is
    returned as is (nothing rebuilt); one with other arguments is replaced only with
    ``overwrite``. ``root`` is never seen half-written (``build`` writes ``metadata.json``
    last; the rename is atomic).

    Raises:
      ValueError: ``root`` holds another corpus (without ``overwrite``) or other files.
    """
    label = format_name.replace("-", " ")  # "hamjax synthetic"
    existing = load_metadata(root, format_name) if root.exists() else None
    if existing is not None:
        if existing.get("version") == version and existing.get("args") == canonical:
            return existing
        if not overwrite:
            diff = sorted(k for k in canonical if existing.get("args", {}).get(k) != canonical[k])
            raise ValueError(
                f"{root}: holds a {label} corpus made with different arguments "
                f"(differing: {', '.join(diff) or 'generator version'}; version "
                f"{existing.get('version')} vs {version}); pass overwrite=True to replace it or "
                "choose another root"
            )
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(
            f"{root}: exists and is not a {label} corpus (no metadata.json); expected a "
            "missing or empty folder"
        )
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        meta = build(tmp)
        _publish(tmp, root, canonical, version, format_name, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_metadata(root, format_name) or meta


def _publish(
    tmp: Path,
    root: Path,
    canonical: Mapping[str, Any],
    version: int,
    format_name: str,
    overwrite: bool,
) -> None:
    """Renames the finished ``tmp`` onto ``root`` (replacing an old corpus when allowed)."""
    old = None
    existing = load_metadata(root, format_name) if root.exists() else None
    if existing is not None:
        if existing["args"] == canonical and existing["version"] == version:
            return  # a concurrent run finished the same corpus first; ours is discarded
        if not overwrite:
            raise ValueError(
                f"{root}: another corpus appeared while generating; pass overwrite=True"
            )
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(root, old)
    try:
        os.rename(tmp, root)  # atomic; replaces an empty directory
    except OSError:
        again = load_metadata(root, format_name) if root.exists() else None
        if again is None or again["args"] != canonical:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
