r"""Riemannian optimisers as optax gradient transformations.

:func:`riemannian_sgd` (momentum, Nesterov) and :func:`riemannian_adam` (Bécigneul & Ganea,
"Riemannian Adaptive Optimization Methods", ICLR 2019; ``amsgrad=True`` gives their RAMSGRAD)
optimise parameters that live on a manifold: each leaf of the parameter tree is declared
:class:`Euclidean`, :class:`PoincareBall` or :class:`Lorentz` (a point per vector on the last
axis), through a pytree of manifold objects or string labels (a prefix of the parameter tree, or
a function of it, like optax's masks)::

    manifolds = {"encoder": "euclidean", "centres": PoincareBall(c=3.0)}
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.add_decayed_weights(1e-4, mask=euclidean_mask(manifolds)),
        riemannian_adam(optax.cosine_decay_schedule(1e-2, 1000), manifolds=manifolds),
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)          # or optim.apply_updates(...)

One step on a manifold leaf ``x`` with Euclidean gradient ``g`` (Bécigneul & Ganea, Alg. 1):

.. math:: r_t = \operatorname{grad}^R f(x_t) = \texttt{egrad2rgrad}(x_t, g_t),\quad
          m_t = \beta_1 \tau_{t-1} + (1 - \beta_1) r_t,\quad
          v_t = \beta_2 v_{t-1} + (1 - \beta_2)\|r_t\|^2_{x_t},\\
          x_{t+1} = \exp_{x_t}\!\Big(-\alpha_t \frac{m_t / (1 - \beta_1^t)}
          {\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}\Big),\qquad
          \tau_t = P_{x_t \to x_{t+1}}(m_t)

with the Riemannian squared norm ``v`` one scalar per point (per vector on the last axis; the
per-coordinate adaptivity of Euclidean Adam has no meaning on a curved manifold), the momentum
parallel-transported to the new point, and optax's bias corrections and ``eps`` placement
(AMSGrad: the running max of the bias-corrected ``v``, as :func:`optax.amsgrad`). On
:class:`Euclidean` leaves every formula reduces to :func:`optax.adam` / :func:`optax.sgd`
(per-coordinate ``v``; the same operations in the same order, so the results agree to the last
bit or, where XLA fuses a larger program differently, to rounding). ``retraction=True``
replaces the exponential map by the first-order retraction (``project(x + v)``), cheaper and
as good for small steps.

The optax convention, and what these transforms return. optax applies updates additively,
``params + updates``. For a manifold leaf the transform computes the new point
``x_{t+1} = exp_{x_t}(-lr * direction)``, projects it (into the ball with
:func:`hamjax.poincare.project`'s default margin; onto the sheet for the hyperboloid) and
returns ``updates = x_{t+1} - x_t``, so ``optax.apply_updates`` lands on ``x_{t+1}`` up to one
rounding per coordinate. That rounding can leave a hyperboloid point off the sheet by an ulp
(harmless: :mod:`hamjax.lorentz` reads only space coordinates) or a ball point within the
projection margin; :func:`apply_updates` (= ``optax.apply_updates`` then
:func:`project_params`) removes it. Because the returned value is a *displacement*, the
Riemannian transform must be the **last** transform of a chain: scale the step with its
``learning_rate`` (a float or an optax schedule), not with a later ``optax.scale``; transforms
*before* it see Euclidean gradients (clipping, masked weight decay) and are fine.

Curvature. ``PoincareBall(c)`` / ``Lorentz(c)`` take ``c`` as a number, as a callable of the
parameter tree (a learned curvature read from another leaf, e.g.
``PoincareBall(c=lambda p: jax.nn.softplus(p["c_raw"]))``), or as a string naming an extra
argument of ``update`` (``tx.update(g, s, p, curvatures={"ball": c_now})``, the optax
"extra args" mechanism, which ``optax.chain`` and ``optax.multi_transform`` forward). The
curvature is read at every step, so it may change between steps (the step then starts from
the previous point as it is; :func:`project_params` moves points into a shrunken ball). Inside
:func:`optax.multi_transform` a callable sees that group's masked tree, so keep the curvature
leaf in the same group or pass it by name.

State. A NamedTuple of arrays (``count``, moments shaped like the parameters, ``nu`` of shape
``[..., 1]`` on manifold leaves), so ``jax.jit`` with shardings, ``jax.eval_shape`` and orbax
treat it like any optax state; the manifold declaration lives in the transform, not the state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hamjax import lorentz, poincare

__all__ = [
    "Euclidean",
    "Lorentz",
    "Manifold",
    "PoincareBall",
    "RiemannianAdamState",
    "RiemannianSGDState",
    "apply_updates",
    "euclidean_mask",
    "project_params",
    "riemannian_adam",
    "riemannian_sgd",
]

CurvatureSpec = float | jax.Array | Callable[[Any], jax.Array] | str


# ----------------------------------------------------------------------------------------------
# Manifolds
# ----------------------------------------------------------------------------------------------


class Manifold:
    """Base class of the manifold declarations. Subclasses are frozen dataclasses (pytree
    leaves), whose methods are pure functions of arrays with an explicit curvature ``c``."""

    point_axis: bool = True  # whether points are vectors on the last axis (False: per element)

    def curvature(self, params: Any, extra_args: Mapping[str, Any]) -> jax.Array | None:
        """The curvature for this step (``None`` for :class:`Euclidean`)."""
        return None

    def check_leaf(self, path: str, x: Any) -> None:
        """Raises ValueError if a parameter of this shape cannot live on the manifold."""

    def egrad2rgrad(self, x, g, *, c):
        raise NotImplementedError

    def sqnorm(self, x, v, *, c):
        """Riemannian squared norm of ``v`` at ``x``: ``[..., 1]`` per point (per element for
        :class:`Euclidean`)."""
        raise NotImplementedError

    def expmap(self, x, v, *, c):
        raise NotImplementedError

    def retract(self, x, v, *, c):
        raise NotImplementedError

    def transport(self, x, y, v, *, c):
        raise NotImplementedError

    def project(self, x, *, c):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Euclidean(Manifold):
    """Flat space: the Riemannian step is the plain optax step."""

    point_axis = False

    def egrad2rgrad(self, x, g, *, c=None):
        return g

    def sqnorm(self, x, v, *, c=None):
        return v * v

    def expmap(self, x, v, *, c=None):
        return x + v

    retract = expmap

    def transport(self, x, y, v, *, c=None):
        return v

    def project(self, x, *, c=None):
        return x


def _check_spec(name: str, c: Any) -> None:
    if isinstance(c, str) or callable(c):
        return
    value = np.asarray(c)
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.number) or not value > 0:
        raise ValueError(
            f"{name}: c must be a curvature > 0, a callable params -> c, or the name of an "
            f"update extra argument; got c={c!r}"
        )


def _read_curvature(name: str, c: CurvatureSpec, params: Any, extra: Mapping[str, Any]):
    if isinstance(c, str):
        curv = extra.get("curvatures", {})
        if c not in curv:
            raise ValueError(
                f"{name}(c={c!r}) reads its curvature from update(..., curvatures={{{c!r}: "
                f"value}}), but the update got curvatures={sorted(curv) if curv else None}"
            )
        return jnp.asarray(curv[c])
    if callable(c):
        return jnp.asarray(c(params))
    return jnp.asarray(c)


def _ball_transport(x: jax.Array, y: jax.Array, v: jax.Array, c: jax.Array) -> jax.Array:
    """Parallel transport on the ball (:func:`hamjax.poincare.parallel_transport`'s rotation
    form, accurate for nearby points at the projection margin, where optimisers push points),
    for a curvature that may be a traced per-leaf array; half types computed in float32."""
    dtype = jnp.result_type(x, y, v)
    compute = dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32
    x, y, v, c = (jnp.asarray(a).astype(compute) for a in (x, y, v, c))
    return poincare._transport_rotation(x, y, v, c).astype(dtype)


@dataclasses.dataclass(frozen=True)
class PoincareBall(Manifold):
    """The Poincaré ball of curvature ``-c`` (:mod:`hamjax.poincare`); rows are points.

    Attributes:
      c: curvature > 0, a callable ``params -> c`` or an update extra-argument name.
      eps: margin of the projection after each step (a fraction of the radius); ``None`` is
        :func:`hamjax.poincare.default_eps` of the parameter's dtype.
    """

    c: CurvatureSpec = 1.0
    eps: float | None = None

    def __post_init__(self):
        _check_spec("PoincareBall", self.c)

    def curvature(self, params, extra_args):
        return _read_curvature("PoincareBall", self.c, params, extra_args)

    def check_leaf(self, path, x):
        if np.ndim(x) < 1:
            raise ValueError(f"{path}: a PoincareBall parameter needs a vector axis, got a scalar")

    def egrad2rgrad(self, x, g, *, c):
        return poincare.egrad2rgrad(x, g, c=c)

    def sqnorm(self, x, v, *, c):
        lam = poincare.conformal_factor(x, c=c, keepdims=True)
        return jnp.sum(jnp.square(lam * v), axis=-1, keepdims=True)

    def expmap(self, x, v, *, c):
        return poincare.expmap(x, v, c=c)

    def retract(self, x, v, *, c):
        return x + v  # projected by the caller

    def transport(self, x, y, v, *, c):
        return _ball_transport(x, y, v, c)

    def project(self, x, *, c):
        return poincare.project(x, c=c, eps=self.eps)


@dataclasses.dataclass(frozen=True)
class Lorentz(Manifold):
    """The hyperboloid of curvature ``-c`` (:mod:`hamjax.lorentz`); rows are ``[D + 1]`` points.

    Attributes:
      c: curvature > 0, a callable ``params -> c`` or an update extra-argument name.
    """

    c: CurvatureSpec = 1.0

    def __post_init__(self):
        _check_spec("Lorentz", self.c)

    def curvature(self, params, extra_args):
        return _read_curvature("Lorentz", self.c, params, extra_args)

    def check_leaf(self, path, x):
        if np.ndim(x) < 1 or np.shape(x)[-1] < 2:
            raise ValueError(
                f"{path}: a Lorentz parameter must be [..., D + 1] with D >= 1, got shape "
                f"{np.shape(x)}"
            )

    def egrad2rgrad(self, x, g, *, c):
        return lorentz.egrad2rgrad(x, g, c=c)

    def sqnorm(self, x, v, *, c):
        return jnp.square(lorentz.tangent_norm(x, v, c=c, keepdims=True))

    def expmap(self, x, v, *, c):
        return lorentz.expmap(x, v, c=c)

    def retract(self, x, v, *, c):
        return x + v  # projected onto the sheet (time coordinate recomputed) by the caller

    def transport(self, x, y, v, *, c):
        return lorentz.parallel_transport(x, y, v, c=c)

    def project(self, x, *, c):
        return lorentz.project(x, c=c)


_DEFAULT_NAMES: dict[str, Manifold] = {
    "euclidean": Euclidean(),
    "poincare": PoincareBall(1.0),
    "lorentz": Lorentz(1.0),
}


# ----------------------------------------------------------------------------------------------
# Declarations -> one manifold per parameter leaf
# ----------------------------------------------------------------------------------------------


def _is_decl(z: Any) -> bool:
    return isinstance(z, (Manifold, str))


def _resolve(decl: Any, named: Mapping[str, Manifold] | None) -> Manifold:
    if isinstance(decl, Manifold):
        return decl
    table = {**_DEFAULT_NAMES, **(named or {})}
    if isinstance(decl, str) and decl in table:
        return table[decl]
    raise ValueError(
        f"unknown manifold {decl!r}: use a Manifold object (Euclidean(), PoincareBall(c), "
        f"Lorentz(c)) or one of the labels {sorted(table)}"
    )


def _leaf_manifolds(manifolds: Any, params: Any, named: Mapping[str, Manifold] | None):
    """(params leaves, their treedef, one Manifold per leaf, their key paths)."""
    if callable(manifolds) and not isinstance(manifolds, Manifold):
        manifolds = manifolds(params)
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    try:
        full = jax.tree_util.tree_map(
            lambda m, sub: jax.tree_util.tree_map(lambda _: _resolve(m, named), sub),
            manifolds,
            params,
            is_leaf=_is_decl,
        )
        per_leaf = treedef.flatten_up_to(full)
    except (ValueError, TypeError) as e:
        if "unknown manifold" in str(e):
            raise
        raise ValueError(
            "manifolds must be a Manifold, a label, or a pytree of them that is a prefix of the "
            f"parameter tree (or a function params -> such a tree); got {manifolds!r} for "
            f"parameters {jax.tree_util.tree_structure(params)}: {e}"
        ) from e
    paths = [jax.tree_util.keystr(p) for p, _ in leaves_with_path]
    return [x for _, x in leaves_with_path], treedef, per_leaf, paths


def euclidean_mask(
    manifolds: Any, *, named: Mapping[str, Manifold] | None = None
) -> Callable[[Any], Any]:
    """A mask function ``params -> bool tree`` that is True on :class:`Euclidean` leaves.

    For optax's ``mask=`` arguments, e.g. weight decay on Euclidean leaves only:
    ``optax.add_decayed_weights(1e-4, mask=euclidean_mask(manifolds))``.
    """

    def mask(params):
        leaves, treedef, per_leaf, _ = _leaf_manifolds(manifolds, params, named)
        return treedef.unflatten([isinstance(m, Euclidean) for m in per_leaf])

    return mask


def project_params(
    params: Any,
    manifolds: Any,
    *,
    named: Mapping[str, Manifold] | None = None,
    curvatures: Mapping[str, Any] | None = None,
) -> Any:
    """Projects every manifold leaf onto its manifold (ball: into the radius with the margin;
    hyperboloid: time coordinate recomputed); Euclidean leaves are returned as they are.

    Args:
      params: the parameter tree.
      manifolds: the same declaration as given to the optimiser.
      named: extra label -> Manifold entries.
      curvatures: values for curvatures declared by name.

    Returns:
      The projected tree (same structure and dtypes).
    """
    leaves, treedef, per_leaf, _ = _leaf_manifolds(manifolds, params, named)
    extra = {"curvatures": curvatures or {}}
    out = []
    for x, m in zip(leaves, per_leaf, strict=True):
        if isinstance(m, Euclidean):
            out.append(x)
        else:
            out.append(m.project(x, c=m.curvature(params, extra)).astype(jnp.asarray(x).dtype))
    return treedef.unflatten(out)


def apply_updates(
    params: Any,
    updates: Any,
    manifolds: Any,
    *,
    named: Mapping[str, Manifold] | None = None,
    curvatures: Mapping[str, Any] | None = None,
) -> Any:
    """``optax.apply_updates`` followed by :func:`project_params` (removes the one rounding
    between ``params + (new - params)`` and ``new``)."""
    return project_params(
        optax.apply_updates(params, updates), manifolds, named=named, curvatures=curvatures
    )


# ----------------------------------------------------------------------------------------------
# The transforms
# ----------------------------------------------------------------------------------------------


class RiemannianSGDState(NamedTuple):
    """State of :func:`riemannian_sgd`: the step count and the (transported) momentum."""

    count: jax.Array
    momentum: Any  # a tree like params, or None without momentum


class RiemannianAdamState(NamedTuple):
    """State of :func:`riemannian_adam`.

    ``mu`` is shaped like the parameters (tangent vectors at the current points); ``nu`` (and
    ``nu_max`` with AMSGrad, else ``None``) is ``[..., 1]`` on manifold leaves (one squared
    Riemannian norm per point) and per element on Euclidean leaves.
    """

    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any


def _learning_rate(learning_rate: float | optax.Schedule, count: jax.Array) -> jax.Array:
    return learning_rate(count) if callable(learning_rate) else jnp.asarray(learning_rate)


def _moment_shape(m: Manifold, x: jax.Array) -> tuple[int, ...]:
    return tuple(x.shape) if not m.point_axis else tuple(x.shape[:-1]) + (1,)


def _check_params(params: Any, name: str) -> None:
    if params is None:
        raise ValueError(
            f"{name}.update needs the current params (tx.update(grads, state, params)): the "
            "step is taken from the points themselves"
        )


def _move(m: Manifold, x, direction, lr, c, retraction: bool):
    """(new point, the additive update) for one leaf; direction is a tangent vector at x."""
    step = (-lr * direction).astype(direction.dtype)
    if isinstance(m, Euclidean):
        return x + step, step
    y = (m.retract if retraction else m.expmap)(x, step, c=c)
    y = m.project(y, c=c).astype(x.dtype)
    return y, y - x


def _validate(manifolds, params, named):
    leaves, treedef, per_leaf, paths = _leaf_manifolds(manifolds, params, named)
    for x, m, path in zip(leaves, per_leaf, paths, strict=True):
        m.check_leaf(path or "params", x)
    return leaves, treedef, per_leaf


def riemannian_sgd(
    learning_rate: float | optax.Schedule,
    manifolds: Any = Euclidean(),
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    retraction: bool = False,
    named: Mapping[str, Manifold] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Riemannian SGD with (optionally Nesterov) momentum transported between tangent spaces.

    .. math:: r_t = \operatorname{grad}^R f(x_t),\quad
              m_t = r_t + \mu\,\tau_{t-1},\quad
              x_{t+1} = \exp_{x_t}(-\alpha_t d_t),\quad \tau_t = P_{x_t \to x_{t+1}}(m_t)

    with ``d_t = m_t`` (or ``r_t + mu m_t`` with ``nesterov``), optax's :func:`optax.sgd`
    convention (no dampening); Bonnabel, "Stochastic gradient descent on Riemannian
    manifolds" (IEEE TAC 2013), with momentum as in geoopt's ``RiemannianSGD``. On Euclidean
    leaves this is ``optax.sgd(learning_rate, momentum or None, nesterov)``.

    Args:
      learning_rate: a float or an optax schedule ``count -> lr`` (evaluated at the step count
        before the update, as optax does).
      manifolds: a :class:`Manifold`, a label (``"euclidean"``, ``"poincare"`` (c = 1),
        ``"lorentz"`` (c = 1) or a key of ``named``), a pytree of them that is a prefix of the
        parameters, or a function ``params -> such a tree``.
      momentum: ``mu`` in ``[0, 1)``; 0 keeps no state.
      nesterov: Nesterov momentum.
      retraction: step with the retraction ``project(x + v)`` instead of the exponential map.
      named: extra ``label -> Manifold`` entries for string labels.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; see the module docstring for what its
      updates mean on manifold leaves (it must be last in a chain).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"riemannian_sgd: momentum must be in [0, 1), got {momentum!r}")
    if nesterov and momentum == 0.0:
        raise ValueError("riemannian_sgd: nesterov=True needs momentum > 0")

    def init_fn(params):
        leaves, treedef, _ = _validate(manifolds, params, named)
        mom = treedef.unflatten([jnp.zeros_like(x) for x in leaves]) if momentum else None
        return RiemannianSGDState(count=jnp.zeros([], jnp.int32), momentum=mom)

    def update_fn(updates, state, params=None, **extra_args):
        _check_params(params, "riemannian_sgd")
        leaves, treedef, per_leaf = _validate(manifolds, params, named)
        grads = treedef.flatten_up_to(updates)
        moms = treedef.flatten_up_to(state.momentum) if momentum else [None] * len(leaves)
        lr = _learning_rate(learning_rate, state.count)
        out_updates, out_moms = [], []
        for x, g, m_prev, m in zip(leaves, grads, moms, per_leaf, strict=True):
            c = m.curvature(params, extra_args)
            r = m.egrad2rgrad(x, g, c=c)
            if momentum:
                buf = r + momentum * m_prev
                direction = r + momentum * buf if nesterov else buf
            else:
                buf, direction = None, r
            y, upd = _move(m, x, direction, lr, c, retraction)
            out_updates.append(upd)
            if momentum:
                out_moms.append(m.transport(x, y, buf, c=c).astype(m_prev.dtype))
        new_mom = treedef.unflatten(out_moms) if momentum else None
        count = optax.safe_increment(state.count)
        return treedef.unflatten(out_updates), RiemannianSGDState(count=count, momentum=new_mom)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def riemannian_adam(
    learning_rate: float | optax.Schedule,
    manifolds: Any = Euclidean(),
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    amsgrad: bool = False,
    retraction: bool = False,
    named: Mapping[str, Manifold] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Riemannian Adam / AMSGrad (Bécigneul & Ganea, ICLR 2019), as an optax transform.

    .. math:: m_t = \beta_1\tau_{t-1} + (1 - \beta_1) r_t,\quad
              v_t = \beta_2 v_{t-1} + (1 - \beta_2)\|r_t\|^2_{x_t},\quad
              \hat m_t = \frac{m_t}{1 - \beta_1^t},\quad \hat v_t = \frac{v_t}{1 - \beta_2^t},\\
              x_{t+1} = \exp_{x_t}\!\Big(-\alpha_t\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
              \Big),\qquad \tau_t = P_{x_t \to x_{t+1}}(m_t)

    with ``r_t`` the Riemannian gradient, ``||.||_x`` the Riemannian norm of each point (one
    ``v`` per vector on the last axis) and, with ``amsgrad``, ``v_hat`` replaced by its running
    maximum (the maximum of the bias-corrected values, as :func:`optax.amsgrad`). On
    Euclidean leaves this is :func:`optax.adam` (``amsgrad``: :func:`optax.amsgrad`).
    The paper's algorithms have no bias correction and ``eps``; set ``b1``/``b2`` and read
    ``v_hat`` accordingly if you need them verbatim (geoopt's ``RiemannianAdam`` has both).

    Args:
      learning_rate: a float or an optax schedule ``count -> lr``.
      manifolds: see :func:`riemannian_sgd`.
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: added to ``sqrt(v_hat)``.
      amsgrad: use the running maximum of ``v_hat`` (RAMSGRAD).
      retraction: step with the retraction ``project(x + v)`` instead of the exponential map.
      named: extra ``label -> Manifold`` entries for string labels.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (must be last in a chain; see the module
      docstring).
    """
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"riemannian_adam: b1 and b2 must be in [0, 1), got {b1!r}, {b2!r}")

    def init_fn(params):
        leaves, treedef, per_leaf = _validate(manifolds, params, named)
        mu = treedef.unflatten([jnp.zeros_like(x) for x in leaves])
        nu = treedef.unflatten(
            [
                jnp.zeros(_moment_shape(m, jnp.asarray(x)), jnp.asarray(x).dtype)
                for x, m in zip(leaves, per_leaf, strict=True)
            ]
        )
        nu_max = jax.tree_util.tree_map(jnp.zeros_like, nu) if amsgrad else None
        return RiemannianAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu, nu_max=nu_max)

    def update_fn(updates, state, params=None, **extra_args):
        _check_params(params, "riemannian_adam")
        leaves, treedef, per_leaf = _validate(manifolds, params, named)
        grads = treedef.flatten_up_to(updates)
        mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
        nu_maxs = treedef.flatten_up_to(state.nu_max) if amsgrad else [None] * len(leaves)
        lr = _learning_rate(learning_rate, state.count)
        count = optax.safe_increment(state.count)
        bc1, bc2 = 1 - b1**count, 1 - b2**count  # as optax.tree.bias_correction
        out = {"upd": [], "mu": [], "nu": [], "nu_max": []}
        for x, g, mu, nu, nu_max, m in zip(leaves, grads, mus, nus, nu_maxs, per_leaf, strict=True):
            c = m.curvature(params, extra_args)
            r = m.egrad2rgrad(x, g, c=c)
            mu = (1 - b1) * r + b1 * mu
            nu = (1 - b2) * m.sqnorm(x, r, c=c) + b2 * nu
            mu_hat = mu / bc1.astype(mu.dtype)
            nu_hat = nu / bc2.astype(nu.dtype)
            if amsgrad:
                nu_max = jnp.maximum(nu_max, nu_hat)
                nu_hat = nu_max
            direction = mu_hat / (jnp.sqrt(nu_hat) + eps)
            y, upd = _move(m, x, direction, lr, c, retraction)
            out["upd"].append(upd)
            out["mu"].append(m.transport(x, y, mu, c=c).astype(mu.dtype))
            out["nu"].append(nu)
            out["nu_max"].append(nu_max)
        state = RiemannianAdamState(
            count=count,
            mu=treedef.unflatten(out["mu"]),
            nu=treedef.unflatten(out["nu"]),
            nu_max=treedef.unflatten(out["nu_max"]) if amsgrad else None,
        )
        return treedef.unflatten(out["upd"]), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
