"""
==========================================================
Unrolling the last iterate versus ergodic averages
==========================================================

The analysis operator ``K`` is learned through ``L`` unrolled Chambolle-Pock
iterations whose output is either the last iterate (``unroll="last"``) or an
ergodic average of all iterates (``unroll="ergodic"``, uniform weights, or
``ergodic_weights="linear"``, ``alpha_l ∝ l``).  The hypothesis behind the
ergodic mode is that the backward signal of the last iterate vanishes in the
early layers as ``L`` grows (``docs/math.md``, section 10), so that
training stalls, while the average injects the output gradient into every
layer.  This example measures, on 8x8 natural-image patches with Gaussian
noise of standard deviation 0.1 on ``[0, 1]``, for a finite-difference (TV)
and a small random initial operator:

1. the training loss against L-BFGS iterations for several ``L``, one panel
   per unroll mode;
2. the final training and held-out loss against ``L``;
3. the per-layer norms of the adjoint variables, ``||delta_P^[l]||`` and
   ``||delta_D^[l]||``, for the largest ``L`` of the first figure, computed
   with :func:`sklearn_ergo.diagnostics.backprop_profile`;
4. how the unrolled gradients approach the true bilevel gradient
   (``unroll="implicit"``, Huber penalty) as ``L`` grows, and how the
   ``l1`` gradient behaves.

Training patches come from ``china.jpg``, held-out ones from ``flower.jpg``
(both ship with scikit-learn).  Losses are ``(1/N) sum_i ||x^_i - x_i||^2 / 2``
in image units (the noisy input scores about 0.32).

Run as a script (figures, ``results.json``, ``tables.md`` and the trained
operators, ``operators.npz``, are written to ``--out``)::

    python examples/plot_ergodic_vs_last.py --out ergodic_figures  # 3.5 min
    python examples/plot_ergodic_vs_last.py --quick --out /tmp/q     # 10-20 s (CI)
    python benchmarks/ergodic_study.py --out docs/ergodic            # 12 min
    python examples/plot_ergodic_vs_last.py --replot docs/ergodic/results.json

(wall-clock times measured on a 2-core machine shared with other jobs).

Requires matplotlib (``pip install "sklearn-ergo[examples]"``).
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from sklearn_ergo import AnalysisOperatorLearner, unrolled_loss_grad  # noqa: E402
from sklearn_ergo.datasets import make_noisy_patches  # noqa: E402
from sklearn_ergo.diagnostics import (  # noqa: E402
    backprop_profile,
    estimator_backprop_profile,
)

# %%
# Settings
# --------
# ``default`` runs in a few minutes on 2 cores; ``quick`` is the smoke test
# CI runs; ``study`` produced the numbers of ``docs/ergodic.md``.
MODES = {
    "last": dict(unroll="last"),
    "ergodic": dict(unroll="ergodic"),
    "ergodic-linear": dict(unroll="ergodic", ergodic_weights="linear"),
    # L = infinity: the exact lower-level solution (Huber only); fitted once.
    "implicit": dict(unroll="implicit"),
}
# Initial operators: finite differences (TV) and a square (m = n = 64)
# zero-mean random operator; the estimator tunes the scalar weight of both.
TV = dict(init="tv")
RANDOM = dict(init="random", n_components=64)
ALL_L = (5, 10, 20, 50, 100, 200)
# Learned operators have no exact kernel but a near one (rows that nearly sum
# to zero leave the constants with a singular value ~1e-3 of the largest):
# singular values below 1% of the largest count as kernel for the shares.
KERNEL_RTOL = 1e-2
PRESETS = {
    "quick": dict(
        n_train=200,
        n_test=200,
        settings={
            "tv": (TV, (5, 20), ("last", "ergodic", "ergodic-linear"), 3),
            "random": (RANDOM, (5, 20), ("last", "ergodic"), 3),
            "tv-huber": (dict(TV, penalty="huber"), (5,), ("last", "implicit"), 2),
        },
        grad_layers=(5, 20, 100, 400),
        grad_samples=100,
    ),
    "default": dict(
        n_train=800,
        n_test=1000,
        settings={
            "tv": (TV, ALL_L, ("last", "ergodic"), 12),
            "random": (RANDOM, ALL_L, ("last", "ergodic"), 12),
        },
        grad_layers=(5, 10, 20, 50, 100, 200, 500, 1000, 2000),
        grad_samples=200,
    ),
    "study": dict(
        n_train=1000,
        n_test=2000,
        settings={
            "tv": (TV, ALL_L, ("last", "ergodic", "ergodic-linear"), 30),
            "random": (RANDOM, ALL_L, ("last", "ergodic", "ergodic-linear"), 30),
            "tv-huber": (
                dict(TV, penalty="huber"),
                (5, 20, 100),
                ("last", "ergodic", "implicit"),
                30,
            ),
            "random-long": (RANDOM, (20, 200), ("last", "ergodic"), 90),
        },
        grad_layers=(5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000),
        grad_samples=200,
    ),
}
"""Per setting: (estimator parameters, values of L, unroll modes, L-BFGS
iterations)."""


def half_sq_loss(X_hat, X_clean):
    return 0.5 * float(np.mean(np.sum((X_hat - X_clean) ** 2, axis=1)))


# %%
# Training
# --------
def train_all(data, cfg, log, n_jobs=None):
    """Fit every (setting, mode, L); return the results and the estimators."""
    X_train, Y_train, X_test, Y_test = data
    results, estimators = {}, {}
    for setting, (params, layers, modes, max_iter) in cfg["settings"].items():
        for mode in modes:
            for L in layers:
                if mode == "implicit" and L != layers[0]:
                    # L plays no role: reuse the one fit.
                    results[setting][mode][L] = results[setting][mode][layers[0]]
                    continue
                est = AnalysisOperatorLearner(
                    n_layers=L,
                    max_iter=max_iter,
                    tol=0.0,  # run the whole budget: curves of equal length
                    random_state=0,
                    n_jobs=n_jobs,
                    **params,
                    **MODES[mode],
                )
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    est.fit(X_train, Y_train)
                seconds = time.perf_counter() - start
                res = dict(
                    curve=[v * est.scale_**2 for v in est.loss_curve_],
                    train=half_sq_loss(est.predict(X_train), Y_train),
                    test=half_sq_loss(est.predict(X_test), Y_test),
                    seconds=seconds,
                )
                results.setdefault(setting, {}).setdefault(mode, {})[L] = res
                estimators[setting, mode, L] = est
                log(
                    f"{setting:11s} {mode:14s} L={L:4d}: train {res['curve'][0]:.4f}"
                    f" -> {res['train']:.4f}, held-out {res['test']:.4f} "
                    f"({seconds:.0f} s)"
                )
    return results, estimators


# %%
# Per-layer backward profiles
# ---------------------------
def profile_layers(cfg):
    layers = cfg["settings"]["tv"][1]
    return 100 if 100 in layers else max(layers)


def profiles(estimators, data, cfg):
    """Backward profiles at L = 100, on (up to) 1000 training pairs.

    ``"trained"``: each mode at the operator it trained; ``"shared"``: every
    mode at the operator trained in last mode, which isolates the effect of
    the output rule.
    """
    X_train, Y_train = data[0][:1000], data[1][:1000]
    L = profile_layers(cfg)
    out = {}
    for setting in ("tv", "random"):
        modes = cfg["settings"][setting][2]
        shared = estimators[setting, "last", L]
        for mode in modes:
            est = estimators[setting, mode, L]
            prof = estimator_backprop_profile(
                est, X_train, Y_train, kernel_rtol=KERNEL_RTOL
            )
            out["trained", setting, mode] = {k: v.tolist() for k, v in prof.items()}
            prof = backprop_profile(
                shared.components_,
                X_train / shared.scale_,
                Y_train / shared.scale_,
                n_layers=L,
                kernel_rtol=KERNEL_RTOL,
                **MODES[mode],
            )
            out["shared", setting, mode] = {k: v.tolist() for k, v in prof.items()}
    return out


def decay_ratio(prof, key):
    """``||delta^[1]|| / ||delta^[L]||``."""
    values = prof[key]
    return values[0] / values[-1]


# %%
# Unrolled versus implicit gradients
# ----------------------------------
def gradient_study(data, cfg, estimators):
    """Relative error and cosine of unrolled gradients against the true one.

    At the TV operator trained in last mode with L = 20 (a realistic
    operator): with ``penalty="huber"`` the reference is the implicit
    gradient; with ``penalty="l1"`` there is none, so each gradient is
    compared with the one at the largest L.
    """
    X, Y = data[0][: cfg["grad_samples"]], data[1][: cfg["grad_samples"]]
    est = estimators["tv", "last", 20]
    modes = {m: MODES[m] for m in cfg["settings"]["tv"][2]}
    K, X, Y = est.components_, X / est.scale_, Y / est.scale_
    out = {}
    for penalty in ("huber", "l1"):
        kw = dict(penalty=penalty, huber_eps=0.01)
        if penalty == "huber":
            ref = unrolled_loss_grad(K, X, Y, n_layers=1, unroll="implicit", **kw)[1]
        grads = {
            mode: [
                unrolled_loss_grad(K, X, Y, n_layers=L, **params, **kw)[1]
                for L in cfg["grad_layers"]
            ]
            for mode, params in modes.items()
        }
        for mode, gs in grads.items():
            r = ref if penalty == "huber" else gs[-1]
            out[penalty, mode] = dict(
                rel_err=[float(np.linalg.norm(g - r) / np.linalg.norm(r)) for g in gs],
                cosine=[
                    float(np.vdot(g, r) / (np.linalg.norm(g) * np.linalg.norm(r)))
                    for g in gs
                ],
            )
    return out


# %%
# Figures
# -------
def plot_curves(results, setting, path):
    modes = list(results[setting])
    fig, axes = plt.subplots(1, len(modes), figsize=(3.3 * len(modes), 3), sharey=True)
    for ax, mode in zip(np.atleast_1d(axes), modes, strict=True):
        for L, res in results[setting][mode].items():
            ax.plot(res["curve"], label=f"L={L}")
            if mode == "implicit":  # the same fit for every L
                break
        ax.set(title=mode, xlabel="L-BFGS iteration", yscale="log")
    np.atleast_1d(axes)[0].set_ylabel("training loss")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(f"training, setting {setting!r}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_final(results, setting, path):
    fig, axes = plt.subplots(1, 2, figsize=(6.6, 3), sharey=True)
    for mode, by_L in results[setting].items():
        Ls = list(by_L)
        for ax, key in zip(axes, ("train", "test"), strict=True):
            ax.plot(Ls, [by_L[L][key] for L in Ls], "o-", label=mode)
    for ax, title in zip(axes, ("training", "held-out (flower)"), strict=True):
        ax.set(xscale="log", xlabel="L", title=title)
    axes[0].set_ylabel("final loss")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"final losses, setting {setting!r}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_profiles(profs, init, path):
    fig, axes = plt.subplots(1, 3, figsize=(9.9, 3))
    for (kind, i, mode), prof in profs.items():
        if kind != "trained" or i != init:
            continue
        layers = np.arange(1, len(prof["delta_P_norm"]) + 1)
        (line,) = axes[0].plot(layers, prof["delta_P_norm"], label=mode)
        color = line.get_color()
        axes[0].plot(layers, prof["delta_D_norm"], "--", color=color)
        axes[1].plot(layers, prof["delta_P_range_share"], color=color, label=mode)
        axes[1].plot(layers, prof["delta_D_range_share"], "--", color=color)
        axes[2].plot(layers, prof["grad_contribution"], color=color)
    axes[0].set(yscale="log", xlabel="layer l", title="‖δ_P‖ (solid), ‖δ_D‖ (dashed)")
    axes[1].set(
        xlabel="layer l",
        title="share outside ker K (δ_P), ker Kᵀ (δ_D)",
        ylim=(0, 1.05),
    )
    axes[2].set(yscale="log", xlabel="layer l", title="‖layer l's term of ∇_K‖")
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"backward profile at L = {len(layers)}, trained operators, {init} init",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_gradients(grads, layers, path):
    fig, axes = plt.subplots(1, 3, figsize=(9.9, 3))
    for (penalty, mode), res in grads.items():
        style = "-" if penalty == "huber" else ":"
        label = f"{mode}, {penalty}"
        if penalty == "huber":
            axes[0].loglog(layers, res["rel_err"], "o" + style, label=label)
            axes[1].semilogx(layers, res["cosine"], "o" + style, label=label)
        else:
            axes[2].loglog(layers[:-1], res["rel_err"][:-1], "o" + style, label=label)
    axes[0].set(xlabel="L", title="huber: rel. error vs implicit")
    axes[1].set(xlabel="L", title="huber: cosine with implicit")
    axes[2].set(xlabel="L", title=f"l1: rel. distance to L={layers[-1]}")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# %%
# Tables
# ------
def tables(results, profs, grads, cfg):
    # The heading makes tables.md a page of the documentation site.
    lines = ["# Last iterate or ergodic average: the tables"]
    for setting, by_mode in results.items():
        params, _, _, max_iter = cfg["settings"][setting]
        lines += [
            f"\nFinal losses (train / held-out, and L-BFGS iterations run out of "
            f"{max_iter}), setting {setting!r}: {params}:\n",
            "| L | " + " | ".join(by_mode) + " |",
            "|---" * (len(by_mode) + 1) + "|",
        ]
        for L in next(iter(by_mode.values())):
            cells = [
                f"{r[L]['train']:.4f} / {r[L]['test']:.4f} ({len(r[L]['curve']) - 1})"
                for r in by_mode.values()
            ]
            lines.append(f"| {L} | " + " | ".join(cells) + " |")
    lines += [
        f"\nDecay ratios at L = {profile_layers(cfg)} (operator: trained in that "
        "mode, or shared = trained in last mode; kernels: singular values below "
        f"{KERNEL_RTOL:g} times the largest):\n",
        "| operator | init | mode | ‖δ_P^[1]‖/‖δ_P^[L]‖ | ‖δ_D^[1]‖/‖δ_D^[L]‖ "
        "| δ_P share outside ker K, layer 1 / L "
        "| δ_D share outside ker Kᵀ, layer 1 / L "
        "| ‖∇_K term‖, layer 1 / L |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (kind, init, mode), prof in profs.items():
        share, dshare = prof["delta_P_range_share"], prof["delta_D_range_share"]
        lines.append(
            f"| {kind} | {init} | {mode} | {decay_ratio(prof, 'delta_P_norm'):.3g} "
            f"| {decay_ratio(prof, 'delta_D_norm'):.3g} "
            f"| {share[0]:.3f} / {share[-1]:.3f} "
            f"| {dshare[0]:.3f} / {dshare[-1]:.3f} "
            f"| {decay_ratio(prof, 'grad_contribution'):.3g} |"
        )
    layers = cfg["grad_layers"]
    lines += [
        "\nUnrolled gradient against the reference (rel. error; cosine):\n",
        "| penalty, mode | " + " | ".join(f"L={L}" for L in layers) + " |",
        "|---" * (len(layers) + 1) + "|",
    ]
    for (penalty, mode), res in grads.items():
        cells = [
            f"{e:.2g}; {c:.3f}"
            for e, c in zip(res["rel_err"], res["cosine"], strict=True)
        ]
        lines.append(f"| {penalty}, {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(out, cfg, results, profs, grads):
    (out / "results.json").write_text(
        json.dumps(
            dict(
                config=cfg,
                results={
                    i: {m: {str(L): r for L, r in d.items()} for m, d in v.items()}
                    for i, v in results.items()
                },
                profiles={"/".join(k): p for k, p in profs.items()},
                gradients={"/".join(k): g for k, g in grads.items()},
            )
        )
    )


def load(path):
    saved = json.loads(Path(path).read_text())
    results = {
        i: {m: {int(L): r for L, r in d.items()} for m, d in v.items()}
        for i, v in saved["results"].items()
    }
    profs = {tuple(k.split("/")): p for k, p in saved["profiles"].items()}
    grads = {tuple(k.split("/")): g for k, g in saved["gradients"].items()}
    return saved["config"], results, profs, grads


def report(out, cfg, results, profs, grads):
    """Write the figures and ``tables.md``; print the tables."""
    for setting in results:
        plot_curves(results, setting, out / f"ergodic_curves_{setting}.png")
        plot_final(results, setting, out / f"ergodic_final_{setting}.png")
    for setting in ("tv", "random"):
        plot_profiles(profs, setting, out / f"ergodic_profile_{setting}.png")
    plot_gradients(grads, cfg["grad_layers"], out / "ergodic_gradients.png")
    table = tables(results, profs, grads, cfg)
    print(table)
    (out / "tables.md").write_text(table + "\n")


def main(argv=None):
    # sphinx-gallery runs the example with an empty __doc__.
    title = __doc__.split("\n\n")[1] if __doc__ else None
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--out", default="ergodic_figures", help="output folder")
    parser.add_argument("--preset", choices=PRESETS, default="default")
    parser.add_argument("--quick", action="store_true", help="--preset quick")
    parser.add_argument("--n-jobs", type=int, default=None, help="joblib workers")
    parser.add_argument(
        "--replot", metavar="RESULTS_JSON", help="only redraw from a results.json"
    )
    args, _ = parser.parse_known_args(argv)  # sphinx-gallery passes its own
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        report(out, *load(args.replot))
        return
    cfg = PRESETS["quick" if args.quick else args.preset]
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    X_train, Y_train = make_noisy_patches("china.jpg", cfg["n_train"], random_state=0)
    X_test, Y_test = make_noisy_patches("flower.jpg", cfg["n_test"], random_state=1)
    data = (X_train, Y_train, X_test, Y_test)
    log(f"noisy input loss: train {half_sq_loss(X_train, Y_train):.4f}")

    results, estimators = train_all(data, cfg, log, args.n_jobs)
    profs = profiles(estimators, data, cfg)
    log("profiles done")
    grads = gradient_study(data, cfg, estimators)
    log("gradient study done")
    save(out, cfg, results, profs, grads)
    np.savez_compressed(
        out / "operators.npz",
        **{"/".join(map(str, k)): e.components_ for k, e in estimators.items()},
    )
    report(out, cfg, results, profs, grads)
    log(f"figures, results.json and tables.md written to {out}")


if __name__ == "__main__":
    main()
