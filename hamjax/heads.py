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
``h_mlr``          Poincaré MLR (HNN++): ``s (d(x, H_k) - m [k = y])``, signed distances to class
                   gyroplanes, ``c = 1``, ``s = 30``, no margin (not the paper's; issue 16)
=================  ===========================================================================

Cosine weights and MLR normals are Xavier-normal; hyperbolic centres are ``N(0, 1e-3^2)`` as in
the authors' code. With ``learn_c=True`` the curvature is ``softplus(raw)``, ``raw`` initialised
so that it starts at ``c``; read it with ``head.apply(v, method="curvature")`` to log it.

Beyond the paper (issue 16; ``docs/GEOMETRY.md`` "Hyperbolic heads"), fields of the hyperbolic
heads:

* ``centres="ball"`` (``h_softmax``, ``ham_softmax``, ``combined``): the class centres are
  points of the ball, trained by :func:`hamjax.optim.riemannian_adam` on
  ``PoincareBall(centre_curvature)`` (the trainer's optimiser, see
  :func:`hamjax.train_state.make_optimizer`), instead of Euclidean parameters mapped into the
  ball at every forward pass; ``"euclidean"`` (default) is the authors' parameterisation.
* ``feature_clip = r > 0`` and ``feature_scale = alpha0 > 0`` (``expmap`` mode and ``h_mlr``):
  the embedding enters the ball as ``expmap0_c(clip_r(alpha e))`` with a learned
  ``alpha = exp(log_alpha)`` (:func:`hamjax.losses.tangent_features`), so that ball points stay
  inside radius ``tanh(r)/sqrt(c)`` and their radius can vary; ``ball_embed`` and the
  ``poincare`` scoring (:func:`hamjax.scoring.ball_geometry`) use the same map.
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
    "CENTRES",
    "HEADS",
    "CombinedHead",
    "CosineHead",
    "HeadOutput",
    "HyperbolicHead",
    "HyperbolicMLRHead",
    "LinearHead",
    "create_head",
    "from_config",
    "is_hyperbolic",
    "head_loss",
    "margin_schedule",
]

_CENTRE_STDDEV = 1e-3  # the authors' N(0, 1e-3^2) initialisation of hyperbolic centres
#: Where the hyperbolic heads' class centres live (``head.centres``): ``"euclidean"``
#: parameters (tangent vectors at 0 in ``expmap`` mode, clipped points in ``clip`` mode; the
#: authors') or ``"ball"`` points trained with Riemannian Adam.
CENTRES = ("euclidean", "ball")


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
    for name in ("feature_clip", "feature_scale"):
        value = fields.get(name, 0.0)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"head field {name} must be a finite number >= 0, got {value!r}")
    if fields.get("centres", "euclidean") not in CENTRES:
        raise ValueError(f"head field centres must be one of {CENTRES}, got {fields['centres']!r}")
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


def _check_ball_fields(mode: str | None, feature_clip: float, feature_scale: float) -> None:
    """The embedding map's fields need ``expmap0`` (``mode=None``: the head always uses it)."""
    if mode is not None and mode != "expmap" and (feature_clip > 0 or feature_scale > 0):
        raise ValueError(
            f"head fields feature_clip / feature_scale act on the tangent vector before expmap0 "
            f"and need mode='expmap', got mode={mode!r} with feature_clip={feature_clip!r}, "
            f"feature_scale={feature_scale!r}"
        )


def _setup_ball(module: nn.Module) -> None:
    """Creates a hyperbolic head's curvature and feature-scale parameters (from ``setup``)."""
    if module.learn_c:
        c0 = _inverse_softplus(float(module.c))
        module.c_raw = module.param("c_raw", lambda _: jnp.asarray(c0, jnp.float32))
    if module.feature_scale > 0:
        # log-parametrised: Adam's steps change alpha by a relative amount, and alpha > 0.
        a0 = math.log(float(module.feature_scale))
        module.log_feature_scale = module.param(
            "log_feature_scale", lambda _: jnp.asarray(a0, jnp.float32)
        )


def _curvature(module: nn.Module) -> jax.Array:
    if module.learn_c:
        return jax.nn.softplus(module.c_raw)
    return jnp.asarray(module.c, jnp.float32)


def _embedding_scale(module: nn.Module) -> jax.Array:
    if module.feature_scale > 0:
        return jnp.exp(module.log_feature_scale)
    return jnp.ones((), jnp.float32)


def _tangent(module: nn.Module, embeddings: jax.Array, c: jax.Array) -> jax.Array:
    """``clip_r(alpha e)`` (:func:`hamjax.losses.tangent_features`); ``e`` itself when off."""
    embeddings = jnp.asarray(embeddings, jnp.float32)
    if module.feature_clip == 0 and module.feature_scale == 0:
        return embeddings  # the authors' map: not one operation added
    scale = _embedding_scale(module) if module.feature_scale > 0 else None
    return losses.tangent_features(embeddings, c=c, clip=module.feature_clip, scale=scale)


def _with_margin_free_scores(
    logits: jax.Array, labels: jax.Array, scale: Any, margin: Any, num_classes: int
) -> HeadOutput:
    # Scores are the same logits without the margin: adding it back avoids a second distance
    # matrix (and keeps the exactly recomputed target entry).
    target = labels[:, None] == jnp.arange(num_classes)[None, :]
    scores = logits + scale * margin * target.astype(logits.dtype)
    return HeadOutput(terms=((1.0, logits),), scores=scores)


class HyperbolicHead(nn.Module):
    """H-Softmax (``margin=0``) / HAM-Softmax head: logits ``-s (d(x, w_j) + m [j = y])``.

    The embedding ``e [B, D]`` enters the ball as ``x = to_ball(v)`` with
    ``v = clip_r(alpha e)`` (:func:`hamjax.losses.tangent_features`; ``v = e`` unless
    ``feature_clip`` / ``feature_scale`` are set) and ``to_ball`` the ``mode``'s map
    (:func:`hamjax.losses.to_ball`); the centres ``w [C, D]`` are Euclidean parameters mapped the
    same way (``centres="euclidean"``) or points of the ball (``centres="ball"``).

    Attributes:
      num_classes: ``C``.
      scale: ``s``.
      margin: ``m`` (distance units).
      c: curvature (initial value when ``learn_c``).
      mode: ``"clip"`` (the authors') or ``"expmap"`` (curvature-consistent); see
        :func:`hamjax.losses.hyperbolic_logits`.
      learn_c: learn ``c = softplus(raw)`` with plain gradient descent.
      centres: ``"euclidean"`` or ``"ball"``: points of ``PoincareBall(centre_curvature())``,
        which the trainer's optimiser keeps inside the ball (Riemannian Adam); the forward pass
        only projects them (a no-op inside the ball).
      feature_clip: ``r >= 0``, Guo et al.'s clip of ``|v|`` at ``r/sqrt(c)`` (0 = off;
        ``expmap`` mode only).
      feature_scale: ``alpha_0 >= 0``, the initial value of a learned scale ``alpha`` of the
        embedding (0 = no scale; ``expmap`` mode only).
    """

    num_classes: int
    scale: float = 30.0
    margin: float = 0.2
    c: float = 3.0
    mode: str = "clip"
    learn_c: bool = False
    centres: str = "euclidean"
    feature_clip: float = 0.0
    feature_scale: float = 0.0

    def __post_init__(self) -> None:
        _check_head_fields(
            num_classes=self.num_classes,
            scale=self.scale,
            margin=self.margin,
            c=self.c,
            centres=self.centres,
            feature_clip=self.feature_clip,
            feature_scale=self.feature_scale,
        )
        if self.mode not in losses.MODES:
            raise ValueError(f"head field mode must be one of {losses.MODES}, got {self.mode!r}")
        _check_ball_fields(self.mode, self.feature_clip, self.feature_scale)
        super().__post_init__()

    def setup(self) -> None:
        _setup_ball(self)

    def curvature(self) -> jax.Array:
        """The curvature ``c`` in use, a float32 scalar (``softplus(raw)`` when learnt)."""
        return _curvature(self)

    def centre_curvature(self) -> jax.Array:
        """Curvature of the ball the centres live in when ``centres="ball"``, a float32 scalar.

        ``expmap``: ``c``. ``clip``: ``max(c, 1)``. The authors' distance is the unit-curvature
        one on points clipped to radius ``1/sqrt(c)``, so for ``c >= 1`` the clipping ball is
        ``PoincareBall(c)``'s (its metric then keeps centres strictly inside the clip, which
        never binds on them); for ``c < 1`` the clip reaches beyond the unit ball, where the
        authors' clamps make the distance meaningless, and the unit ball is the right home.
        """
        c = _curvature(self)
        return c if self.mode == "expmap" else jnp.maximum(c, 1.0)

    def embedding_scale(self) -> jax.Array:
        """The learned scale ``alpha`` of the embedding (1 without ``feature_scale``)."""
        return _embedding_scale(self)

    def ball_embed(self, embeddings: jax.Array) -> jax.Array:
        """Embeddings ``[B, D]`` mapped into the ball exactly as the head does, ``[B, D]``."""
        c = self.curvature()
        return losses.to_ball(_tangent(self, embeddings, c), c=c, mode=self.mode)

    @nn.compact
    def __call__(
        self, embeddings: jax.Array, labels: jax.Array | None = None, margin_scale: ArrayLike = 1.0
    ) -> HeadOutput:
        """Args: embeddings ``[B, D]``, labels ``[B]`` or None, margin_scale in [0, 1]."""
        embeddings = jnp.asarray(embeddings, jnp.float32)
        # Created here (not in setup) because D is known only from the input. Ball centres
        # start at the same N(0, 1e-3^2) points: expmap0 of such small vectors moves them by
        # O(1e-9), so both parameterisations start from (nearly) one model.
        centres = self.param(
            "centres",
            nn.initializers.normal(stddev=_CENTRE_STDDEV),
            (self.num_classes, embeddings.shape[-1]),
            jnp.float32,
        )
        c = self.curvature()
        embeddings = _tangent(self, embeddings, c)
        common = dict(c=c, scale=self.scale, mode=self.mode)
        if self.centres == "ball":
            common["centres_in_ball"] = True
        if labels is None:
            scores = losses.hyperbolic_logits(embeddings, centres, None, **common)
            return HeadOutput(terms=((1.0, scores),), scores=scores)
        margin = self.margin * margin_scale
        logits = losses.hyperbolic_logits(embeddings, centres, labels, margin=margin, **common)
        return _with_margin_free_scores(logits, labels, self.scale, margin, self.num_classes)


class HyperbolicMLRHead(nn.Module):
    """Poincaré-MLR head (``h_mlr``): ``z_k = s (d(x, H_k) - m [k = y])``.

    ``x = proj_c(expmap0_c(v))`` with ``v = clip_r(alpha e)`` as in :class:`HyperbolicHead`,
    and ``d(x, H_k)`` the signed distance to class ``k``'s gyroplane (HNN++'s MLR with unit
    normals; :func:`hamjax.losses.mlr_logits`). Parameters: ``normals [C, D]`` (Xavier-normal,
    as the cosine heads' weights: only their direction counts) and ``offsets [C]`` (zeros: every
    gyroplane starts through the origin). All Euclidean; any optax optimiser trains them.

    Attributes:
      num_classes: ``C``.
      scale: ``s``.
      margin: ``m``, a distance (the units of HAM's margin); 0 = plain MLR.
      c: curvature (initial value when ``learn_c``).
      learn_c: learn ``c = softplus(raw)``.
      feature_clip, feature_scale: the embedding map, as in :class:`HyperbolicHead`.
    """

    num_classes: int
    scale: float = 30.0
    margin: float = 0.0
    c: float = 1.0
    learn_c: bool = False
    feature_clip: float = 0.0
    feature_scale: float = 0.0

    #: The map into the ball, read by :func:`hamjax.scoring.ball_geometry`: always ``expmap0``.
    mode = "expmap"

    def __post_init__(self) -> None:
        _check_head_fields(
            num_classes=self.num_classes,
            scale=self.scale,
            margin=self.margin,
            c=self.c,
            feature_clip=self.feature_clip,
            feature_scale=self.feature_scale,
        )
        super().__post_init__()

    def setup(self) -> None:
        _setup_ball(self)

    def curvature(self) -> jax.Array:
        """The curvature ``c`` in use, a float32 scalar (``softplus(raw)`` when learnt)."""
        return _curvature(self)

    def embedding_scale(self) -> jax.Array:
        """The learned scale ``alpha`` of the embedding (1 without ``feature_scale``)."""
        return _embedding_scale(self)

    def ball_embed(self, embeddings: jax.Array) -> jax.Array:
        """Embeddings ``[B, D]`` mapped into the ball exactly as the head does, ``[B, D]``."""
        c = self.curvature()
        return losses.to_ball(_tangent(self, embeddings, c), c=c, mode="expmap")

    @nn.compact
    def __call__(
        self, embeddings: jax.Array, labels: jax.Array | None = None, margin_scale: ArrayLike = 1.0
    ) -> HeadOutput:
        """Args: embeddings ``[B, D]``, labels ``[B]`` or None, margin_scale in [0, 1]."""
        embeddings = jnp.asarray(embeddings, jnp.float32)
        shape = (self.num_classes, embeddings.shape[-1])
        normals = self.param("normals", nn.initializers.xavier_normal(), shape, jnp.float32)
        offsets = self.param("offsets", nn.initializers.zeros, (self.num_classes,), jnp.float32)
        c = self.curvature()
        v = _tangent(self, embeddings, c)
        if labels is None:
            scores = losses.mlr_logits(v, normals, offsets, None, c=c, scale=self.scale)
            return HeadOutput(terms=((1.0, scores),), scores=scores)
        margin = self.margin * margin_scale
        logits = losses.mlr_logits(
            v, normals, offsets, labels, c=c, scale=self.scale, margin=margin
        )
        return _with_margin_free_scores(logits, labels, self.scale, margin, self.num_classes)


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
      c, mode, learn_c, centres, feature_clip, feature_scale: as in :class:`HyperbolicHead`
        (the Euclidean head sees the raw embedding).
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
    centres: str = "euclidean"
    feature_clip: float = 0.0
    feature_scale: float = 0.0

    def __post_init__(self) -> None:
        _check_head_fields(
            num_classes=self.num_classes,
            scale=self.scale,
            margin=self.margin,
            euclidean_margin=self.euclidean_margin,
            c=self.c,
            centres=self.centres,
            feature_clip=self.feature_clip,
            feature_scale=self.feature_scale,
        )
        if self.mode not in losses.MODES:
            raise ValueError(f"head field mode must be one of {losses.MODES}, got {self.mode!r}")
        _check_ball_fields(self.mode, self.feature_clip, self.feature_scale)
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
            centres=self.centres,
            feature_clip=self.feature_clip,
            feature_scale=self.feature_scale,
        )

    def curvature(self) -> jax.Array:
        """The hyperbolic head's curvature, a float32 scalar."""
        return self.hyperbolic_head.curvature()

    def centre_curvature(self) -> jax.Array:
        """See :meth:`HyperbolicHead.centre_curvature`."""
        return self.hyperbolic_head.centre_curvature()

    def embedding_scale(self) -> jax.Array:
        """The hyperbolic head's learned embedding scale (1 without ``feature_scale``)."""
        return self.hyperbolic_head.embedding_scale()

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


_HYP_FIELDS = ("scale", "c", "mode", "learn_c", "centres", "feature_clip", "feature_scale")
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
    # Not the paper's: HNN++'s MLR with an optional distance margin (issue 16).
    "h_mlr": _Spec(
        HyperbolicMLRHead,
        {},
        ("scale", "c", "learn_c", "margin", "feature_clip", "feature_scale"),
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
    * ``h_softmax``: ``scale``, ``c``, ``mode``, ``learn_c``, ``centres``, ``feature_clip``,
      ``feature_scale``;  ``ham_softmax``: those and ``margin``;
    * ``combined``: those of ``ham_softmax`` and ``euclidean``, ``weights``,
      ``euclidean_margin``;
    * ``h_mlr``: ``scale``, ``c``, ``learn_c``, ``margin``, ``feature_clip``, ``feature_scale``
      (it always maps with ``expmap0``: ``mode`` is ignored).

    ``margin_warmup_steps`` and ``margin_warmup_start`` (trainer keys, see
    :func:`margin_schedule`) are accepted and not forwarded. ``c`` means nothing to ``am``, and
    ``margin`` nothing to ``softmax_scaled`` or ``h_softmax`` (margin-free by definition). A
    ``c`` given to ``h_softmax``/``ham_softmax`` overrides the authors' defaults (5 and 3).
    Keys no head knows raise, so a typo in a config is caught.

    Args:
      name: one of :data:`HEADS`.
      num_classes: ``C >= 1``.
      **kwargs: head fields (``scale``, ``margin``, ``c``, ``mode``, ``learn_c``, ``centres``,
        ``feature_clip``, ``feature_scale``, ``use_bias``, ``euclidean``, ``weights``,
        ``euclidean_margin``); ``None`` values are ignored.

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
#: Upper bound of ``head.feature_clip = r``: ball points then lie within ``sqrt(c) d(0, x) <=
#: 2r = 6`` ball units of the origin, where float32 distances are accurate to ~1e-5 (the
#: precision table of ``docs/GEOMETRY.md``). Guo et al.'s default is ``r = 1``.
FEATURE_CLIP_MAX = 3.0
#: Upper bound of ``head.feature_scale`` (the learned scale's initial value).
FEATURE_SCALE_MAX = 100.0
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
    if name in ("ham_softmax", "combined", "h_mlr"):
        return "hyperbolic"
    return None


def _validate_ball_fields(head: Any, name: str) -> None:
    """``centres``, ``feature_clip`` and ``feature_scale``: values, and the heads they need."""
    centres = head.get("centres", "euclidean")
    _require(centres in CENTRES, "centres", centres, f"one of {CENTRES}")
    with_centres = sorted(n for n, spec in _SPECS.items() if "centres" in spec.accepted)
    if centres == "ball":
        _require(name in with_centres, "centres", centres,
                 f"'euclidean' for head {name!r}: class centres on the ball need a head with "
                 f"hyperbolic class centres ({', '.join(with_centres)})")  # fmt: skip
    mode = head.get("mode", "clip")
    for field, hi in (("feature_clip", FEATURE_CLIP_MAX), ("feature_scale", FEATURE_SCALE_MAX)):
        value = head.get(field, 0.0)
        _require(_finite(value) and 0 <= value <= hi, field, value,
                 f"0 (off) or a value in (0, {hi:g}]")  # fmt: skip
        if value <= 0:
            continue
        _require(is_hyperbolic(name), field, value,
                 f"0 for head {name!r}, which has no Poincare ball")  # fmt: skip
        # Heads without a mode (h_mlr) always map with expmap0.
        always_expmap = "mode" not in _SPECS[name].accepted
        _require(always_expmap or mode == "expmap", field, value,
                 "0 with head.mode = 'clip': it acts on the tangent vector before expmap0, so "
                 "set head.mode = 'expmap'")  # fmt: skip


def validate_config(head: Any) -> None:
    """Checks a config's ``head`` section: the name and every hyper-parameter's range.

    Ranges (see :data:`CURVATURE_RANGE`, :data:`SCALE_RANGE`, :data:`MARGIN_LIMITS`):
    ``c`` in [1e-4, 10] (the curvature range the geometry is tested on), ``scale`` in
    (0, 128], margins in ``[0, limit)`` per kind, ``combined`` weights finite, >= 0 and not both
    0 (a dead loss), ``margin_warmup_steps >= 0``; ``centres`` one of :data:`CENTRES` and
    ``"ball"`` only for heads with hyperbolic centres; ``feature_clip`` in ``[0,
    FEATURE_CLIP_MAX]`` and ``feature_scale`` in ``[0, FEATURE_SCALE_MAX]``, non-zero only for
    heads that map with ``expmap0`` (``mode = "expmap"``, or ``h_mlr``).

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
    _validate_ball_fields(head, name)
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
