"""Reaction-diffusion refinement steps after the unrolled stages.

A step maps the stages' output ``x`` to

    x - R^T phi(R x) - lam (x - x~)

TNRD's reaction-diffusion step (Chen & Pock): zero-mean filters ``R`` (the
rows of ``refine_filters`` less their mean), one *influence function*
``phi_k`` per filter, free rather than the derivative of a penalty, and a
learned reaction weight ``lam``.  ``phi_k`` is piecewise linear on
``n_knots`` equally spaced knots of ``[-bound, bound]`` (``refine_phi``: its
values there) and constant outside.  At ``refine_phi = 0`` and ``lam = 0`` a
step is the identity: a trained model with refinement steps added starts as
itself.  The steps cost two convolutions each, against two per unrolled
layer.

Parameters ``refine_filters`` ``(n_steps, n_filters, n_features)``,
``refine_phi`` ``(n_steps, n_filters, n_knots)`` and ``refine_weight``
``(n_steps,)``; the gradients below are exact and checked against finite
differences in ``tests/test_refinement.py``.
"""

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ._chambolle_pock import apply_update
from ._operators import axpy

PARAM_NAMES = ("refine_filters", "refine_phi", "refine_weight")
#: Bytes of responses per block of the influence functions' evaluation.
#: Each NumPy call holds the GIL while it dispatches: on the tiles' threads,
#: blocks of 32768 responses ran 4 steps of the fast model on a 528^2 image
#: in 339 ms (float32, 2 threads), blocks of 512 KB in 257 ms (one timing
#: on the 2-core machine of the README's speed section).
_BLOCK_BYTES = 1 << 19


def dct_filters(n_filters, n_features):
    """The ``n_filters`` lowest-frequency non-constant DCT atoms, unit norm.

    2-D atoms of a ``p x p`` patch when ``n_features = p ** 2``, else 1-D
    ones, ordered by total frequency: a zero-mean basis to start from.
    """
    p = math.isqrt(n_features)
    shape = (p, p) if p * p == n_features else (n_features,)
    if n_filters > n_features - 1:
        raise ValueError(
            f"at most {n_features - 1} zero-mean filters of {n_features} "
            f"features are independent, got n_filters={n_filters}."
        )
    freqs = sorted(np.ndindex(shape), key=lambda f: (sum(f), f))[1 : n_filters + 1]
    atoms = np.empty((n_filters, n_features))
    for k, f in enumerate(freqs):
        e = np.zeros(shape)
        e[f] = 1.0
        atoms[k] = scipy.fft.idctn(e, norm="ortho").ravel()
    return atoms


@dataclass(frozen=True)
class Refinement:
    """``n_steps`` reaction-diffusion steps (see the module docstring).

    Parameters
    ----------
    n_steps : int
    n_knots : int, default=63
        Knots of every influence function.
    bound : float, default=0.6
        The knots span ``[-bound, bound]``, filter responses of images in
        ``[0, 1]``.
    """

    n_steps: int = 1
    n_knots: int = 63
    bound: float = 0.6
    param_names = PARAM_NAMES

    @property
    def spacing(self):
        return 2.0 * self.bound / (self.n_knots - 1)

    def initial_params(self, n_filters, n_features):
        """The identity steps: DCT filters, zero influence, zero weight."""
        filters = dct_filters(n_filters, n_features)
        return {
            "refine_filters": np.stack([filters] * self.n_steps),
            "refine_phi": np.zeros((self.n_steps, n_filters, self.n_knots)),
            "refine_weight": np.zeros(self.n_steps),
        }

    def check_params(self, params, n_features):
        """Raise ``ValueError`` unless ``params`` fit these steps."""
        R, phi, lam = (np.shape(params[name]) for name in PARAM_NAMES)
        n = self.n_steps
        if len(R) != 3 or R[0] != n or R[2] != n_features:
            raise ValueError(
                f"refine_filters must have shape ({n}, n_filters, {n_features}), "
                f"got {R}."
            )
        if phi != (n, R[1], self.n_knots) or lam != (n,):
            raise ValueError(
                f"refine_phi must have shape {(n, R[1], self.n_knots)} and "
                f"refine_weight {(n,)}, got {phi} and {lam}."
            )

    def _step_params(self, params, k, dtype):
        R = np.asarray(params["refine_filters"][k], dtype=dtype)
        R = R - R.mean(axis=1, keepdims=True)
        phi = np.asarray(params["refine_phi"][k], dtype=dtype)
        return R, phi, float(params["refine_weight"][k])

    def _tables(self, phi):
        """Per knot of each filter, the rise of ``phi`` over the segment from
        it and the intercept of that segment's line (``t`` in knots), on the
        knots padded by one flat segment at each end: a response past the
        bound lands on a flat segment, slope zero, without a mask.  As rows
        ``(rise, intercept)`` of one ``(m (n_knots + 2), 2)`` array: one
        gather fetches both.
        """
        m, n = phi.shape
        padded = np.concatenate([phi[:, :1], phi, phi[:, -1:]], axis=1)
        rise = np.zeros_like(padded)
        rise[:, :-1] = np.diff(padded, axis=1)
        intercept = padded - rise * np.arange(n + 2, dtype=padded.dtype)
        return np.stack([rise.ravel(), intercept.ravel()], axis=1)

    def _influence(self, z, phi, *, grad=False, out=None, tables=None):
        """``phi(z)`` per filter (the last axis of ``z`` in rows of ``m``).

        With ``grad`` also ``phi'(z)``, and the padded knot below every
        response (a row of :meth:`_tables`, flat in ``(m, n_knots + 2)``) with its
        fraction, which the gradient needs.  Computed in blocks of
        responses, in cache, that allocate no image-sized temporaries;
        ``out`` may be ``z`` itself; ``tables``: :meth:`_tables` of ``phi``,
        when made once for many calls.
        """
        m, n = phi.shape
        zf = z.reshape(-1, m)
        value = np.empty_like(zf) if out is None else out.reshape(zf.shape)
        if grad:
            slope, frac = np.empty_like(zf), np.empty_like(zf)
            index = np.empty(zf.shape, dtype=np.intp)  # what bincount reads
        table = self._tables(phi) if tables is None else tables
        # int32 indices and the knot found in floating point: float-to-int64
        # conversions and mixed int64 / float arithmetic cost several passes.
        offsets = np.arange(0, m * (n + 2), n + 2, dtype=np.int32)
        inv = 1.0 / self.spacing
        rows = max(_BLOCK_BYTES // (zf.itemsize * m), 1)
        for a in range(0, len(zf), rows):
            b = slice(a, a + rows)
            # t in knots from the padded first knot, at -bound - spacing
            t = np.add(zf[b], self.bound + self.spacing, out=frac[b] if grad else None)
            t *= inv
            np.clip(t, 0, n + 1, out=t)
            knot = np.floor(t)
            i = knot.astype(np.int32)
            i += offsets
            # One gather of (rise, intercept) pairs: 3.3 against 3.75 ns per
            # response for two gathers (float32, one thread, a scratch timing).
            pairs = table.take(i, axis=0, mode="clip")
            np.multiply(pairs[..., 0], t, out=value[b])
            value[b] += pairs[..., 1]
            if grad:
                np.multiply(pairs[..., 0], inv, out=slope[b])
                t -= knot  # exact: the fraction of a segment
                index[b] = i
        value = value.reshape(z.shape)
        if not grad:
            return value
        return value, slope.reshape(z.shape), index, frac

    def forward(self, operator, params, x, X, *, record=False):
        """The steps from the stages' output ``x`` (rows), and their inputs."""
        inputs, z = [], None
        for k in range(self.n_steps):
            R, phi, lam = self._step_params(params, k, x.dtype)
            op = operator(R)
            if record:
                inputs.append(x)
            if z is None:
                z = np.empty((len(x), op.n_dual), dtype=x.dtype)
            flat, tables = z.reshape(-1), self._tables(phi)  # once per step

            def influence(start, stop, phi=phi, flat=flat, tables=tables):
                part = flat[start:stop]
                self._influence(part, phi, out=part, tables=tables)

            # y = (1 - lam) x + lam x~ - R^T phi(R x): the influence and the
            # adjoint per tile of the convolution, in cache and on its threads.
            y = np.empty_like(x)
            apply_update(
                op, x, z, 1.0, 0.0, post=influence, adjoint=(y, -1.0, x, 1.0 - lam)
            )
            if lam:
                axpy(X, y, lam)
            x = y
        return x, inputs

    def backward(self, operator, params, X, inputs, g):
        """``(d<g, out>/dx, grads)`` through the steps that read ``inputs``."""
        grads = {
            name: np.zeros(np.shape(params[name]), dtype=g.dtype)
            for name in PARAM_NAMES
        }
        for k in reversed(range(self.n_steps)):
            x = inputs[k]
            R, phi, lam = self._step_params(params, k, x.dtype)
            op = operator(R)
            value, slope, i, frac = self._influence(op.apply(x), phi, grad=True)
            q = op.apply(g)  # d<g, out>/d phi(z) is -q
            q_slope = q * slope
            # out = x - R^T phi(R x) - lam (x - x~): R enters twice.
            d_R = op.weight_grad(q_slope, x)
            d_R += op.weight_grad(value, g)
            grads["refine_filters"][k] = d_R.mean(axis=1, keepdims=True) - d_R
            # phi(z) = (1 - f) p[i] + f p[i + 1] on the padded knots p: the
            # knot above gets the fraction's share; the pads are phi's ends.
            m, n = phi.shape
            i, size = i.ravel(), m * (n + 2)
            shares = np.bincount(i, q.reshape(-1) * frac.reshape(-1), minlength=size)
            d_pad = np.bincount(i, q.reshape(-1), minlength=size) - shares
            d_pad, shares = d_pad.reshape(m, n + 2), shares.reshape(m, n + 2)
            d_pad[:, 1:] += shares[:, :-1]
            d_phi = d_pad[:, 1:-1]
            d_phi[:, 0] += d_pad[:, 0]
            d_phi[:, -1] += d_pad[:, -1]
            grads["refine_phi"][k] = -d_phi
            grads["refine_weight"][k] = -np.vdot(g, x - X)
            g_in = (1.0 - lam) * g
            g_in -= op.adjoint(q_slope)
            g = g_in
        return g, grads
