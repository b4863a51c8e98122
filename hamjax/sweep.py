"""Jitted ablations: many variants of one recipe trained by one compiled program.

``train.py ... --sweep head.margin=0.1,0.2 --sweep seed=0,1`` trains the product of the swept
values (``--zip``: the lists paired) in one jitted step: the whole
:class:`hamjax.train_state.TrainState` (params, BatchNorm statistics, optimiser state, step,
base key) is stacked on a leading ``variant`` axis and the step of :mod:`hamjax.train_step` is
``jax.vmap``-ped over it. The swept hyper-parameters are per-variant arrays, so they are
*traced* values inside the step::

    state [V, ...]  batch [B, S] (shared) or [V, B, S]  hp {field: [V]}
      --vmap(train_step)-->  state [V, ...], metrics {name: [V]}

What can be swept (:data:`SWEEPABLE`): ``seed`` (initialisation, the step keys and, with
``sweep.shared_batches = False``, the data order), the continuous head and optimiser
hyper-parameters (margin, scale, curvature ``c``, margin warm-up, learning rate, weight
decay) and ``head.name`` among heads whose parameters have one shape: a per-variant index
picks the head with ``lax.switch`` (``am``/``aam``/``ram``/``softmax_scaled``, or
``h_softmax``/``ham_softmax``). Fields that change a shape (model width, crop length, batch
size, ...) or the program's structure are refused (:func:`parse_sweeps`) with how to run them
as separate jobs.

Data: every variant sees the same global batch (one input pipeline in ``config.seed``'s order,
the default) or, with ``sweep.shared_batches = False``, its own seeded order (one pipeline per
distinct variant seed, the batches stacked ``[V, B, S]``). The mesh is 2-D, ``(variant,
data)`` (:func:`make_sweep_mesh`): variants are spread over devices as well as examples.

Work directory layout (the trainer is :func:`hamjax.train_lib.train_and_evaluate`)::

    WORKDIR/config.json             the base config, resolved, with its sweep section
    WORKDIR/sweep.json              the variants: name, work directory, overrides
    WORKDIR/checkpoints/<step>/     the stacked state [V, ...] and the input state (resume)
    WORKDIR/variants/<name>/        an ordinary train.py work directory per variant:
        config.json                 the variant's resolved config (no sweep section)
        checkpoints/<step>/         that variant's slice of each kept sweep checkpoint
        final/                      the average of its last epoch checkpoints

The variant directories are written when the sweep finishes (:func:`write_variant`), so
``eval.py``, :class:`hamjax.inference.Verifier`, the ``hamjax`` command and
``scripts/analyze.py`` read each one unchanged; ``eval.py --workdir WORKDIR`` evaluates them
all and writes ``WORKDIR/eval/sweep_table.md``.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hamjax import checkpointing, heads, io_utils, train_state
from hamjax.model_builder import build_modules
from hamjax.train_state import TrainState, make_optimizer
from hamjax.train_step import make_train_step

log = logging.getLogger("hamjax.sweep")

SWEEP_FILE = "sweep.json"
VARIANTS_DIR = "variants"

#: Fields a sweep may vary in one program. ``head.name`` picks among heads of one parameter
#: shape; the others are traced values inside the step (``seed`` only sets initial values).
SWEEPABLE = (
    "seed",
    "head.name",
    "head.margin",
    "head.scale",
    "head.c",
    "head.euclidean_margin",
    "head.margin_warmup_steps",
    "optim.learning_rate",
    "optim.weight_decay",
)
#: ``sweep.vectorize`` values (:func:`vectorize_mode`).
VECTORIZE = ("auto", "vmap", "map", "unroll")
#: Swept fields that become traced per-variant values of the step.
_TRACED_HEAD = ("margin", "scale", "c", "euclidean_margin")
_TRACED_OPTIM = ("learning_rate", "weight_decay")
#: Prefixes of fields that change an array's shape (parameters, batch, features).
_SHAPE_PREFIXES = (
    "model.",
    "features.",
    "data.crop",
    "data.",
    "train.global_batch_size",
    "head.num_classes",
    "head.use_bias",
    "head.learn_c",
    "head.weights",
    "head.euclidean",
)


# --------------------------------------------------------------------------- the config section


def validate_config(section: Any) -> None:
    """Checks a config's ``sweep`` section (this module is its reader).

    Raises:
      ValueError: ``config.sweep.<field>``, its value and what was expected.
    """
    axes = section.get("axes", ())
    if not isinstance(axes, (tuple, list)) or not all(isinstance(a, str) for a in axes):
        raise ValueError(
            f"config.sweep.axes = {axes!r} is invalid: expected a tuple of 'field=v1,v2' strings"
        )
    for field in ("zip", "shared_batches"):
        value = section.get(field)
        if not isinstance(value, bool):
            raise ValueError(f"config.sweep.{field} = {value!r} is invalid: expected True/False")
    mode = section.get("vectorize", "auto")
    if mode not in VECTORIZE:
        raise ValueError(
            f"config.sweep.vectorize = {mode!r} is invalid: expected one of {', '.join(VECTORIZE)}"
        )


#: ``auto`` unrolls up to this many variants on CPU (compile time grows with the count).
MAX_UNROLL = 16


def vectorize_mode(section: Any, num_variants: int = 1, backend: str | None = None) -> str:
    """How the sweep's program runs its variants: ``sweep.vectorize``, with ``"auto"``
    resolved for ``backend`` (default: JAX's default backend).

    Measured on 2 CPU cores, ``configs/mbrola.py`` x 8 seeds (seconds per variant-step; one
    ordinary run: 0.109): ``vmap`` 0.169 (a convolution over per-variant weights becomes a
    grouped convolution, slow on XLA:CPU), ``map`` 0.404 (``lax.map``'s loop body runs
    without XLA:CPU's concurrency), ``unroll`` 0.090 (V independent copies of the step: the
    runtime runs them side by side on the cores), but it compiles in 89 s instead of 16. So
    ``auto`` = ``unroll`` on CPU up to :data:`MAX_UNROLL` variants, else ``vmap`` (which fills
    an accelerator).
    """
    mode = section.get("vectorize", "auto")
    if mode != "auto":
        return mode
    cpu = (backend or jax.default_backend()) == "cpu"
    return "unroll" if cpu and num_variants <= MAX_UNROLL else "vmap"


def is_sweep(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config`` asks for a sweep (``sweep.axes`` non-empty)."""
    return "sweep" in config and bool(config.sweep.get("axes", ()))


# --------------------------------------------------------------------------- parsing


def _lookup(config: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise ValueError(f"--sweep {key}=...: config has no field {key!r}")
        node = node[part]
    return node


def _refusal(key: str) -> str:
    if any(key.startswith(p) for p in _SHAPE_PREFIXES):
        why = "changes the shape of the parameters or of the batch"
    else:
        why = "decides the structure of the compiled step (it is not a traced hyper-parameter)"
    return (
        f"--sweep {key}=...: {key} {why}, so its variants cannot share one compiled program. "
        f"Run each value as a separate job: train.py --config ... --config.{key}=VALUE "
        f"--workdir DIR_VALUE. Sweepable fields: {', '.join(SWEEPABLE)}"
    )


def _convert(key: str, text: str, like: Any) -> Any:
    text = text.strip()
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
    except ValueError:
        raise ValueError(
            f"--sweep {key}: {text!r} is not a {type(like).__name__} like the config's {like!r}"
        ) from None
    return text


def parse_sweeps(
    config: ml_collections.ConfigDict, axes: Sequence[str], *, zip_axes: bool = False
) -> list[dict[str, Any]]:
    """The variants of ``--sweep`` specs: the product of the axes, or (``zip_axes``) paired.

    Args:
      config: the base config (gives each field's type).
      axes: ``"field=v1,v2,..."`` strings, e.g. ``"head.margin=0.1,0.2"``.
      zip_axes: pair the i-th values of every axis (all lists of one length).

    Returns:
      One ``{field: value}`` dict per variant, in order (the last axis varies fastest).

    Raises:
      ValueError: a malformed spec, an unknown or repeated field, a field that changes a
        shape or the step's structure (the message says how to run it as separate jobs),
        values of the wrong type, or zipped lists of different lengths.
    """
    parsed: list[tuple[str, list[Any]]] = []
    for spec in axes:
        key, sep, values = spec.partition("=")
        key = key.strip().removeprefix("config.")
        if not sep or not key or not values.strip():
            raise ValueError(
                f"--sweep {spec!r}: expected FIELD=V1,V2,... (e.g. head.margin=0.1,0.2)"
            )
        like = _lookup(config, key)
        if key not in SWEEPABLE:
            raise ValueError(_refusal(key))
        if key in (k for k, _ in parsed):
            raise ValueError(f"--sweep {key} is given twice; list all its values in one flag")
        parsed.append((key, [_convert(key, v, like) for v in values.split(",")]))
    if zip_axes:
        lengths = {k: len(v) for k, v in parsed}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"--zip needs lists of one length, got {lengths}")
        combos = list(zip(*(v for _, v in parsed), strict=True))
    else:
        combos = list(itertools.product(*(v for _, v in parsed)))
    keys = [k for k, _ in parsed]
    variants = [dict(zip(keys, combo, strict=True)) for combo in combos]
    if len({json.dumps(v, sort_keys=True) for v in variants}) != len(variants):
        raise ValueError(f"--sweep {list(axes)}: some variants are identical")
    return variants


def variant_name(overrides: Mapping[str, Any]) -> str:
    """A directory name: ``{"head.margin": 0.1, "seed": 0}`` -> ``margin0.1-seed0``."""
    parts = []
    for key, value in overrides.items():
        label = str(value) if key == "head.name" else f"{key.split('.')[-1]}{value}"
        parts.append("".join(ch if ch.isalnum() or ch in "._" else "_" for ch in label))
    return "-".join(parts)


def variant_config(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """``config`` with one variant's values and no sweep section (an ordinary run's config)."""
    out = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node[part]
        node[last] = value
    if "sweep" in out:
        out.sweep.axes = ()
    return out


def check_heads(names: Sequence[str]) -> None:
    """Refuses a head sweep over heads whose parameters differ in shape or structure."""
    classes = {heads.HEADS[n] for n in names}
    if len(classes) > 1 or (
        len(set(names)) > 1 and classes & {heads.LinearHead, heads.CombinedHead}
    ):
        raise ValueError(
            f"--sweep head.name={','.join(names)}: these heads have parameters of different "
            "shapes (softmax has a bias, combined two class tables, the cosine heads a "
            "'weights' table and the hyperbolic ones 'centres'), so one program cannot switch "
            "between them. Sweep one shape-compatible group per job: am,aam,ram,softmax_scaled "
            "or h_softmax,ham_softmax; softmax and combined run alone."
        )


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    """The variants of a sweep: names, configs and the traced per-variant values."""

    base: ml_collections.ConfigDict
    names: list[str]
    overrides: list[dict[str, Any]]
    configs: list[ml_collections.ConfigDict]
    head_names: tuple[str, ...]
    hp: dict[str, np.ndarray]  # field -> [V] (traced inside the step)

    @property
    def size(self) -> int:
        return len(self.names)


def make_plan(config: ml_collections.ConfigDict) -> Plan:
    """Parses ``config.sweep`` and validates every variant's config (each by its owners).

    Raises:
      ValueError: see :func:`parse_sweeps` and :func:`check_heads`; an invalid variant
        (named), or ``head.shard_centres`` (not supported in sweeps).
    """
    validate_config(config.sweep)
    overrides = parse_sweeps(config, tuple(config.sweep.axes), zip_axes=bool(config.sweep.zip))
    if config.head.get("shard_centres"):
        raise ValueError("config.head.shard_centres = True is not supported in a sweep")
    configs = [variant_config(config, o) for o in overrides]
    names = [variant_name(o) for o in overrides]
    head_names = tuple(dict.fromkeys(c.head.name for c in configs))
    check_heads(head_names)
    hp: dict[str, np.ndarray] = {}
    swept = set().union(*overrides)
    for field in _TRACED_HEAD:
        if f"head.{field}" in swept:
            hp[f"head.{field}"] = np.asarray([c.head[field] for c in configs], np.float32)
    for field in _TRACED_OPTIM:
        if f"optim.{field}" in swept:
            hp[f"optim.{field}"] = np.asarray([c.optim[field] for c in configs], np.float32)
    if "head.margin_warmup_steps" in swept:
        hp["head.margin_warmup_steps"] = np.asarray(
            [c.head.margin_warmup_steps for c in configs], np.int32
        )
    if len(head_names) > 1:
        hp["head.index"] = np.asarray([head_names.index(c.head.name) for c in configs], np.int32)
    return Plan(config, names, overrides, configs, head_names, hp)


# --------------------------------------------------------------------------- traced config view


class _SectionView:
    """A config section whose swept fields read as traced values (read-only)."""

    def __init__(self, raw: Any, traced: Mapping[str, Any]) -> None:
        self._raw, self._traced = raw, dict(traced)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self._traced[key] if key in self._traced else getattr(self._raw, key)

    def __getitem__(self, key: str) -> Any:
        return self.__getattr__(key)

    def __contains__(self, key: str) -> bool:
        return key in self._raw

    def get(self, key: str, default: Any = None) -> Any:
        return self._traced[key] if key in self._traced else self._raw.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {**self._raw.to_dict(), **self._traced}


class _ConfigView(_SectionView):
    """A config whose ``head`` / ``optim`` sections carry one variant's traced values."""

    def __init__(self, raw: ml_collections.ConfigDict, hp: Mapping[str, Any]) -> None:
        sections: dict[str, Any] = {}
        for section in ("head", "optim"):
            fields = {k.split(".", 1)[1]: v for k, v in hp.items() if k.startswith(section + ".")}
            fields.pop("index", None)
            fields.pop("margin_warmup_steps", None)  # the schedule is built below instead
            if section == "head" and raw.head.get("learn_c"):
                fields.pop("c", None)  # c is then only the initial value of a parameter
            sections[section] = _SectionView(raw[section], fields)
        super().__init__(raw, sections)


def traced_optimizer(config: ml_collections.ConfigDict, hp: Mapping[str, Any], spe: int) -> Any:
    """``make_optimizer`` with the swept optimiser fields as (traced) per-variant values."""
    return make_optimizer(_ConfigView(config, hp), spe)


def _warmup(steps: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """:func:`hamjax.heads.margin_schedule` with a traced number of warm-up steps."""

    def schedule(step: jax.Array) -> jax.Array:
        n = jnp.maximum(steps, 1).astype(jnp.float32)
        count = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, n)
        ramp = (0.0 - 1.0) * (1 - count / n) + 1.0  # optax.linear_schedule(0, 1, n)
        return jnp.where(steps > 0, ramp, jnp.ones((), jnp.float32))

    return schedule


class _SwitchHead:
    """Heads of one parameter structure, picked per variant by an index (``lax.switch``)."""

    def __init__(self, candidates: Sequence[Any], index: jax.Array) -> None:
        self.candidates, self.index = list(candidates), index

    def apply(self, variables: Any, *args: Any, method: Any = None, **kwargs: Any) -> Any:
        branches = [
            lambda v, *a, h=h: h.apply(v, *a, method=method, **kwargs) for h in self.candidates
        ]
        return jax.lax.switch(self.index, branches, variables, *args)


def _head(plan: Plan, view: _ConfigView, hp: Mapping[str, Any], num_classes: int) -> Any:
    section = view.head.to_dict()
    candidates = [heads.from_config({**section, "name": n}, num_classes) for n in plan.head_names]
    if len(candidates) == 1:
        return candidates[0]
    return _SwitchHead(candidates, hp["head.index"])


# --------------------------------------------------------------------------- mesh and step


def make_sweep_mesh(
    num_variants: int, batch_size: int, devices: Sequence[Any] | None = None
) -> Mesh:
    """A ``(variant, data)`` mesh: the fewest devices on the variant axis that fit both counts.

    Raises:
      ValueError: no split of the devices fits ``num_variants`` and ``batch_size``.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    # Fewest devices on the variant axis first: with jax 0.10.2 on CPU, an encoder vmapped
    # over a *sharded* variant axis gave every variant the same (wrong) embeddings, so the
    # variants stay replicated unless the batch cannot be split over every device.
    for v in sorted(d for d in range(1, n + 1) if n % d == 0):
        if num_variants % v == 0 and batch_size % (n // v) == 0:
            return Mesh(np.asarray(devices).reshape(v, n // v), ("variant", "data"))
    raise ValueError(
        f"{num_variants} variants with config.train.global_batch_size = {batch_size} cannot be "
        f"split over {n} devices: expected the batch to be a multiple of the devices not used "
        "for variants"
    )


def make_sweep_step(
    plan: Plan, encoder: Any, num_classes: int, steps_per_epoch: int, mesh: Mesh, state_sh: Any
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict]]:
    """The jitted ``step(stacked_state, batch) -> (stacked_state, metrics)`` of a sweep.

    Each variant runs :func:`hamjax.train_step.make_train_step`'s step with its own traced
    hyper-parameters (head, optimiser, margin warm-up), batched by ``jax.vmap``, unrolled, or
    in a ``jax.lax.map`` loop (:func:`vectorize_mode`). Metrics come back as scalars:
    ``variants/<name>/<metric>`` per variant, and ``<metric>`` the mean over the variants
    (non-finite when any variant is, so the trainer's finiteness check sees it).
    """
    shared = bool(plan.base.sweep.shared_batches)
    hp_const = {k: jnp.asarray(v) for k, v in plan.hp.items()}
    base = plan.base

    def one(state: TrainState, batch: Mapping[str, jax.Array], hp: Mapping[str, jax.Array]):
        view = _ConfigView(base, hp)
        head = _head(plan, view, hp, num_classes)
        tx, schedule = make_optimizer(view, steps_per_epoch)
        margin_fn = (
            _warmup(hp["head.margin_warmup_steps"]) if "head.margin_warmup_steps" in hp else None
        )
        train_step = make_train_step(
            view, encoder, head, schedule, num_classes, None, margin_fn=margin_fn
        )
        rng = jax.random.fold_in(state.rng, state.step)
        new_state, metrics = train_step(state.replace(tx=tx), batch, rng)
        return new_state.replace(tx=state.tx), metrics

    mode = vectorize_mode(base.sweep, plan.size)

    def step(state: TrainState, batch: dict[str, jax.Array]):
        if mode == "vmap":
            new_state, metrics = jax.vmap(one, in_axes=(0, None if shared else 0, 0))(
                state, batch, hp_const
            )
        elif mode == "unroll":  # V independent copies of the step in one program
            outs = [
                one(
                    jax.tree.map(lambda a, i=i: a[i], state),
                    batch if shared else jax.tree.map(lambda a, i=i: a[i], batch),
                    {k: v[i] for k, v in hp_const.items()},
                )
                for i in range(plan.size)
            ]
            new_state, metrics = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        elif shared:  # one variant after another, each with a single run's ops
            new_state, metrics = jax.lax.map(lambda a: one(a[0], batch, a[1]), (state, hp_const))
        else:
            new_state, metrics = jax.lax.map(lambda a: one(*a), (state, batch, hp_const))
        flat = {k: jnp.mean(v) for k, v in metrics.items()}
        for i, name in enumerate(plan.names):
            flat.update({f"variants/{name}/{k}": v[i] for k, v in metrics.items()})
        return new_state, flat

    batch_spec = P("data") if shared else P("variant", "data")
    batch_sh = NamedSharding(mesh, batch_spec)
    return jax.jit(
        step,
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, NamedSharding(mesh, P())),
        donate_argnums=0,
    )


def per_variant_metrics(metrics: Mapping[str, float], names: Sequence[str]) -> dict[str, dict]:
    """``{"variants/<name>/<k>": v}`` -> ``{name: {k: v}}``."""
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    for key, value in metrics.items():
        if key.startswith("variants/"):
            name, _, metric = key[len("variants/") :].partition("/")
            out[name][metric] = value
    return out


# --------------------------------------------------------------------------- the stacked state


def _variant_tx(plan: Plan, i: int, spe: int) -> Any:
    hp = {k: jnp.asarray(v[i]) for k, v in plan.hp.items()}
    return traced_optimizer(plan.base, hp, spe)[0]


def _hp_key(plan: Plan, i: int) -> list[float]:
    """Variant ``i``'s traced values (its optimiser closes over them)."""
    return [float(v[i]) for _, v in sorted(plan.hp.items())]


def abstract_stacked_state(
    plan: Plan, encoder: Any, num_classes: int, spe: int, mesh: Mesh
) -> tuple[TrainState, Any]:
    """``(abstract stacked state with shardings, shardings)``: restore targets."""
    head = heads.from_config(plan.configs[0].head, num_classes)
    tx = _variant_tx(plan, 0, spe)
    one = jax.eval_shape(
        train_state._state_init_fn(plan.configs[0], encoder, head, tx),
        train_state.seed_array(plan.configs[0]),
    )
    # One sharding for every leaf (a pytree prefix): split on the leading variant axis.
    shardings = NamedSharding(mesh, P("variant"))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((plan.size, *x.shape), x.dtype, sharding=shardings), one
    )
    return abstract, shardings


def create_stacked_state(
    plan: Plan, encoder: Any, num_classes: int, spe: int, shardings: Any
) -> TrainState:
    """Each variant's fresh state (exactly as its own run creates it), stacked ``[V, ...]``."""
    states = []
    tx0 = _variant_tx(plan, 0, spe)
    inits: dict[str, Callable[[Any], TrainState]] = {}
    for i, config in enumerate(plan.configs):
        head = heads.from_config(config.head, num_classes)
        tx = _variant_tx(plan, i, spe)
        # Variants that differ only in their seed share one compiled initialiser.
        key = json.dumps({**config.to_dict(), "seed": None, "i": _hp_key(plan, i)},
                         sort_keys=True, default=str)  # fmt: skip
        if key not in inits:
            inits[key] = jax.jit(train_state._state_init_fn(config, encoder, head, tx))
        state = inits[key](train_state.seed_array(config))
        states.append(jax.device_get(state.replace(tx=tx0)))
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *states)
    return jax.device_put(stacked, shardings)


# --------------------------------------------------------------------------- input


def _encode(state: Any) -> Any:
    return {"b64": base64.b64encode(state).decode("ascii")} if isinstance(state, bytes) else state


def _decode(blob: Any) -> Any:
    return base64.b64decode(blob["b64"]) if isinstance(blob, dict) and "b64" in blob else blob


class StackedIterator:
    """One input pipeline per distinct variant seed; batches stacked ``[V, b, ...]``."""

    def __init__(self, make: Callable[[int], Any], seeds: Sequence[int]) -> None:
        self.seeds = [int(s) for s in seeds]
        self.iterators = {s: make(s) for s in dict.fromkeys(self.seeds)}

    def __iter__(self) -> StackedIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batches = {s: next(it) for s, it in self.iterators.items()}
        keys = batches[self.seeds[0]].keys()
        return {k: np.stack([np.asarray(batches[s][k]) for s in self.seeds]) for k in keys}

    def get_state(self) -> dict[str, Any]:
        return {str(s): _encode(it.get_state()) for s, it in self.iterators.items()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        for s, it in self.iterators.items():
            it.set_state(_decode(state[str(s)]))

    def variant_state(self, state: Mapping[str, Any], i: int) -> Any:
        """Variant ``i``'s own pipeline state out of :meth:`get_state`'s result."""
        return _decode(state[str(self.seeds[i])])

    def close(self) -> None:
        for it in self.iterators.values():
            it.close()


def stacked_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local ``[V, b, ...]`` batches -> global arrays split over ``(variant, data)``."""
    sharding = NamedSharding(mesh, P("variant", "data"))
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        shape = (v.shape[0], v.shape[1] * jax.process_count(), *v.shape[2:])
        out[k] = jax.make_array_from_process_local_data(sharding, v, shape)
    return out


# --------------------------------------------------------------------------- build


@dataclasses.dataclass
class Built:
    """What the trainer's loop needs for a sweep, built by :func:`build`."""

    mesh: Mesh
    encoder: Any
    step_fn: Callable[..., Any]
    state: TrainState
    abstract: TrainState
    iterator: Any
    ckpt: checkpointing.Checkpointer
    start: int
    to_global: Callable[[Mapping[str, Any]], dict[str, jax.Array]] | None
    data_of: Callable[[Any, int], Any]  # (saved input state, variant) -> that variant's


def build(
    config: ml_collections.ConfigDict,
    plan: Plan,
    make_iterator: Callable[[int], Any],
    ckpt: checkpointing.Checkpointer,
) -> Built:
    """Mesh, stacked state (restored or created), input and the vmapped step of a sweep.

    Args:
      config: the resolved base config.
      plan: :func:`make_plan` of it.
      make_iterator: ``seed -> `` this process's input pipeline in that seed's order.
      ckpt: the sweep's checkpoint manager (``WORKDIR/checkpoints``).
    """
    num_classes = int(config.head.num_classes)
    spe = int(config.train.steps_per_epoch)
    mesh = make_sweep_mesh(plan.size, int(config.train.global_batch_size))
    encoder = build_modules(config, num_classes)[0]
    abstract, shardings = abstract_stacked_state(plan, encoder, num_classes, spe, mesh)
    if config.sweep.shared_batches:
        iterator, to_global = make_iterator(int(config.seed)), None
        data_of: Callable[[Any, int], Any] = lambda state, i: state  # noqa: E731
    else:
        iterator = StackedIterator(make_iterator, [c.seed for c in plan.configs])
        to_global = lambda local: stacked_batch(local, mesh)  # noqa: E731
        data_of = iterator.variant_state
    start = ckpt.latest_step()
    if start is not None:
        state, data_state = ckpt.restore_train_state(start, abstract)
        iterator.set_state(data_state)
        log.info("resumed the sweep from step %d in %s", start, ckpt.directory)
    else:
        state, start = create_stacked_state(plan, encoder, num_classes, spe, shardings), 0
    step_fn = make_sweep_step(plan, encoder, num_classes, spe, mesh, shardings)
    return Built(mesh, encoder, step_fn, state, abstract, iterator, ckpt, start, to_global, data_of)


# --------------------------------------------------------------------------- variant views


def write_manifest(workdir: Path, plan: Plan) -> None:
    """``WORKDIR/sweep.json``: the axes and, per variant, its name, directory and values."""
    io_utils.write_json(
        workdir / SWEEP_FILE,
        {
            "axes": list(plan.base.sweep.axes),
            "zip": bool(plan.base.sweep.zip),
            "shared_batches": bool(plan.base.sweep.shared_batches),
            "variants": [
                {"name": n, "workdir": f"{VARIANTS_DIR}/{n}", "overrides": o}
                for n, o in zip(plan.names, plan.overrides, strict=True)
            ],
        },
    )


def read_manifest(workdir: str | Path) -> dict[str, Any] | None:
    """``WORKDIR/sweep.json`` (None when ``workdir`` is not a sweep)."""
    path = Path(workdir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_variants(
    workdir: Path, plan: Plan, resolved: ml_collections.ConfigDict, built: Built
) -> dict[str, Path]:
    """Writes every variant's work directory: its config and its slice of each checkpoint.

    Each kept sweep checkpoint is read once and split: ``variants/<name>/checkpoints/<step>``
    holds that variant's TrainState (params, statistics, optimiser state, step, key) and its
    input state, exactly what its own run would have saved; averaging into ``final/`` is the
    caller's (:func:`hamjax.train_lib.average_checkpoints`).

    Returns:
      ``{name: WORKDIR/variants/<name>}``.
    """
    ckpt = checkpointing.Checkpointer(workdir / checkpointing.CHECKPOINT_DIR, async_save=False)
    steps = ckpt.all_steps()
    dirs, writers = {}, []
    for name, overrides in zip(plan.names, plan.overrides, strict=True):
        out = dirs[name] = workdir / VARIANTS_DIR / name
        out.mkdir(parents=True, exist_ok=True)
        config = variant_config(resolved, overrides)
        io_utils.write_json(out / checkpointing.CONFIG_FILE, config.to_dict())
        where = out / checkpointing.CHECKPOINT_DIR
        writers.append(checkpointing.Checkpointer(where, keep=max(len(steps), 1), async_save=False))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        serialization.to_state_dict(built.abstract),
    )
    for step in steps:
        state, data_state = ckpt.restore(step, target)
        host = jax.device_get(state)
        for i, writer in enumerate(writers):
            one = jax.tree.map(lambda x, i=i: np.asarray(x[i]), host)
            writer.save(step, one, built.data_of(data_state, i))
    for writer in [ckpt, *writers]:
        writer.close()
    return dirs


def describe(plan: Plan) -> str:
    """One log line per sweep: the variants and the traced fields."""
    traced = ", ".join(sorted(plan.hp)) or "none (seeds only)"
    return (
        f"sweep of {plan.size} variants in one program ({', '.join(plan.names)}); traced: "
        f"{traced}; batches {'shared' if plan.base.sweep.shared_batches else 'per variant'}; "
        f"variants by {vectorize_mode(plan.base.sweep, plan.size)}"
    )
