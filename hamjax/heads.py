"""Flax (Linen) classification heads chosen by name, and the margin warm-up schedule.

A head holds the class parameters and turns embeddings ``[B, D]`` into logits ``[B, C]``::

    head = create_head("ham_softmax", num_classes=5994, c=3.0, margin=0.2)
    params = head.init(rng, embeddings, labels)["params"]
    out = head.apply({"params": params}, embeddings, labels, margin_scale=schedule(step))
    loss = head_loss(out, labels).mean()          # [B] -> scalar
    accuracy = (out.scores.argmax(-1) == labels).mean()

``HeadOutput.terms`` lists ``(weight, logits)`` pairs with margins applied (one pair for every
head but ``combined``); ``HeadOutput.scores`` are margin-free logits for accuracy.

Registry (:data:`HEADS`), with the authors' settings as defaults (see ``shared/METHOD.md``):

=================  ===========================================================================
``softmax``        linear layer with bias on the raw embedding
``softmax_scaled`` ``s cos(theta)``: normalised embedding and weights, no bias, no margin
                   (NormFace); the margin heads with ``m = 0``, so it isolates the margin's effect
``am``             AM-Softmax, ``s = 30``, ``m = 0.2``
``aam``            AAM-Softmax (ArcFace), ``s = 30``, ``m = 0.2``
``ram``            Real AM-Softmax, ``s = 30``, ``m = 0.2``
``h_softmax``      H-Softmax, ``c = 5``, ``s = 30``, no margin
``ham_softmax``    HAM-Softmax, ``c = 3``, ``s = 30``, ``m = 0.2``
``combined``       ``0.3 * RAM + 0.7 * HAM`` on the same embedding (the authors' "E.H." run)
=================  ===========================================================================

Cosine weights are Xavier-normal; hyperbolic centres are ``N(0, 1e-3^2)`` as in the authors'
code. With ``learn_c=True`` the curvature is ``softplus(raw)``, ``raw`` initialised so that it
starts at ``c``; read it with ``head.apply(v, method="curvature")`` to log it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from hamjax import losses

__all__ = [
    "HEADS",
    "CombinedHead",
    "CosineHead",
    "HeadOutput",
    "HyperbolicHead",
    "LinearHead",
    "create_head",
    "from_config",
    "is_hyperbolic",
    "head_loss",
    "margin_schedule",
]

_CENTRE_STDDEV = 1e-3  # the authors' N(0, 1e-3^2) initialisation of hyperbolic centres


class HeadOutput(NamedTuple):
    """What every head returns.

    Attributes:
      terms: ``((weight, logits [B, C]), ...)`` with margins applied; the loss is
        ``sum_k weight_k * CE(logits_k, labels)`` (see :func:`head_loss`).
      scores: ``[B, C]`` margin-free logits; ``argmax`` gives the predicted class.
    """

    terms: tuple[tuple[float, jax.Array], ...]
    scores: jax.Array


# The term weights are configuration constants, not data: registering them as static pytree
# metadata keeps them Python floats through jit / grad / scan instead of traced arrays.
jax.tree_util.register_pytree_node(
    HeadOutput,
    lambda out: ((tuple(z for _, z in out.terms), out.scores), tuple(w for w, _ in out.terms)),
    lambda weights, children: HeadOutput(
        tuple(zip(weights, children[0], strict=True)), children[1]
    ),
)


def head_loss(output: HeadOutput, labels: ArrayLike) -> jax.Array:
    """Per-example loss ``sum_k w_k CE(logits_k, labels)``, shape ``[B]``.

    Args:
      output: a head's :class:`HeadOutput`.
      labels: ``[B]`` integer class indices.

    Returns:
      ``[B]`` float losses (take ``.mean()`` for the batch loss).
    """
    labels = jnp.asarray(labels)
    total = 0.0
    for weight, logits in output.terms:
        total = total + weight * optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return total


def margin_schedule(warmup_steps: int, start_step: int = 0) -> Callable[[ArrayLike], jax.Array]:
    """Margin warm-up: a scale rising linearly from 0 to 1 (WeSpeaker's margin scheduler).

    .. math::

       \\text{scale}(t) = \\operatorname{clip}\\bigl((t - t_0) / N, 0, 1\\bigr)

    Pass the result as ``margin_scale`` to a head; it multiplies every margin. The margin is 0
    before ``start_step`` (plain softmax-like training lets a fresh network find the classes)
    and reaches its configured value after ``start_step + warmup_steps``.

    Args:
      warmup_steps: ``N >= 0``; 0 means no warm-up (the scale is always 1).
      start_step: ``t_0 >= 0``, the step at which the ramp starts.

    Returns:
      An optax-style schedule ``step -> scale`` in ``[0, 1]`` (jittable).

    Raises:
      ValueError: negative ``warmup_steps`` or ``start_step``.
    """
    for name, value in (("warmup_steps", warmup_steps), ("start_step", start_step)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if warmup_steps == 0:
        # optax.linear_schedule returns its *initial* value when transition_steps == 0.
        return lambda step: jnp.ones((), jnp.float32) + 0.0 * jnp.asarray(step, jnp.float32)
    return optax.linear_schedule(
        init_value=0.0,
        end_value=1.0,
        transition_steps=int(warmup_steps),
        transition_begin=int(start_step),
    )


def _check_head_fields(**fields: Any) -> None:
    """Validates the hyper-parameters a head was built with (called from ``setup``)."""
    # Traced values (a sweep's per-variant hyper-parameters) were range-checked in the config.
    fields = {k: v for k, v in fields.items() if not isinstance(v, jax.Array)}
    for name in ("scale", "c"):
        if name in fields:
            value = fields[name]
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"head field {name} must be a finite number > 0, got {value!r}")
    for name in ("margin", "euclidean_margin"):
        value = fields.get(name)
        if value is not None and not (
            isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
        ):
            raise ValueError(f"head field {name} must be a finite number >= 0, got {value!r}")
    if fields.get("num_classes", 1) < 1:
        raise ValueError(f"num_classes must be >= 1, got {fields['num_classes']!r}")


class LinearHead(nn.Module):
    """Plain softmax: ``z = W e + b`` (``softmax`` in the registry).

    Attributes:
      num_classes: ``C``.
      use_bias: add a bias (the authors' Softmax baseline has one).
    """

    num_classes: int
    use_bias: bool = True

    def __post_init__(self) -> None:
        _check_head_fields(num_classes=self.num_classes)
        super().__post_init__()

    def setup(self) -> None:
        self.dense = nn.Dense(self.num_classes, use_bias=self.use_bias)

    def __call__(
        self, embeddings: jax.Array, labels: jax.Array | None = None, margin_scale: ArrayLike = 1.0
    ) -> HeadOutput:
        """Args: embeddings ``[B, D]``; labels and margin_scale are unused. Returns logits."""
        del labels, margin_scale  # no margin
        logits = self.dense(jnp.asarray(embeddings, jnp.float32))
        return HeadOutput(terms=((1.0, logits),), scores=logits)


class CosineHead(nn.Module):
    """Cosine-logit head: ``softmax_scaled`` (``kind=None``), ``am``, ``aam`` or ``ram``.

    Attributes:
      num_classes: ``C``.
      kind: ``None`` (no margin, ``s cos``) or a :data:`hamjax.losses.COSINE_KINDS` entry.
      scale: ``s``.
      margin: ``m`` (ignored for ``kind=None``).
    """

    num_classes: int
    kind: str | None = "am"
    scale: float = 30.0
    margin: float = 0.2

    def __post_init__(self) -> None:
        _check_head_fields(num_classes=self.num_classes, scale=self.scale, margin=self.margin)
        if self.kind is not None and self.kind not in losses.COSINE_KINDS:
            raise ValueError(
                f"head field kind must be None or one of {losses.COSINE_KINDS}, got {self.kind!r}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, embeddings: jax.Array, labels: jax.Array | None = None, margin_scale: ArrayLike = 1.0
    ) -> HeadOutput:
        """Args: embeddings ``[B, D]``, labels ``[B]`` or None, margin_scale in [0, 1]."""
        embeddings = jnp.asarray(embeddings, jnp.float32)
        weights = self.param(
            "weights",
            nn.initializers.xavier_normal(),
            (self.num_classes, embeddings.shape[-1]),
            jnp.float32,
        )
        # With labels, XLA merges this with the identical normalisation and matmul inside the
        # margin logits below (common-subexpression elimination under jit).
        scores = losses.cosine_logits(embeddings, weights, None, scale=self.scale)
        if labels is None or self.kind is None:
            return HeadOutput(terms=((1.0, scores),), scores=scores)
        logits = losses.cosine_logits(
            embeddings,
            weights,
            labels,
            scale=self.scale,
            margin=self.margin * margin_scale,
            kind=self.kind,
        )
        return HeadOutput(terms=((1.0, logits),), scores=scores)


def _inverse_softplus(y: float) -> float:
    # softplus(x) = log(1 + e^x)  =>  x = log(e^y - 1) = y + log(1 - e^-y) (stable for large y).
    return y + math.log(-math.expm1(-y))


class HyperbolicHead(nn.Module):
    """H-Softmax (``margin=0``) / HAM-Softmax head: logits ``-s (d(x, w_j) + m [j = y])``.

    Attributes:
      num_classes: ``C``.
      scale: ``s``.
      margin: ``m`` (distance units).
      c: curvature (initial value when ``learn_c``).
      mode: ``"clip"`` (the authors') or ``"expmap"`` (curvature-consistent); see
        :func:`hamjax.losses.hyperbolic_logits`.
      learn_c: learn ``c = softplus(raw)`` with plain gradient descent.
    """

    num_classes: int
    scale: float = 30.0
    margin: float = 0.2
    c: float = 3.0
    mode: str = "clip"
    learn_c: bool = False

    def __post_init__(self) -> None:
        _check_head_fields(
            num_classes=self.num_classes, scale=self.scale, margin=self.margin, c=self.c
        )
        if self.mode not in losses.MODES:
            raise ValueError(f"head field mode must be one of {losses.MODES}, got {self.mode!r}")
        super().__post_init__()

    def setup(self) -> None:
        if self.learn_c:
            init = _inverse_softplus(float(self.c))
            self.c_raw = self.param("c_raw", lambda _: jnp.asarray(init, jnp.float32))

    def curvature(self) -> jax.Array:
        """The curvature ``c`` in use, a float32 scalar (``softplus(raw)`` when learnt)."""
        if self.learn_c:
            return jax.nn.softplus(self.c_raw)
        return jnp.asarray(self.c, jnp.float32)

    def ball_embed(self, embeddings: jax.Array) -> jax.Array:
        """Embeddings ``[B, D]`` mapped into the ball exactly as the head does, ``[B, D]``."""
        return losses.to_ball(
            jnp.asarray(embeddings, jnp.float32), c=self.curvature(), mode=self.mode
        )

    @nn.compact
    def __call__(
        self, embeddings: jax.Array, labels: jax.Array | None = None, margin_scale: ArrayLike = 1.0
    ) -> HeadOutput:
        """Args: embeddings ``[B, D]``, labels ``[B]`` or None, margin_scale in [0, 1]."""
        embeddings = jnp.asarray(embeddings, jnp.float32)
        # Created here (not in setup) because D is known only from the input.
        centres = self.param(
            "centres",
            nn.initializers.normal(stddev=_CENTRE_STDDEV),
            (self.num_classes, embeddings.shape[-1]),
            jnp.float32,
        )
        c = self.curvature()
        common = dict(c=c, scale=self.scale, mode=self.mode)
        if labels is None:
            scores = losses.hyperbolic_logits(embeddings, centres, None, **common)
            return HeadOutput(terms=((1.0, scores),), scores=scores)
        margin = self.margin * margin_scale
        logits = losses.hyperbolic_logits(embeddings, centres, labels, margin=margin, **common)
        # Scores are the same distances without the margin: adding it back avoids a second
        # distance matrix (and keeps the exactly recomputed target distance).
        target = labels[:, None] == jnp.arange(self.num_classes)[None, :]
        scores = logits + self.scale * margin * target.astype(logits.dtype)
        return HeadOutput(terms=((1.0, logits),), scores=scores)


class CombinedHead(nn.Module):
    """``lambda1 * Euclidean margin head + lambda2 * HAM head`` on the same embedding.

    The authors' "E.H." run is ``0.3 * RAM + 0.7 * HAM``. Scores (for accuracy) are those of the
    hyperbolic head, which is the one evaluated.

    Attributes:
      num_classes: ``C``.
      euclidean: ``"am"``, ``"aam"`` or ``"ram"``.
      weights: ``(lambda1, lambda2)``, both ``>= 0``.
      scale: ``s``, shared by both heads.
      margin: HAM margin.
      euclidean_margin: margin of the Euclidean head (``None``: same as ``margin``).
      c, mode, learn_c: as in :class:`HyperbolicHead`.
    """

    num_classes: int
    euclidean: str = "ram"
    weights: tuple[float, float] = (0.3, 0.7)
    scale: float = 30.0
    margin: float = 0.2
    euclidean_margin: float | None = None
    c: float = 3.0
    mode: str = "clip"
    learn_c: bool = False

    def __post_init__(self) -> None:
        _check_head_fields(
            num_classes=self.num_classes,
            scale=self.scale,
            margin=self.margin,
            euclidean_margin=self.euclidean_margin,
            c=self.c,
        )
        if self.mode not in losses.MODES:
            raise ValueError(f"head field mode must be one of {losses.MODES}, got {self.mode!r}")
        if len(self.weights) != 2 or any(
            not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0) for w in self.weights
        ):
            raise ValueError(
                f"head field weights must be two finite numbers >= 0, got {self.weights!r}"
            )
        if self.euclidean not in losses.COSINE_KINDS:
            raise ValueError(
                f"head field euclidean must be one of {losses.COSINE_KINDS}, got {self.euclidean!r}"
            )
        super().__post_init__()

    def setup(self) -> None:
        m_e = self.margin if self.euclidean_margin is None else self.euclidean_margin
        self.euclidean_head = CosineHead(
            self.num_classes, kind=self.euclidean, scale=self.scale, margin=m_e
        )
        self.hyperbolic_head = HyperbolicHead(
            self.num_classes,
            scale=self.scale,
            margin=self.margin,
            c=self.c,
            mode=self.mode,
            learn_c=self.learn_c,
        )

    def curvature(self) -> jax.Array:
        """The hyperbolic head's curvature, a float32 scalar."""
        return self.hyperbolic_head.curvature()

    def ball_embed(self, embeddings: jax.Array) -> jax.Array:
        """Embeddings mapped into the hyperbolic head's ball, ``[B, D]``."""
        return self.hyperbolic_head.ball_embed(embeddings)

    def __call__(
        self, embeddings: jax.Array, labels: jax.Array | None = None, margin_scale: ArrayLike = 1.0
    ) -> HeadOutput:
        """Args: embeddings ``[B, D]``, labels ``[B]`` or None, margin_scale in [0, 1]."""
        eu = self.euclidean_head(embeddings, labels, margin_scale)
        hy = self.hyperbolic_head(embeddings, labels, margin_scale)
        w_e, w_h = (float(w) for w in self.weights)
        return HeadOutput(terms=((w_e, eu.terms[0][1]), (w_h, hy.terms[0][1])), scores=hy.scores)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How a registry name builds its module: the class, fixed fields, accepted overrides."""

    cls: type[nn.Module]
    fixed: dict[str, Any]
    accepted: tuple[str, ...]


_HYP_FIELDS = ("scale", "c", "mode", "learn_c")
_SPECS: dict[str, _Spec] = {
    "softmax": _Spec(LinearHead, {}, ("use_bias",)),
    "softmax_scaled": _Spec(CosineHead, {"kind": None, "margin": 0.0}, ("scale",)),
    "am": _Spec(CosineHead, {"kind": "am"}, ("scale", "margin")),
    "aam": _Spec(CosineHead, {"kind": "aam"}, ("scale", "margin")),
    "ram": _Spec(CosineHead, {"kind": "ram"}, ("scale", "margin")),
    # The authors' H-Softmax run uses c = 5 and no margin.
    "h_softmax": _Spec(HyperbolicHead, {"margin": 0.0, "c": 5.0}, _HYP_FIELDS),
    "ham_softmax": _Spec(HyperbolicHead, {"c": 3.0}, (*_HYP_FIELDS, "margin")),
    "combined": _Spec(
        CombinedHead,
        {},
        (*_HYP_FIELDS, "margin", "euclidean", "weights", "euclidean_margin"),
    ),
}
#: Head names -> module classes (see :func:`create_head` for the defaults each name applies).
HEADS: dict[str, type[nn.Module]] = {name: spec.cls for name, spec in _SPECS.items()}
# Config keys the trainer owns (it builds the schedule from them); accepted and not forwarded.
_TRAINER_KEYS = frozenset({"margin_warmup_steps", "margin_warmup_start"})


def create_head(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Builds the head registered as ``name``.

    The keyword arguments are the ``head`` config section: each head takes the fields it
    understands and ignores the ones that belong to other heads (so one config section can
    serve an ablation over heads):

    * ``softmax``: ``use_bias``;  ``softmax_scaled``: ``scale``;
    * ``am`` / ``aam`` / ``ram``: ``scale``, ``margin``;
    * ``h_softmax``: ``scale``, ``c``, ``mode``, ``learn_c``;  ``ham_softmax``: those and
      ``margin``;
    * ``combined``: those of ``ham_softmax`` and ``euclidean``, ``weights``,
      ``euclidean_margin``.

    ``margin_warmup_steps`` and ``margin_warmup_start`` (trainer keys, see
    :func:`margin_schedule`) are accepted and not forwarded. ``c`` means nothing to ``am``, and
    ``margin`` nothing to ``softmax_scaled`` or ``h_softmax`` (margin-free by definition). A
    ``c`` given to ``h_softmax``/``ham_softmax`` overrides the authors' defaults (5 and 3).
    Keys no head knows raise, so a typo in a config is caught.

    Args:
      name: one of :data:`HEADS`.
      num_classes: ``C >= 1``.
      **kwargs: head fields (``scale``, ``margin``, ``c``, ``mode``, ``learn_c``, ``use_bias``,
        ``euclidean``, ``weights``, ``euclidean_margin``); ``None`` values are ignored.

    Returns:
      An unbound ``flax.linen.Module``.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid ones), an unknown keyword,
        ``num_classes < 1``.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown head {name!r}; valid heads are {sorted(_SPECS)}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    known = set().union(*(spec.accepted for spec in _SPECS.values())) | _TRAINER_KEYS
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f"unknown head option(s) {unknown} for head {name!r}; valid options are {sorted(known)}"
        )
    spec = _SPECS[name]
    fields = dict(spec.fixed)
    for key, value in kwargs.items():
        if key in spec.accepted and value is not None:
            fields[key] = tuple(value) if key == "weights" else value
    return spec.cls(num_classes=int(num_classes), **fields)


# --------------------------------------------------------------------------- config section

#: Meaningful ranges of the head hyper-parameters, ``field -> (low, high, why)`` (inclusive
#: unless noted in ``why``). Outside them training runs but learns nothing useful, so a config
#: that leaves them is refused before any work.
CURVATURE_RANGE = (1e-4, 10.0)
SCALE_RANGE = (1e-3, 128.0)
#: Additive margin limits per kind. A cosine margin ``m >= 1`` (AM, RAM) or ``m >= pi/2`` (AAM)
#: puts even a perfectly aligned target (theta = 0) at or below a random, orthogonal class
#: (cos = 0); AAM's target logit also stops being monotone in the angle for m > ~2.33. The
#: hyperbolic distance margin is bounded by the range the paper's ablation explores (0.1-0.4)
#: with room to spare.
MARGIN_LIMITS = {"am": 1.0, "ram": 1.0, "aam": math.pi / 2, "hyperbolic": 1.0}
#: Head-section keys the trainer reads itself (not forwarded to :func:`create_head`).
TRAINER_KEYS = ("name", "num_classes", "shard_centres")


def is_hyperbolic(name: str) -> bool:
    """Whether the registry head ``name`` maps embeddings into a Poincaré ball.

    Derived from the registry: such heads provide ``ball_embed`` and ``curvature`` (the
    ``poincare`` scoring and the trainer's ball metrics use them).
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads are {sorted(HEADS)}")
    cls = HEADS[name]
    return hasattr(cls, "ball_embed") and hasattr(cls, "curvature")


def from_config(head: Any, num_classes: int) -> nn.Module:
    """The head of a config's ``head`` section for ``num_classes`` speakers."""
    items = head.to_dict() if hasattr(head, "to_dict") else dict(head)
    kwargs = {k: v for k, v in items.items() if k not in TRAINER_KEYS}
    return create_head(items["name"], int(num_classes), **kwargs)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.head.{field} = {value!r} is invalid: expected {expected}")


def _margin_kind(name: str) -> str | None:
    if name in ("am", "aam", "ram"):
        return name
    if name in ("ham_softmax", "combined"):
        return "hyperbolic"
    return None


def validate_config(head: Any) -> None:
    """Checks a config's ``head`` section: the name and every hyper-parameter's range.

    Ranges (see :data:`CURVATURE_RANGE`, :data:`SCALE_RANGE`, :data:`MARGIN_LIMITS`):
    ``c`` in [1e-4, 10] (the curvature range the geometry is tested on), ``scale`` in
    (0, 128], margins in ``[0, limit)`` per kind, ``combined`` weights finite, >= 0 and not both
    0 (a dead loss), ``margin_warmup_steps >= 0``.

    Raises:
      ValueError: ``config.head.<field>``, the value and the expected range.
    """
    name = head.get("name")
    _require(name in HEADS, "name", name, f"one of {sorted(HEADS)}")
    lo, hi = SCALE_RANGE
    scale = head.get("scale", 1.0)
    _require(_finite(scale) and lo <= scale <= hi, "scale", scale, f"a logit scale in [{lo}, {hi}]")
    lo, hi = CURVATURE_RANGE
    c = head.get("c", 1.0)
    ball = "the Poincare ball of radius 1/sqrt(c)"
    _require(_finite(c) and lo <= c <= hi, "c", c, f"a curvature in [{lo:g}, {hi:g}] ({ball})")
    mode = head.get("mode", "clip")
    _require(mode in losses.MODES, "mode", mode, f"one of {losses.MODES}")
    margin = head.get("margin", 0.0)
    _require(_finite(margin) and margin >= 0, "margin", margin, "a finite value >= 0")
    kind = _margin_kind(name)
    if kind is not None:
        limit = MARGIN_LIMITS[kind]
        expected = f"a {name} margin in [0, {limit:.4g}) (see hamjax.heads.MARGIN_LIMITS)"
        _require(margin < limit, "margin", margin, expected)
    warm = head.get("margin_warmup_steps", 0)
    _require(isinstance(warm, int) and warm >= 0, "margin_warmup_steps", warm, "an integer >= 0")
    n = head.get("num_classes", -1)
    _require(isinstance(n, int) and (n == -1 or n >= 1), "num_classes", n,
             "-1 (from the dataset) or an integer >= 1")  # fmt: skip
    if name == "combined":
        euclidean = head.get("euclidean")
        _require(euclidean in losses.COSINE_KINDS, "euclidean", euclidean,
                 f"one of {losses.COSINE_KINDS}")  # fmt: skip
        e_margin = head.get("euclidean_margin")
        e_margin = margin if e_margin is None else e_margin
        _require(e_margin < MARGIN_LIMITS[euclidean], "margin", e_margin,
                 f"a {euclidean} margin in [0, {MARGIN_LIMITS[euclidean]:.4g})")  # fmt: skip
        weights = tuple(head.get("weights", ()))
        _require(
            len(weights) == 2 and all(_finite(w) and w >= 0 for w in weights) and sum(weights) > 0,
            "weights",
            weights,
            "two finite weights >= 0, not both 0 (Euclidean, hyperbolic)",
        )
