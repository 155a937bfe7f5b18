"""The unrolled denoiser as one object: evaluate it, differentiate it.

:class:`UnrolledMap` describes the whole map from noisy samples to their
denoised versions: the operator factory (dense or convolutional), the
penalty, the step rule, the output weights and the stages.  Everything that
evaluates or differentiates the map (the public functions, both estimators,
the diagnostics) builds one and calls :meth:`~UnrolledMap.loss_grad` or
:meth:`~UnrolledMap.apply`, which run the pure kernels of
:mod:`._chambolle_pock` on chunks of samples through the one parallel driver
of :mod:`._parallel`.

Parameters are a dict of arrays: ``"K"`` and the penalty's learnable
parameters (``Log``: ``"eps"``, one per row of ``K``; ``ShapedLog`` also
``"shape"``, a row of reals per row of ``K``, ``ShiftedShapedLog``
``"gain"`` and ``BlendedShapedLog`` ``"blend"``, one real).  With
``per_stage=True`` each array has a leading axis of ``n_stages``: stage ``s``
has its own operator ``K_s`` and penalty parameters (stage 1 of a reweighted
penalty is the l1 model and uses none of them).  Gradients come back in the
same structure.  A :class:`~._refinement.Refinement` adds reaction-diffusion
steps after the stages, with their own parameters (``refine_*``).
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._chambolle_pock import backward, forward
from ._implicit import check_implicit_penalty, implicit_denoise, implicit_loss_grad
from ._operators import DenseOperator
from ._parallel import (
    FORWARD_BYTES,
    TAPE_BYTES,
    chunk_slices,
    map_chunks,
    one_blas_thread,
    workers,
)
from ._penalties import L1
from ._steps import ScaledSteps, add_step_rule_grad

UNROLL_MODES = ("last", "ergodic", "implicit")


def output_weights(n_layers, unroll, ergodic_weights="uniform"):
    """Weights ``alpha`` of the iterates ``r^[1..L]`` in the output.

    Parameters
    ----------
    n_layers : int
    unroll : {"last", "ergodic"}
        ``"last"`` returns ``r^[L]``; ``"ergodic"`` an average of all iterates.
    ergodic_weights : {"uniform", "linear"} or array-like of shape (n_layers,)
        Weighting of the ergodic average: ``alpha_l = 1 / L``,
        ``alpha_l ∝ l``, or explicit non-negative weights (normalised to sum
        to 1).  Ignored for ``unroll="last"``.

    Returns
    -------
    alpha : ndarray of shape (n_layers,)
    """
    if unroll == "last":
        alpha = np.zeros(n_layers)
        alpha[-1] = 1.0
        return alpha
    if unroll != "ergodic":
        raise ValueError(f"unroll must be one of {UNROLL_MODES}, got {unroll!r}.")
    if isinstance(ergodic_weights, str):
        if ergodic_weights == "uniform":
            alpha = np.ones(n_layers)
        elif ergodic_weights == "linear":
            alpha = np.arange(1.0, n_layers + 1)
        else:
            raise ValueError(
                "ergodic_weights must be 'uniform', 'linear' or an array, "
                f"got {ergodic_weights!r}."
            )
    else:
        alpha = np.asarray(ergodic_weights, dtype=np.float64)
        if alpha.shape != (n_layers,):
            raise ValueError(
                f"ergodic_weights has shape {alpha.shape}; expected ({n_layers},) "
                "to match n_layers."
            )
        if not np.all(np.isfinite(alpha)) or np.any(alpha < 0) or alpha.sum() <= 0:
            raise ValueError(
                "ergodic_weights must be finite, non-negative and not all zero."
            )
    return alpha / alpha.sum()


@dataclass(frozen=True)
class Stage:
    """One stage's parameters with the steps derived from its operator."""

    K: np.ndarray
    params: dict
    steps: Any
    norm: float
    norm_grad: np.ndarray


@dataclass(frozen=True, eq=False)
class UnrolledMap:
    """``n_stages`` x ``n_layers`` unrolled Chambolle-Pock iterations from ``x~``.

    Parameters
    ----------
    n_layers : int
        Iterations per stage (unused by ``unroll="implicit"``).
    unroll : {"last", "ergodic", "implicit"}
        Output of a stage: the last iterate, an ergodic average with
        ``ergodic_weights``, or the exact minimiser with the implicit
        gradient (a smooth penalty, one stage, computed in float64).
    ergodic_weights : {"uniform", "linear"} or array-like
        See :func:`output_weights`.
    penalty : penalty object
        See :mod:`._penalties`.  A reweighted penalty runs ``n_stages``
        majorize-minimize stages, each from ``x = x~``; stage ``s > 1``
        takes its weights from ``K_s x^(s-1)`` (and, for a blended penalty,
        centres its data term between ``x~`` and ``x^(s-1)``).
    steps : step rule
        See :mod:`._steps`.
    operator : callable
        ``operator(K)`` builds the operator (``DenseOperator``, or a
        ``functools.partial`` of ``ConvolutionalOperator``); it must be
        picklable for process workers.
    n_stages : int
    per_stage : bool
        Whether every stage has its own parameters (leading stage axis).
    refinement : Refinement or None
        Reaction-diffusion steps applied to the last stage's output (see
        :mod:`._refinement`), with the same operator factory.
    """

    n_layers: int
    unroll: str = "last"
    ergodic_weights: Any = "uniform"
    penalty: Any = field(default_factory=L1)
    steps: Any = field(default_factory=ScaledSteps)
    operator: Callable = DenseOperator
    n_stages: int = 1
    per_stage: bool = False
    refinement: Any = None

    def __post_init__(self):
        if self.unroll == "implicit":
            check_implicit_penalty(self.penalty)
            if self.refinement is not None:
                raise ValueError("unroll='implicit' takes no refinement steps.")
            alpha = None
        else:
            alpha = output_weights(self.n_layers, self.unroll, self.ergodic_weights)
        if self.n_stages > 1 and not self.penalty.reweighted:
            raise ValueError(
                "Stages run from x~ and only a reweighted penalty couples them: "
                f"n_stages={self.n_stages} needs a penalty such as 'log'."
            )
        object.__setattr__(self, "alpha", alpha)

    @property
    def param_names(self):
        return ("K", *self.stage_param_names[1:], *self._refine_names)

    @property
    def stage_param_names(self):
        """The parameters of the unrolled stages: ``K`` and the penalty's."""
        return ("K", *self.penalty.param_names)

    @property
    def _refine_names(self):
        return () if self.refinement is None else self.refinement.param_names

    # -- parameters --------------------------------------------------------
    def check_params(self, params):
        """Raise ``ValueError`` unless ``params`` fit this map."""
        if set(params) != set(self.param_names):
            raise ValueError(
                f"params must hold {self.param_names}, got {tuple(params)}."
            )
        lead = (self.n_stages,) if self.per_stage else ()
        K = params["K"]
        if np.ndim(K) != len(lead) + 2 or np.shape(K)[: len(lead)] != lead:
            raise ValueError(
                f"K must have shape {(*lead, 'm', 'n')}, got {np.shape(K)}."
            )
        rows = (*lead, np.shape(K)[-2])
        for name in self.penalty.param_names:
            self.penalty.check_param(name, params[name], rows)
        if self.refinement is not None:
            self.refinement.check_params(params, np.shape(K)[-1])

    def refine_params(self, params):
        """The refinement steps' parameters of ``params`` (None without)."""
        if self.refinement is None:
            return None
        return {name: params[name] for name in self.refinement.param_names}

    def stages(self, params):
        """Every stage's :class:`Stage` (the steps from its operator's norm)."""
        self.check_params(params)
        n_distinct = self.n_stages if self.per_stage else 1
        stages = []
        for s in range(n_distinct):
            K = params["K"][s] if self.per_stage else params["K"]
            with one_blas_thread():
                norm, norm_grad = self.operator(K).norm_and_grad()
            steps = self.steps.schedule(norm, self.n_layers, K.dtype)
            theta = {
                name: params[name][s] if self.per_stage else params[name]
                for name in self.penalty.param_names
            }
            stages.append(Stage(K, theta, steps, norm, norm_grad))
        return stages * (self.n_stages // n_distinct)

    # -- one chunk, in this process ----------------------------------------
    def forward(self, stages, X, *, record=False, refine=None):
        """Output for the rows ``X`` and, with ``record``, every stage's tape.

        With ``refine`` (:meth:`refine_params`) the refinement steps follow,
        their inputs the last tape.
        """
        x, tapes = None, []
        for s, stage in enumerate(stages):
            op = self.operator(stage.K)
            penalty, z, w = self.penalty, None, None
            if self.penalty.reweighted:
                centre = ()
                if s:
                    z = op.apply(x)
                    params = _cast(stage.params, X.dtype)
                    # A penalty that computes in float64 must not make the
                    # float32 solver mix precisions (its buffers are float32).
                    w, t = self.penalty.stage_terms(
                        z, params, n_threads=getattr(op, "n_threads", 1)
                    )
                    w = w.astype(X.dtype, copy=False)
                    if t is not None:
                        centre = (t.astype(X.dtype, copy=False),)
                penalty = self.penalty.stage_penalty(w, *centre)
            x_in, data = x, self._stage_data(s, stage, X, x)
            x, tape = forward(op, data, stage.steps, penalty, self.alpha, record=record)
            if record:
                tapes.append((x_in, data, z, w, penalty, tape))
        if refine is not None:
            x, inputs = self.refinement.forward(
                self.operator, refine, x, X, record=record
            )
            tapes.append(inputs)
        return x, tapes

    def _stage_data(self, s, stage, X, x):
        """The point stage ``s`` (0-based) stays close to: ``x~``, or for a
        blended penalty ``x~ + blend (x^(s-1) - x~)`` after the first."""
        if not (s and self.penalty.blended):
            return X
        data = x - X
        data *= float(stage.params["blend"])
        data += X
        return data

    def backward(self, stages, X, tapes, g, *, on_layer=None, refine=None):
        """Gradients of ``<g, output>`` per stage, at fixed steps.

        Returns a list (per stage) of ``(grads, sigma_sens, tau_sens)``,
        ``grads`` a dict of the stage's parameters, and the refinement steps'
        gradients (None without ``refine``, the parameters that
        :meth:`forward` had); ``on_layer`` is passed to
        :func:`~sklearn_ergo._chambolle_pock.backward`.
        """
        refine_grads = None
        if refine is not None:
            g, refine_grads = self.refinement.backward(
                self.operator, refine, X, tapes[-1], g
            )
        out = [None] * len(stages)
        for s in reversed(range(len(stages))):
            stage = stages[s]
            x_in, data, z, w, penalty, tape = tapes[s]
            op = self.operator(stage.K)
            bound_grad = None if w is None else np.zeros_like(w)
            shift_grad = None
            if w is not None and self.penalty.shifted:
                shift_grad = np.zeros_like(w)
            # A blended stage's data depends on x^(s-1): the output holds it
            # once (g) and every dual step once more (added by backward).
            data_grad = g.copy() if s and self.penalty.blended else None
            grad_D, grad_P, sigma_sens, tau_sens = backward(
                op,
                data,
                tape,
                stage.steps,
                penalty,
                self.alpha,
                g,
                on_layer=on_layer,
                bound_grad=bound_grad,
                shift_grad=shift_grad,
                data_grad=data_grad,
            )
            grad_D -= grad_P
            grads = {"K": grad_D}
            grads.update(
                (name, np.zeros_like(value, dtype=X.dtype))
                for name, value in stage.params.items()
            )
            if w is not None:
                # The weights of stage s pass the adjoint of its box bounds
                # on to K_s, the penalty's parameters and the stage before.
                params = _cast(stage.params, X.dtype)
                d_z, d_params = self.penalty.weights_vjp(z, w, params, bound_grad)
                d_z = d_z.astype(X.dtype, copy=False)
                grads.update(d_params)
                if shift_grad is not None:
                    d_zt, d_params = self.penalty.targets_vjp(z, params, shift_grad)
                    d_z += d_zt
                    for name, value in d_params.items():
                        grads[name] = grads[name] + value
                grads["K"] += op.weight_grad(d_z, x_in)
                g = op.adjoint(d_z)
            if data_grad is not None:
                blend = float(stage.params["blend"])
                grads["blend"] = np.asarray(np.vdot(data_grad, x_in - X), dtype=X.dtype)
                g += blend * data_grad
            out[s] = (grads, sigma_sens, tau_sens)
        return out, refine_grads

    def _threads_per_chunk(self, n_chunks, n_jobs):
        """This map, its operator given the workers that the chunks leave idle.

        With fewer chunks than workers (one large image), an operator that
        takes ``n_threads`` (the convolutional one: threads over tiles)
        gets ``workers // n_chunks`` of them, so that one image uses every
        core; others run as they are.
        """
        threads = workers(n_jobs)[0] // max(n_chunks, 1)
        if threads <= 1:
            return self
        if "n_threads" not in inspect.signature(self.operator).parameters:
            return self
        operator = functools.partial(self.operator, n_threads=threads)
        return dataclasses.replace(self, operator=operator)

    def _plan(self, params, X, n_jobs, chunk_size, record):
        """The stages, the chunks of the rows of ``X`` and the map that runs them.

        With ``record`` a chunk holds every stage's tape and is sized to the
        tape budget; without, it holds about three layers' iterates per row,
        kept in cache.
        """
        stages = self.stages(params)
        op = self.operator(stages[0].K)
        per_row = (op.n_primal + op.n_dual) * X.itemsize
        if record:
            per_row *= self.n_stages * (self.n_layers + 1)
            if self.refinement is not None:  # every step's input
                per_row += self.refinement.n_steps * op.n_primal * X.itemsize
        slices = chunk_slices(
            len(X),
            per_row if record else 3 * per_row,
            n_jobs,
            chunk_size,
            budget=TAPE_BYTES if record else FORWARD_BYTES,
            sample_size=op.n_primal,
        )
        return stages, slices, self._threads_per_chunk(len(slices), n_jobs)

    # -- whole batches -----------------------------------------------------
    def loss_grad(
        self,
        params,
        X_noisy,
        X_clean,
        *,
        loss_weights=None,
        n_jobs=None,
        chunk_size=None,
        stages_fixed=False,
    ):
        """Loss ``(1 / N) sum_i ||x^_i - x_i||^2 / 2`` and its exact gradients.

        ``X_noisy``, ``X_clean`` are validated 2-D arrays of one dtype, one
        sample per row.  ``loss_weights`` (shape ``(n_features,)``, default
        all ones) weighs each feature's squared error: images padded for the
        convolution score only the pixels that the denoiser returns.
        Returns ``(loss, grads)``, ``grads`` shaped like ``params``; the
        dependence of the steps on ``K`` is included.  With ``stages_fixed``
        only the refinement steps get gradients (the stages' are zero): the
        stages run forward only, without a tape, at about a third of the cost.
        """
        if stages_fixed and self.refinement is None:
            raise ValueError("stages_fixed=True needs refinement steps to learn.")
        if loss_weights is not None:
            loss_weights = np.asarray(loss_weights, dtype=X_noisy.dtype)
            if loss_weights.shape != X_noisy.shape[1:] or np.any(loss_weights < 0):
                raise ValueError(
                    f"loss_weights must hold {X_noisy.shape[1]} non-negative "
                    f"numbers, got shape {loss_weights.shape}."
                )
        if self.unroll == "implicit":
            if loss_weights is not None:
                raise ValueError("unroll='implicit' does not take loss_weights.")
            loss, grad = implicit_loss_grad(
                params["K"],
                X_noisy,
                X_clean,
                self.penalty,
                n_jobs=n_jobs,
                chunk_size=chunk_size,
            )
            return loss, {"K": grad}
        stages, slices, umap = self._plan(
            params, X_noisy, n_jobs, chunk_size, not stages_fixed
        )
        refine = self.refine_params(params)
        results = map_chunks(
            _chunk_refine_loss_grad if stages_fixed else _chunk_loss_grad,
            slices,
            n_jobs,
            umap,
            stages,
            refine,
            X_noisy,
            X_clean,
            loss_weights,
        )
        if stages_fixed:
            grads = {
                name: np.zeros_like(params[name]) for name in self.stage_param_names
            }
            grads.update(_refine_grads(results, params))
            return sum(r[0] for r in results), grads
        loss = sum(r[0] for r in results)
        names = self.stage_param_names
        per_stage = [
            (
                {name: sum(r[1][s][0][name] for r in results) for name in names},
                sum(r[1][s][1] for r in results),
                sum(r[1][s][2] for r in results),
            )
            for s in range(self.n_stages)
        ]
        if not self.per_stage:
            # Shared parameters: the stages' gradients add up, and the steps
            # of every stage come from the one norm.
            per_stage = [
                (
                    {name: sum(p[0][name] for p in per_stage) for name in names},
                    sum(p[1] for p in per_stage),
                    sum(p[2] for p in per_stage),
                )
            ]
        for (grads, sigma_sens, tau_sens), stage in zip(
            per_stage, stages, strict=False
        ):
            add_step_rule_grad(
                grads["K"],
                stage.steps,
                stage.norm,
                stage.norm_grad,
                sigma_sens,
                tau_sens,
            )
        grads = {
            name: np.stack([p[0][name] for p in per_stage])
            if self.per_stage
            else per_stage[0][0][name]
            for name in names
        }
        grads.update(_refine_grads(results, params))
        return loss, {
            name: g.astype(np.asarray(params[name]).dtype, copy=False)
            for name, g in grads.items()
        }

    def apply(self, params, X_noisy, *, n_jobs=None, chunk_size=None):
        """The map's output for every row of ``X_noisy`` (validated, 2-D)."""
        if self.unroll == "implicit":
            return implicit_denoise(
                params["K"], X_noisy, self.penalty, n_jobs=n_jobs, chunk_size=chunk_size
            )
        stages, slices, umap = self._plan(params, X_noisy, n_jobs, chunk_size, False)
        refine = self.refine_params(params)
        parts = map_chunks(_chunk_apply, slices, n_jobs, umap, stages, refine, X_noisy)
        return np.concatenate(parts) if parts else np.empty_like(X_noisy)


def _cast(params, dtype):
    """A stage's penalty parameters in the dtype of the samples."""
    return {name: np.asarray(value, dtype=dtype) for name, value in params.items()}


def _loss_and_output_grad(X_hat, X_clean, loss_weights, n_total):
    residual = X_hat - X_clean
    g = residual if loss_weights is None else residual * loss_weights
    loss = 0.5 * float(np.vdot(g, residual)) / n_total
    g /= n_total
    return loss, g


def _chunk_loss_grad(umap, stages, refine, X_noisy, X_clean, loss_weights, rows):
    X = X_noisy[rows]
    X_hat, tapes = umap.forward(stages, X, record=True, refine=refine)
    loss, g = _loss_and_output_grad(X_hat, X_clean[rows], loss_weights, len(X_noisy))
    per_stage, refine_grads = umap.backward(stages, X, tapes, g, refine=refine)
    return loss, per_stage, refine_grads


def _chunk_refine_loss_grad(umap, stages, refine, X_noisy, X_clean, loss_weights, rows):
    """The loss and the refinement steps' gradients, the stages run forward."""
    X = X_noisy[rows]
    x = umap.forward(stages, X)[0]
    steps = umap.refinement
    X_hat, inputs = steps.forward(umap.operator, refine, x, X, record=True)
    loss, g = _loss_and_output_grad(X_hat, X_clean[rows], loss_weights, len(X_noisy))
    return loss, None, steps.backward(umap.operator, refine, X, inputs, g)[1]


def _refine_grads(results, params):
    """The refinement steps' gradients, summed over the chunks' ``results``."""
    if not results or results[0][2] is None:
        return {}
    return {
        name: sum(r[2][name] for r in results).astype(params[name].dtype, copy=False)
        for name in results[0][2]
    }


def _chunk_apply(umap, stages, refine, X_noisy, rows):
    return umap.forward(stages, X_noisy[rows], refine=refine)[0]
