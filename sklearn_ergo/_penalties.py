"""Penalties ``F`` of the lower level and the data term ``G``, as small objects.

The unrolled solver touches ``F`` only through its convex conjugate (the dual
step of Chambolle-Pock, ``docs/math.md``, sections 2 and 3).  Every conjugate prox
here maps into a box (``[-1, 1]``, or ``[-b_j, b_j]`` per coordinate for a
weighted l1 norm) and its derivative vanishes exactly where the output sits on
the boundary, so the backward pass reads the mask off the stored dual iterate
(:meth:`active`) instead of storing one.

A convex penalty provides

- ``prox_conjugate(z, sigma, out)``, ``prox_conjugate_slope(sigma)`` and
  ``active(y, out)`` for the forward and backward passes, and ``part(start,
  stop)``, the penalty on a range of the flat dual iterate (the solver works
  per tile of the operator);
- ``conjugate_l2``: the ``c`` of a term ``(c / 2) ||y||^2`` in ``F*``, the
  only way the conjugate prox depends on ``sigma`` (hence on the step rule);
- ``smooth``: whether ``F`` is differentiable (the implicit mode needs it);
- ``reweighted = False`` and no learnable parameters.

A non-convex penalty ``sum_j phi(|z_j|)`` with ``phi`` concave is minimised
by majorize-minimize stages (``docs/math.md``, section 6): stage 1 is the l1
model, stage ``s`` a weighted l1 problem whose weights are the slopes of
``phi`` at the previous stage's ``K x``.  Such a penalty has
``reweighted = True``, names its learnable parameters in ``param_names``
(each holds one value, or one array of ``param_shape``, per row of ``K``)
and provides ``stage_penalty(w)``, ``weights(z, params)``, ``weights_vjp``
and ``stage_terms(z, params, n_threads=1)`` (the weights, and targets or
``None``; ``n_threads`` threads may share them: the dual of a large image
has millions of coordinates); the unrolled map (:mod:`._unrolled_map`) does
the rest.  One with ``shifted = True`` also centres stage ``s``'s l1 term
on targets computed from the same ``z`` (``targets(z, params)``,
``targets_vjp``), and its ``stage_penalty(w, t)`` takes them.  One with
``blended = True`` has a parameter ``blend``, one real per stage (``param_shape``
drops the rows): stage ``s > 1``'s data term is centred on ``x~ + blend
(x^(s-1) - x~)`` instead of ``x~``.
The dual iterate ``z`` of every operator is position-major, so
``z.reshape(-1, m)`` has one column per row of ``K``: the parameters come
per row and broadcast along it.
"""

import copy
import numbers

import numpy as np
from scipy.special import exprel

from ._operators import blas
from ._parallel import run_threads, scratch_buffer


class Penalty:
    """Defaults of a convex, non-smooth penalty without learnable parameters."""

    smooth = False
    reweighted = False
    conjugate_l2 = 0.0
    param_names = ()
    #: The parameters that must be positive (optimised through their log).
    positive_params = ()
    #: Whether stages centre their l1 terms on targets (``targets``).
    shifted = False
    #: Whether stages centre their data terms on a blend (``blend``) of ``x~``
    #: and the previous stage's output.
    blended = False
    #: The centre ``t`` of a stage's l1 term ``sum w |u - t|`` (dual-shaped),
    #: or None: a penalty centred on 0.
    shift = None

    def param_shape(self, name, rows):
        """Shape of parameter ``name`` for an operator with ``rows`` (a shape)."""
        return tuple(rows)

    def initial_param(self, name, rows):
        """A parameter's start when no scale sets it (see ``ImageDenoiser``)."""
        raise NotImplementedError(f"{name} has no fixed start.")

    def check_param(self, name, value, rows):
        """Raise ``ValueError`` unless ``value`` fits parameter ``name``."""
        shape = self.param_shape(name, rows)
        value = np.asarray(value)
        positive = name in self.positive_params
        if (
            value.shape != shape
            or not np.all(np.isfinite(value))
            or (positive and not np.all(value > 0))
        ):
            kind = "positive finite" if positive else "finite"
            raise ValueError(
                f"{name} must hold {shape} {kind} numbers ({rows[-1]} rows of K), "
                f"got {value!r}."
            )

    @classmethod
    def from_settings(cls, *, huber_eps=None):
        """The penalty for an estimator's settings (most take none)."""
        return cls()

    def part(self, start, stop):
        """The penalty of the coordinates ``start:stop`` of the flat dual iterate.

        The solver applies the prox and the mask per tile of the operator
        (:func:`~sklearn_ergo._chambolle_pock.apply_update`); a penalty without
        per-coordinate parameters is the same on every part.
        """
        return self


class L1(Penalty):
    """``F(u) = ||u||_1``; its conjugate is the indicator of the unit ``l_inf`` ball.

    With ``F = ||.||_1`` the scale of the analysis operator is the
    regularisation weight.
    """

    def value(self, u):
        return float(np.abs(u).sum())

    def prox(self, u, tau):
        """Soft thresholding, ``prox_{tau F}(u)``."""
        return np.sign(u) * np.maximum(np.abs(u) - tau, 0.0)

    def prox_conjugate(self, z, sigma, out=None):
        """``prox_{sigma F*}(z) = clip(z, -1, 1)``, in place when ``out is z``."""
        return np.clip(z, -1.0, 1.0, out=out)

    def prox_conjugate_slope(self, sigma):
        """Derivative of ``prox_{sigma F*}`` where ``|y| < 1`` (zero elsewhere)."""
        return 1.0

    def active(self, y, out):
        """``out <- (|y| < 1)``: where ``prox_{sigma F*}`` had a non-zero slope."""
        np.abs(y, out=out)
        return np.less(out, 1.0, out=out)


class WeightedL1(L1):
    """``F(u) = sum_j b_j |u_j|`` with per-coordinate weights ``b_j > 0``.

    Its conjugate is the indicator of the box ``|y_j| <= b_j``.  ``bounds``
    has the shape of the dual iterate (one row per sample); it is the
    penalty of one majorize-minimize stage of a reweighted penalty.  The
    backward pass also returns the gradient with respect to ``bounds``
    (``bound_grad`` of :func:`~sklearn_ergo._chambolle_pock.backward`).
    """

    def __init__(self, bounds):
        self.bounds = bounds
        # -b kept once: the prox is minimum then maximum, 4x faster than
        # np.clip with array bounds on a tile of the dual (float32, measured),
        # which also took a pass to negate b at every layer.
        self._lower = np.negative(bounds)

    def part(self, start, stop):
        part = copy.copy(self)
        part.bounds, part._lower = (
            a.reshape(-1)[start:stop] for a in (self.bounds, self._lower)
        )
        return part

    def value(self, u):
        return float(np.sum(self.bounds * np.abs(u)))

    def prox(self, u, tau):
        return np.sign(u) * np.maximum(np.abs(u) - tau * self.bounds, 0.0)

    def prox_conjugate(self, z, sigma, out=None):
        """``prox_{sigma F*}(z) = clip(z, -b, b)``, in place when ``out is z``."""
        out = np.minimum(z, self.bounds, out=out)
        return np.maximum(out, self._lower, out=out)

    def active(self, y, out):
        """``out <- (|y| < b)``."""
        np.abs(y, out=out)
        return np.less(out, self.bounds, out=out)


class ShiftedWeightedL1(WeightedL1):
    """``F(u) = sum_j b_j |u_j - t_j|``: a weighted l1 norm centred on ``t``.

    ``F*(y) = <y, t>`` on the box ``|y_j| <= b_j``, so its prox is the box's
    clip after a shift by ``-sigma t`` and the mask is the box's: the tape
    stays the dual iterates.  The pre-prox point moves by ``-sigma_l t`` at
    every layer, so the gradient with respect to ``t`` is ``-sum_l
    sigma_l delta_D^[l]`` (``shift_grad`` of
    :func:`~sklearn_ergo._chambolle_pock.backward`).
    """

    def __init__(self, bounds, shift):
        super().__init__(bounds)
        self.shift = shift

    def part(self, start, stop):
        part = super().part(start, stop)
        part.shift = self.shift.reshape(-1)[start:stop]
        return part

    def value(self, u):
        return float(np.sum(self.bounds * np.abs(u - self.shift)))

    def prox(self, u, tau):
        return self.shift + super().prox(u - self.shift, tau)

    def prox_conjugate(self, z, sigma, out=None):
        """``clip(z - sigma t, -b, b)``, in place when ``out is z``."""
        t = self.shift
        if out is z and z.flags.c_contiguous and t.flags.c_contiguous:
            # The solver's call, per tile of the dual at every layer: one
            # BLAS pass instead of a temporary sigma t and a subtraction.
            blas("axpy", z.dtype)(t.reshape(-1), z.reshape(-1), a=-sigma)
        else:
            out = np.subtract(z, sigma * t, out=out)
        return super().prox_conjugate(out, sigma, out=out)


class Huber(L1):
    """Huber function with parameter ``eps > 0``, a smooth variant of ``||.||_1``.

    ``F(u) = sum_i h(u_i)`` with ``h(t) = t**2 / (2 eps)`` for ``|t| <= eps`` and
    ``|t| - eps / 2`` otherwise, so that
    ``F*(y) = i_{||y||_inf <= 1}(y) + (eps / 2) ||y||^2``.
    """

    smooth = True

    def __init__(self, eps):
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
            raise TypeError(f"huber_eps must be a real number, got {eps!r}.")
        # eps = inf would turn the backward pass's eps * <w, y> into inf * 0.
        if not (0 < eps < np.inf):
            raise ValueError(f"huber_eps must be > 0 and finite, got {eps!r}.")
        self.eps = float(eps)

    @classmethod
    def from_settings(cls, *, huber_eps=None):
        return cls(huber_eps)

    @property
    def conjugate_l2(self):
        return self.eps

    def value(self, u):
        a = np.abs(u)
        return float(
            np.where(a <= self.eps, a**2 / (2 * self.eps), a - self.eps / 2).sum()
        )

    def prox(self, u, tau):
        """``prox_{tau F}(u)``: linear shrinkage near zero, soft thresholding beyond."""
        inner = np.abs(u) <= self.eps + tau
        return np.where(inner, u * (self.eps / (self.eps + tau)), u - tau * np.sign(u))

    def prox_conjugate(self, z, sigma, out=None):
        """``prox_{sigma F*}(z) = clip(z / (1 + sigma eps), -1, 1)``."""
        out = np.multiply(z, 1.0 / (1.0 + sigma * self.eps), out=out)
        return np.clip(out, -1.0, 1.0, out=out)

    def prox_conjugate_slope(self, sigma):
        """Derivative of ``prox_{sigma F*}`` where ``|y| < 1`` (zero elsewhere)."""
        return 1.0 / (1.0 + sigma * self.eps)


class Log(Penalty):
    """``F(z) = sum_j eps_k log(1 + |z_j| / eps_k)``, by reweighted l1 stages.

    One positive scale ``eps_k`` per filter (row of ``K``), learned with it.
    The penalty is concave in ``|z|``, so its tangent majorises it: a stage
    linearised at ``z`` is a weighted l1 problem with the slopes
    ``w = eps / (eps + |z|)`` in ``(0, 1]`` (Candes, Wakin and Boyd 2008).
    As ``eps -> infinity`` every ``w -> 1`` and the model is the l1 one.
    """

    reweighted = True
    param_names = ("eps",)
    positive_params = ("eps",)

    def value(self, z, params):
        eps = params["eps"]
        return float(np.sum(eps * np.log1p(np.abs(z).reshape(-1, len(eps)) / eps)))

    def stage_penalty(self, w):
        """The convex penalty of a stage: l1 for stage 1 (``w is None``)."""
        return L1() if w is None else WeightedL1(w)

    def stage_terms(self, z, params, n_threads=1):
        """Weights and targets (``None``: centred on 0) of a stage read off ``z``.

        ``n_threads``: threads the penalty may use (these weights, three
        passes over ``z``, use one).
        """
        return self.weights(z, params), None

    def weights(self, z, params):
        """Slopes ``eps / (eps + |z|)`` of the penalty at ``z``, new array."""
        eps = params["eps"]
        w = np.abs(z)
        rows = w.reshape(-1, len(eps))
        rows += eps
        np.divide(eps, rows, out=rows)
        return w

    def weights_vjp(self, z, w, params, d_w):
        """Pull ``d_w`` back through :meth:`weights`; ``d_w`` is overwritten.

        Returns ``d_z`` (the shape of ``z``) and ``{"eps": d_eps}`` (per row):
        ``dw/deps = w (1 - w) / eps`` and ``dw/dz = -sign(z) w^2 / eps``.
        """
        eps = params["eps"]
        m = len(eps)
        d_eps = (d_w * w * (1.0 - w)).reshape(-1, m).sum(axis=0) / eps
        d_w *= w
        d_w *= w
        d_z = (d_w.reshape(-1, m) / eps).reshape(z.shape)
        d_z *= -np.sign(z)
        return d_z, {"eps": d_eps}


#: Coordinates per block of :func:`_by_row_blocks` (a few hundred KB).
_BLOCK = 1 << 16


def _by_row_blocks(z, m, fill, n_out=1, n_threads=1):
    """New arrays like ``z``, ``fill(z_rows, *out_rows)`` on blocks of its rows.

    Rows are ``z.reshape(-1, m)`` (one column per filter).  A 512x512 image
    with 48 filters has 12.6 M coordinates, and whole-size temporaries (fresh
    memory at every call) made one such step a large share of denoising an
    image; the blocks are shared by ``n_threads`` threads.  Returns the
    array, or a list of ``n_out`` of them.  ``fill`` gets the thread's
    ``scratch`` (:func:`~sklearn_ergo._parallel.scratch_buffer`) as a keyword.
    """
    outs = [np.empty_like(z) for _ in range(n_out)]
    rows, z_rows = [o.reshape(-1, m) for o in outs], z.reshape(-1, m)
    step = max(1, _BLOCK // m)
    blocks = [slice(start, start + step) for start in range(0, len(z_rows), step)]

    def fill_block(block, scratch):
        fill(z_rows[block], *(r[block] for r in rows), scratch=scratch)

    run_threads(fill_block, blocks, n_threads)
    return outs[0] if n_out == 1 else outs


def _gather(table, flat, scratch=None):
    """The rows of ``table`` at the indices ``flat``, shape ``(*flat.shape, k)``.

    One gather of ``k``-value rows, against ``k`` gathers of one value
    (``scratch``: :func:`~sklearn_ergo._parallel.scratch_buffer`'s).
    """
    k = table.shape[1]
    out = scratch_buffer(scratch, flat.size * k, table.dtype, "gathered")
    # mode="clip" (the indices are in range): "raise" buffers ``out``.
    return np.take(table, flat, axis=0, out=out.reshape(*flat.shape, k), mode="clip")


class ShapedLog(Log):
    """The log penalty with a learned concave shape per filter.

    ``F(z) = sum_j phi_k(|z_j|)`` with ``phi_k(0) = 0`` and slope
    ``w = phi_k'``: in ``u = log(1 + |z| / eps_k)``, ``log w`` is continuous,
    piecewise linear between the knots ``u = 0, DELTA, 2 DELTA, ...`` and
    falls with slope ``exp(a_ki)`` on segment ``i`` (the last one
    unbounded).  ``a = 0`` is :class:`Log` (``log w = -u``).  Any ``a`` keeps
    ``w`` decreasing in ``(0, 1]``, so ``phi_k`` stays concave and the
    stages majorize-minimize steps: the shape learns how fast large
    responses stop being penalised, like the learned influence functions of
    TNRD, inside the variational model.  Learnable: ``eps`` (positive) and
    ``shape`` (``a``, :attr:`n_segments` reals) per filter.
    """

    param_names = ("eps", "shape")
    n_segments = 8
    knot_spacing = 0.5

    def param_shape(self, name, rows):
        if name == "shape":
            return (*rows, self.n_segments)
        return tuple(rows)

    def initial_param(self, name, rows):
        """Zeros (``shape``, and ``gain`` and ``blend`` of subclasses): the log
        penalty."""
        return np.zeros(self.param_shape(name, rows))

    def _segments(self, z, params, scratch=None):
        """As rows ``(-1, m)``: ``|z|``, ``u``, each one's segment (flat index)
        and its offset ``u - u_i`` in it, in the dtype of ``z``; in buffers of
        ``scratch`` if given (valid until its next use)."""
        eps, a = params["eps"], params["shape"]
        m, n = a.shape
        h = self.knot_spacing
        t, u, x = (
            scratch_buffer(scratch, z.size, z.dtype, name).reshape(-1, m)
            for name in ("segments |z|", "segments u", "segments x")
        )
        np.abs(z.reshape(-1, m), out=t)
        np.divide(t, eps, out=u)
        # log(1 + u) rather than log1p: NumPy vectorises log, not log1p (6x
        # faster in float32), and only u's absolute error, one rounding of
        # 1 + u, reaches the segments and weights.
        u += 1.0
        np.log(u, out=u)
        flat = scratch_buffer(scratch, z.size, np.int32, "segments index")
        flat = flat.reshape(-1, m)
        np.copyto(flat, np.multiply(u, 1.0 / h, out=x), casting="unsafe")
        # clip, not minimum: NumPy's minimum with a scalar took 1.7x as long
        # (int32) and 3x (float32, AVX2; a scratch timing); flat >= 0 as u >= 0.
        np.clip(flat, 0, n - 1, out=flat)
        np.copyto(x, flat)
        x *= -h
        x += u
        flat += n * np.arange(m, dtype=np.int32)
        return t, u, x, flat

    def _log_w_at_knots(self, a):
        """``exp(a)`` (the slopes) and ``log w`` at the start of every segment."""
        b = np.exp(a)
        return b, -self.knot_spacing * (np.cumsum(b, axis=-1) - b)

    def _weight_table(self, a):
        """Rows ``(exp(a_i), log w(u_i))``, one per segment (``(m * n, 2)``):
        what :meth:`_weights_at` reads, gathered by :func:`_gather`."""
        return np.stack([part.ravel() for part in self._log_w_at_knots(a)], axis=1)

    def value(self, z, params):
        eps, a = params["eps"], params["shape"]
        t, u, x, flat = self._segments(z, params)
        b, c = self._log_w_at_knots(a)
        h = self.knot_spacing
        knots = h * np.arange(a.shape[-1])
        # int_{u_i}^{u} w(s) e^s ds = e^(c_i + u_i) x exprel((1 - b_i) x), x = u - u_i.
        scale = np.exp(c + knots)
        whole = scale * h * exprel((1.0 - b) * h)
        before = (np.cumsum(whole, axis=-1) - whole).ravel()[flat]
        part = scale.ravel()[flat] * x * exprel((1.0 - b.ravel()[flat]) * x)
        return float(np.sum(eps * (before + part)))

    def weights(self, z, params, n_threads=1):
        """Slopes ``exp(c_i - exp(a_i) (u - u_i))`` at ``z``, new array."""
        table = self._weight_table(params["shape"]).astype(z.dtype, copy=False)

        def fill(z_rows, out, scratch):
            _, _, x, flat = self._segments(z_rows, params, scratch)
            self._weights_at(x, _gather(table, flat, scratch), out, scratch)

        return _by_row_blocks(z, len(params["eps"]), fill, n_threads=n_threads)

    def stage_terms(self, z, params, n_threads=1):
        """The weights at ``z`` (on ``n_threads`` threads) and no targets."""
        return self.weights(z, params, n_threads), None

    @staticmethod
    def _weights_at(x, rows, out, scratch=None):
        """``out <- exp(c_i - b_i x)``, the weights at the offsets ``x`` of
        :meth:`_segments`, given their segments' rows ``(b_i, c_i)`` of
        :meth:`_weight_table` (``scratch``: as there)."""
        log_w = scratch_buffer(scratch, x.size, x.dtype, "weights").reshape(x.shape)
        np.multiply(rows[..., 0], x, out=log_w)
        np.subtract(rows[..., 1], log_w, out=log_w)
        np.exp(log_w, out=out)

    def weights_vjp(self, z, w, params, d_w):
        """Pull ``d_w`` back through :meth:`weights`.

        With ``g = d_w w`` (the adjoint of ``log w``): ``d log w / du =
        -b_i``, ``du/d|z| = 1 / (eps + |z|)``, ``du/deps = -|z| / (eps (eps +
        |z|))``; ``log w`` depends on ``b_j = exp(a_j)`` with slope ``-DELTA``
        for every segment ``j`` below its own and ``-(u - u_i)`` for its own.
        """
        eps, a = params["eps"], params["shape"]
        m, n = a.shape
        t, u, x, flat = self._segments(z, params)
        b = np.exp(a)
        g = (d_w * w).reshape(-1, m)
        d_u = -g * b.ravel()[flat]
        d_z = (d_u / (eps + t)).reshape(z.shape) * np.sign(z)
        d_eps = -np.sum(d_u * t / (eps + t), axis=0) / eps
        per_segment = np.bincount(flat.ravel(), g.ravel(), m * n).reshape(m, n)
        own = np.bincount(flat.ravel(), (g * x).ravel(), m * n).reshape(m, n)
        above = np.cumsum(per_segment[:, ::-1], axis=1)[:, ::-1] - per_segment
        d_a = -b * (self.knot_spacing * above + own)
        return d_z, {"eps": d_eps, "shape": d_a.astype(d_eps.dtype, copy=False)}


class ShiftedShapedLog(ShapedLog):
    """:class:`ShapedLog` stages centred on a learned gain of the previous responses.

    Stage ``s > 1`` penalises ``sum_j w_j |(K x)_j - t_j|`` with the weights
    of :class:`ShapedLog` and targets ``t = rho_k(u) z`` instead of ``0``,
    where ``z = K_s x^(s-1)`` and ``u = log(1 + |z| / eps_k)`` as there:
    ``rho_k`` is piecewise linear between its values (``gain``, one per knot
    ``u = 0, DELTA, ..., n_segments DELTA`` and constant beyond), learned per
    filter.  ``gain = 0`` is :class:`ShapedLog`.  A gain near 1 keeps a
    filter's response where the previous stage put it, above 1 amplifies it,
    like the non-monotone influence functions of TNRD that a weighted l1
    stage centred on 0 cannot express.  The stages stay convex problems but
    are no longer majorize-minimize steps of one energy (:meth:`value` is
    the shaped log penalty's, which they no longer decrease).
    """

    param_names = ("eps", "shape", "gain")
    shifted = True

    def param_shape(self, name, rows):
        if name == "gain":
            return (*rows, self.n_segments + 1)
        return super().param_shape(name, rows)

    def stage_penalty(self, w, t=None):
        """The convex penalty of a stage: l1 for stage 1, else centred on ``t``."""
        if w is None:
            return L1()
        if t is None:
            raise ValueError("A shifted stage after the first needs its targets t.")
        return ShiftedWeightedL1(w, t)

    def _gain_table(self, params):
        """Rows ``(s_i, v_i)``, one per segment (``(m * n, 2)``): ``rho = v_i
        + s_i min(u - u_i, DELTA)``, the gain's slope and its value at the
        segment's left knot."""
        v = params["gain"]
        slope = np.diff(v, axis=-1) / self.knot_spacing
        return np.stack([slope.ravel(), v[:, :-1].ravel()], axis=1)

    def _rho(self, x, rows, scratch=None):
        """The gain ``rho`` at the offsets ``x`` of :meth:`_segments`, given
        their segments' rows of :meth:`_gain_table` (``scratch``: as there)."""
        rho = scratch_buffer(scratch, x.size, x.dtype, "gain").reshape(x.shape)
        # constant beyond the last knot; clip, not minimum (see _segments)
        np.clip(x, -np.inf, self.knot_spacing, out=rho)
        rho *= rows[..., 0]
        rho += rows[..., 1]
        return rho

    def _gain(self, segments, params):
        """As rows ``(-1, m)``, from :meth:`_segments` ``segments``: ``|z|``,
        the gain ``rho``, its slope in ``u``, the flat index of each one's
        left knot and its fraction ``f`` of the way to the next (1 beyond the
        last): what the gradient needs besides ``rho``."""
        t, _, x, flat = segments
        rows = _gather(self._gain_table(params), flat)
        rho = self._rho(x, rows)
        f = np.multiply(x, 1.0 / self.knot_spacing)
        # Not np.minimum(f, 1.0): with a scalar it took 4.7x as long in float32
        # (NumPy 2.4, AVX2).
        np.clip(f, -np.inf, 1.0, out=f)
        slope = rows[..., 0] * (f < 1.0)
        # Into the (m, n + 1) knots: row k's segments start at k (n + 1).
        knots = flat + np.arange(len(params["eps"]), dtype=flat.dtype)
        return t, rho, slope, knots, f

    def targets(self, z, params, n_threads=1):
        """``t = rho(u) z`` at ``z``, new array."""
        table = self._gain_table(params).astype(z.dtype, copy=False)

        def fill(z_rows, out, scratch):
            _, _, x, flat = self._segments(z_rows, params, scratch)
            rho = self._rho(x, _gather(table, flat, scratch), scratch)
            np.multiply(rho, z_rows, out=out)

        return _by_row_blocks(z, len(params["eps"]), fill, n_threads=n_threads)

    def stage_terms(self, z, params, n_threads=1):
        """Weights and targets at ``z``, in one pass: they share the segments."""
        # One gather of both tables' rows: 4 values per coordinate.
        table = np.concatenate(
            [self._weight_table(params["shape"]), self._gain_table(params)], axis=1
        ).astype(z.dtype, copy=False)

        def fill(z_rows, w, t, scratch):
            _, _, x, flat = self._segments(z_rows, params, scratch)
            rows = _gather(table, flat, scratch)
            self._weights_at(x, rows[..., :2], w, scratch)
            np.multiply(self._rho(x, rows[..., 2:], scratch), z_rows, out=t)

        return _by_row_blocks(z, len(params["eps"]), fill, n_out=2, n_threads=n_threads)

    def targets_vjp(self, z, params, d_t):
        """Pull ``d_t`` back through :meth:`targets`.

        ``dt/dz = rho + rho'(u) |z| / (eps + |z|)``, ``dt/deps = -rho'(u) z
        |z| / (eps (eps + |z|))``; the knot values enter linearly, with
        ``(1 - f) z`` and ``f z``.  Returns ``d_z`` and ``{"eps", "gain"}``.
        """
        eps = params["eps"]
        m, n = params["gain"].shape
        t, rho, slope, flat, f = self._gain(self._segments(z, params), params)
        z_rows, g = z.reshape(-1, m), d_t.reshape(-1, m)
        ratio = t / (eps + t)
        d_z = (g * (rho + slope * ratio)).reshape(z.shape)
        d_eps = -np.sum(g * slope * z_rows * ratio, axis=0) / eps
        gz = g * z_rows
        d_gain = np.bincount(flat.ravel(), (gz * (1.0 - f)).ravel(), m * n)
        d_gain += np.bincount(flat.ravel() + 1, (gz * f).ravel(), m * n)
        d_gain = d_gain.reshape(m, n).astype(d_eps.dtype, copy=False)
        return d_z, {"eps": d_eps, "gain": d_gain}


class BlendedShapedLog(ShiftedShapedLog):
    """:class:`ShiftedShapedLog` stages whose data terms move towards the last output.

    Stage ``s > 1`` minimises ``||x - c_s||^2 / 2 + sum_j w_j |(K_s x)_j -
    t_j|`` with ``c_s = x~ + beta_s (x^(s-1) - x~)``: ``beta_s`` (``blend``,
    one real per stage, learned) trades the noisy image for the previous
    stage's output as the point the stage stays close to, as the
    stages of TNRD start from the previous one's output and keep only a
    learned pull towards ``x~``.  ``blend = 0`` is :class:`ShiftedShapedLog`.
    """

    param_names = ("eps", "shape", "gain", "blend")
    blended = True

    def param_shape(self, name, rows):
        if name == "blend":
            return tuple(rows[:-1])
        return super().param_shape(name, rows)


class SquaredL2:
    """``G(r) = ||r||^2 / 2``, the data term of the denoiser (on the residual)."""

    def value(self, r):
        return 0.5 * float(np.vdot(r, r))

    def prox(self, z, tau, out=None):
        """``prox_{tau G}(z) = z / (1 + tau)``."""
        return np.multiply(z, 1.0 / (1.0 + tau), out=out)

    def prox_slope(self, tau):
        return 1.0 / (1.0 + tau)


#: The penalties an estimator's ``penalty`` string names.
PENALTIES = {
    "l1": L1,
    "huber": Huber,
    "log": Log,
    "shaped_log": ShapedLog,
    "shifted_log": ShiftedShapedLog,
    "blended_log": BlendedShapedLog,
}


def make_penalty(penalty, *, huber_eps=0.01):
    """The penalty object for ``penalty``: a name of :data:`PENALTIES` or an object.

    ``huber_eps`` is the parameter of ``"huber"`` (the only penalty with a
    fixed, non-learned parameter).
    """
    if not isinstance(penalty, str):
        return penalty
    if penalty not in PENALTIES:
        raise ValueError(
            f"penalty must be one of {sorted(PENALTIES)}, got {penalty!r}."
        )
    return PENALTIES[penalty].from_settings(huber_eps=huber_eps)
