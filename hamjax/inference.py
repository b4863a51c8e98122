"""The inference layer: a trained model as a :class:`Verifier` that embeds and scores audio.

Everything in hamjax that turns audio into embeddings goes through this one chain::

    path or waveform [S]  --load/resample-->  float32 [S] at 16 kHz
      --length buckets + masks-->  [B, S_bucket]  --frontend (on device)-->  features [B, T, F]
      --encoder (eval mode)-->  embeddings [B, E]  --scoring (cosine / Poincaré)-->  score

Example::

    from hamjax.inference import Verifier
    v = Verifier.from_workdir("runs/quickstart")              # final/ if present, else latest
    e = v.embed("a.wav")                                     # np.ndarray [E]
    E = v.embed_batch(["a.wav", "b.wav"])                    # [2, E], length-bucketed, jitted
    s = v.score("a.wav", "b.wav")                            # the model's eval scoring

:func:`embed_stacked` embeds with several verifiers of one shape (a sweep's variants) at once.

``score`` uses the work directory's evaluation settings (``config.eval.protocol`` and
``config.eval.score``), so it equals the score ``eval.py`` writes to ``scores.txt`` for that
pair (without AS-norm).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import soxr

from hamjax import checkpointing, model_builder, models, scoring
from hamjax.constants import SAMPLE_RATE
from hamjax.data import audio
from hamjax.embeddings import DEFAULT_BATCH_SAMPLES, PROTOCOLS, Embeddings, extract_protocol

__all__ = ["Verifier", "embed_stacked", "resolve_checkpoint"]

log = logging.getLogger(__name__)

AudioInput = str | os.PathLike[str] | np.ndarray


def resolve_checkpoint(workdir: str | os.PathLike[str], checkpoint: str | int | None) -> str | int:
    """``"final"``, ``"latest"`` or a step from a flag; None = final if it exists, else latest.

    Raises:
      ValueError: anything else (the accepted values are named).
    """
    if checkpoint is None:
        checkpointing.recover_final(workdir)
        final = Path(workdir).expanduser() / checkpointing.FINAL_DIR
        return "final" if final.exists() else "latest"
    if isinstance(checkpoint, (int, np.integer)) and not isinstance(checkpoint, bool):
        return int(checkpoint)
    text = str(checkpoint).strip()
    if text in ("latest", "final"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"checkpoint={checkpoint!r}: expected 'latest', 'final' or a step number")


@functools.lru_cache(maxsize=16)
def _jitted_embed(encoder: Any, features_json: str) -> Callable[..., jax.Array]:
    """One jitted ``embed`` per (encoder, features): repeated loads reuse the compilations."""
    return jax.jit(models.make_embed_fn(encoder, json.loads(features_json)))


def _sharded_embed(
    encoder: Any, features_json: str, encoder_variables: Any, devices: Sequence[jax.Device]
) -> tuple[Callable[..., jax.Array], Any]:
    """The embed function with its batch split over ``devices`` (weights replicated on them)."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.asarray(list(devices)), ("data",))
    rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    fn = jax.jit(
        models.make_embed_fn(encoder, json.loads(features_json)),
        in_shardings=(replicated, rows, rows),
        out_shardings=rows,
    )
    return fn, jax.device_put(encoder_variables, replicated)


def _encoder_signature(verifier: Verifier) -> str:
    """What makes two verifiers' encoders one program: the model and feature settings."""
    return json.dumps(
        [verifier.config.model.to_dict(), model_builder.feature_kwargs(verifier.config)],
        sort_keys=True,
        default=str,
    )


@functools.lru_cache(maxsize=16)
def _jitted_stacked_embed(encoder: Any, features_json: str) -> Callable[..., jax.Array]:
    """``embed(variables [V, ...], waveforms [B, S], mask [B, S]) -> [B, V * E]``.

    The encoder is ``vmap``-ped over the stacked weights (the inputs are shared), and the
    ``[V, B, E]`` result is laid out as ``[B, V * E]`` so that the length-bucketed extraction
    (:func:`hamjax.embeddings.extract_protocol`) treats it as one wide embedding.
    """
    embed = models.make_embed_fn(encoder, json.loads(features_json))

    def stacked(variables: Any, waveforms: jax.Array, mask: jax.Array | None) -> jax.Array:
        per_variant = jax.vmap(embed, in_axes=(0, None, None))(variables, waveforms, mask)
        v, b, e = per_variant.shape
        return jnp.transpose(per_variant, (1, 0, 2)).reshape(b, v * e)

    return jax.jit(stacked)


def embed_stacked(
    verifiers: Sequence[Verifier],
    names: Sequence[str],
    load: Callable[[str], np.ndarray],
    *,
    protocol: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Embeddings]:
    """Embeddings of ``names`` by every one of ``verifiers`` in one pass over the audio.

    For the variants of a sweep (:mod:`hamjax.sweep`): their encoders share every shape, so
    their weights are stacked on a leading axis ``[V, ...]`` and one jitted program embeds each
    batch with all of them (the audio is read and bucketed once). Each device call holds
    ``batch_samples / V`` samples, so memory stays what one verifier uses.

    Args:
      verifiers: ``V`` verifiers with the same model and feature settings.
      names: utterance names, the row order.
      load: ``name -> float32 [S]`` at 16 kHz (e.g. ``verifiers[0].load`` of a path).
      protocol: ``"full"`` or ``"authors"`` (default: the first verifier's).
      progress: optional ``progress(done, total)`` callback.

    Returns:
      ``V`` :class:`hamjax.embeddings.Embeddings`, in the order of ``verifiers``; equal to each
      verifier's :meth:`Verifier.embed_protocol` up to float32 round-off.

    Raises:
      ValueError: no verifiers, or two whose encoders differ in a setting.
    """
    if not verifiers:
        raise ValueError("embed_stacked: no verifiers given")
    first = verifiers[0]
    signature = _encoder_signature(first)
    for i, v in enumerate(verifiers[1:], start=1):
        if _encoder_signature(v) != signature:
            raise ValueError(
                f"embed_stacked: verifier {i} ({v.workdir or 'in memory'}) has other model or "
                f"feature settings than verifier 0 ({first.workdir or 'in memory'}); only "
                "encoders of one shape can be stacked: embed them separately"
            )
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs),
        *[model_builder.encoder_variables(v.variables) for v in verifiers],
    )
    features = json.dumps(model_builder.feature_kwargs(first.config), sort_keys=True, default=str)
    wide = extract_protocol(
        _jitted_stacked_embed(first.encoder, features),
        stacked,
        list(names),
        load,
        protocol=protocol or first.protocol,
        batch_samples=max(1, first.batch_samples // len(verifiers)),
        progress=progress,
    )
    dim = wide.full.shape[-1] // len(verifiers)
    return [
        Embeddings(
            wide.names,
            np.ascontiguousarray(wide.full[..., i * dim : (i + 1) * dim]),
            None
            if wide.crops is None
            else np.ascontiguousarray(wide.crops[..., i * dim : (i + 1) * dim]),
        )
        for i in range(len(verifiers))
    ]


class Verifier:
    """A trained speaker model: embeds audio and scores pairs.

    Attributes:
      config: the resolved training config.
      step: the training step of the weights (for ``final``: the newest averaged step).
      encoder: the encoder module; ``head``: the head module.
      variables: ``{"params": {"encoder", "head"}, "batch_stats": {"encoder"}}`` on one device.
      encoder_variables: the encoder's ``{"params", "batch_stats"}`` (a view of ``variables``).
      protocol: ``"full"`` or ``"authors"`` (how :meth:`score` embeds an utterance).
      scoring: ``"cosine"`` or ``"poincare"`` (how :meth:`score` compares embeddings).
      batch_samples: audio samples per device call (bounds memory).
      min_seconds: shorter audio is refused (:class:`hamjax.data.audio.AudioError`).
      devices: embed on these devices, each batch split over them (default: one device, the
        layout eval.py's numbers are made with).
      workdir, checkpoint: where the weights came from (:meth:`from_workdir`), else None.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        variables: Mapping[str, Any],
        *,
        step: int = -1,
        protocol: str | None = None,
        scoring_kind: str | None = None,
        batch_samples: int = DEFAULT_BATCH_SAMPLES,
        min_seconds: float = audio.MIN_SECONDS,
        devices: Sequence[jax.Device] | None = None,
    ) -> None:
        self.config = config
        self.step = int(step)
        self.encoder, self.head = model_builder.build_modules(config)
        self.variables = variables
        ev = config.get("eval", ml_collections.ConfigDict())
        self.protocol = protocol or ev.get("protocol", "full")
        self.scoring = scoring_kind or ev.get("score", "cosine")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if self.scoring not in scoring.SCORES:
            raise ValueError(
                f"scoring={self.scoring!r}: expected one of {', '.join(scoring.SCORES)}"
            )
        self.batch_samples = int(batch_samples)
        self.min_seconds = float(min_seconds)
        features = json.dumps(model_builder.feature_kwargs(config), sort_keys=True, default=str)
        self.encoder_variables = model_builder.encoder_variables(variables)
        self._batch_multiple = 1
        if devices is not None and len(devices) > 1:
            self._embed_fn, self.encoder_variables = _sharded_embed(
                self.encoder, features, self.encoder_variables, devices
            )
            self._batch_multiple = len(devices)
        else:
            self._embed_fn = _jitted_embed(self.encoder, features)
        self._geometry: scoring.BallGeometry | None = None
        # Where the weights came from (set by from_workdir).
        self.workdir: Path | None = None
        self.checkpoint: str | int | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_workdir(
        cls, workdir: str | os.PathLike[str], checkpoint: str | int | None = None, **kwargs: Any
    ) -> Verifier:
        """Loads a ``train.py --workdir`` directory.

        Args:
          workdir: holds ``config.json`` and ``checkpoints/`` (and ``final/``).
          checkpoint: ``"final"`` (the averaged model), ``"latest"``, a step, or None (final
            if it exists, else latest).
          **kwargs: :class:`Verifier` options (``protocol``, ``scoring_kind``, ...).

        Raises:
          FileNotFoundError: no config or no such checkpoint.
          hamjax.checkpointing.CheckpointError: the checkpoint cannot be restored.
        """
        workdir = Path(workdir).expanduser().absolute()
        config = checkpointing.load_config(workdir)
        which = resolve_checkpoint(workdir, checkpoint)
        encoder, head = model_builder.build_modules(config)
        abstract = model_builder.abstract_variables(config, encoder, head)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
        )
        variables, step = checkpointing.load_variables(workdir, which, target)
        verifier = cls(config, variables, step=step, **kwargs)
        verifier.checkpoint = which
        verifier.workdir = workdir
        return verifier

    @classmethod
    def from_torch(
        cls,
        arch: str,
        state_dict: Mapping[str, Any],
        *,
        prefix: str | None = None,
        **kwargs: Any,
    ) -> Verifier:
        """A verifier from a PyTorch encoder ``state_dict`` of architecture ``arch`` (the
        authors' ECAPA-TDNN, WeSpeaker's ResNet; see :mod:`hamjax.pretrained`); cosine scoring.

        ``hamjax import-torch`` writes the same model as a work directory instead.
        """
        from hamjax import pretrained

        config = pretrained.config_for(arch)
        variables = pretrained.variables_from_torch(config, state_dict, prefix=prefix)
        return cls(config, variables, **kwargs)

    # ------------------------------------------------------------------ audio

    def load(
        self, item: AudioInput, *, sample_rate: int = SAMPLE_RATE, name: str = ""
    ) -> np.ndarray:
        """``item`` (a path, or a float waveform ``[S]`` at ``sample_rate``) as float32 at 16 kHz.

        Raises:
          hamjax.data.audio.AudioError: unreadable, not mono, or shorter than ``min_seconds``.
        """
        if isinstance(item, (str, os.PathLike)):
            wav = audio.load_audio(item)
            where = str(item)
        else:
            wav = np.asarray(item, dtype=np.float32)
            where = name or "waveform"
            if wav.ndim != 1:
                raise audio.AudioError(f"{where}: expected a mono waveform [S], got {wav.shape}")
            if sample_rate != SAMPLE_RATE:
                # The same resampler load_audio uses for files at other rates.
                wav = soxr.resample(wav, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        audio.check_duration(wav, path=where, min_seconds=self.min_seconds)
        return wav

    # ------------------------------------------------------------------ embedding

    def embed_waveforms_fn(self) -> Callable[..., jax.Array]:
        """The jitted ``embed(variables, waveforms [B, S], mask [B, S]) -> [B, E]``."""
        return self._embed_fn

    def embed_protocol(
        self,
        names: Sequence[str],
        load: Callable[[str], np.ndarray],
        *,
        protocol: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Embeddings:
        """Embeddings of ``names`` under ``protocol`` (streamed, length-bucketed, jitted).

        Args:
          names: utterance names, the row order.
          load: ``name -> float32 [S]`` at 16 kHz.
          protocol: ``"full"`` or ``"authors"`` (default: :attr:`protocol`).
          progress: optional ``progress(done, total)`` callback.
        """
        return extract_protocol(
            self._embed_fn,
            self.encoder_variables,
            list(names),
            load,
            protocol=protocol or self.protocol,
            batch_samples=self.batch_samples,
            progress=progress,
            batch_multiple=self._batch_multiple,
        )

    def embed_batch(
        self,
        items: Sequence[AudioInput],
        *,
        sample_rate: int = SAMPLE_RATE,
        progress: bool | Callable[[int, int], None] = False,
    ) -> np.ndarray:
        """Full-utterance embeddings ``[N, E]`` float32 of paths or waveforms, in order.

        Audio is loaded a chunk at a time while the previous chunk is embedded; utterances are
        batched in length buckets (one compilation per bucket). ``progress=True`` shows a tqdm
        bar.
        """
        keys = [str(i) for i in range(len(items))]
        loader = {k: item for k, item in zip(keys, items, strict=True)}
        callback = _tqdm_progress(len(items)) if progress is True else (progress or None)
        emb = self.embed_protocol(
            keys,
            lambda k: self.load(loader[k], sample_rate=sample_rate, name=f"waveform {k}"),
            protocol="full",
            progress=callback,
        )
        return emb.full

    def embed(self, item: AudioInput, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """The full-utterance embedding ``[E]`` float32 of a path or a waveform ``[S]``."""
        return self.embed_batch([item], sample_rate=sample_rate)[0]

    # ------------------------------------------------------------------ scoring

    @property
    def geometry(self) -> scoring.BallGeometry:
        """The head's ball (hyperbolic heads only; raises ``ValueError`` otherwise)."""
        if self._geometry is None:
            self._geometry = scoring.ball_geometry(
                self.head, self.variables["params"]["head"], str(self.config.head.name)
            )
        return self._geometry

    def score_embeddings(
        self, emb: Embeddings, enroll_idx: np.ndarray, test_idx: np.ndarray
    ) -> np.ndarray:
        """``[N]`` scores of trials given by rows of ``emb``, with :attr:`scoring`."""
        geometry = self.geometry if self.scoring == "poincare" else None
        return scoring.score_trials(
            emb, enroll_idx, test_idx, score=self.scoring, geometry=geometry
        )

    def score(self, a: AudioInput, b: AudioInput, *, sample_rate: int = SAMPLE_RATE) -> float:
        """The score of the pair ``(a, b)``: higher means more likely the same speaker.

        Embeds both under :attr:`protocol` and compares them with :attr:`scoring` (the work
        directory's ``eval`` settings, as ``eval.py`` does without normalisation).
        """
        items = {"a": a, "b": b}
        emb = self.embed_protocol(
            ["a", "b"], lambda k: self.load(items[k], sample_rate=sample_rate, name=k)
        )
        return float(self.score_embeddings(emb, np.array([0]), np.array([1]))[0])


def _tqdm_progress(total: int) -> Callable[[int, int], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="utt", dynamic_ncols=True, leave=False)

    def update(done: int, total_: int) -> None:
        bar.update(done - bar.n)
        if done >= total_:
            bar.close()

    return update
