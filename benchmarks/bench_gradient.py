"""One gradient evaluation: sklearn-ergo's exact backward pass vs PyTorch autograd.

Both sides compute the loss ``(1/N) sum_i ||x^_i - x_i||^2 / 2`` of the same
unrolled Chambolle-Pock map and its gradient with respect to ``K``:
``unrolled_loss_grad`` (hand-written backward pass) and the same iteration
written in PyTorch the way a user would, differentiated by autograd.  By
default both use the default step rule ``sigma = tau = 0.99 / ||K||_2`` and
differentiate through it (PyTorch through ``torch.linalg.matrix_norm(K, 2)``,
its SVD); ``--steps fixed`` uses the same constant steps in both instead.

For every configuration the script first checks that the two implementations
agree (loss and gradient), then times them interleaved (same process, same
number of cores: ``--threads T`` gives PyTorch T threads and sklearn-ergo
``n_jobs=T`` workers with one BLAS thread each, or with ``--default-n-jobs``
its default ``n_jobs=None`` (every core, in threads: matched when T is the
number of cores); the GEMM reference runs with T
BLAS threads; default 1), together with a plain NumPy GEMM
that gives the machine's attainable rate, and reports best-of-k and median
times, the achieved GFLOP/s of a gradient evaluation (``12 m n L`` flops per
sample) against that GEMM (and PyTorch's own GEMM rate, whose BLAS differs),
and the peak memory of one evaluation.

Run ``python benchmarks/bench_gradient.py`` for the issue's target
configurations, ``--quick`` for a smoke run (< 60 s), ``--full`` for the whole
grid, or pick a subset: ``--N 4096 --L 50 --shape 64x64 --dtype float32``.
PyTorch is optional (``pip install sklearn-ergo[pytorch]``); without it (or with
``--no-torch``) only the NumPy side and the GEMM reference are timed.
"""

import argparse
import itertools
import sys

import numpy as np
from _common import best_and_median, machine, markdown_table, peak_memory_mib, timed
from threadpoolctl import threadpool_info, threadpool_limits

from sklearn_ergo import unrolled_loss_grad
from sklearn_ergo._steps import STEP_FACTOR
from sklearn_ergo._unrolled_map import output_weights

PRESETS = {
    # the configurations of the targets
    "targets": [
        (4096, 50, (64, 64), dt, unroll)
        for dt in ("float64", "float32")
        for unroll in ("last", "ergodic")
    ]
    + [(16384, 50, (112, 64), dt, "last") for dt in ("float64", "float32")],
    "quick": [
        (1024, 50, (64, 64), dt, unroll)
        for dt in ("float64", "float32")
        for unroll in ("last", "ergodic")
    ]
    + [(4096, 10, (112, 64), dt, "last") for dt in ("float64", "float32")],
}
GRID = {
    "N": [1024, 4096, 16384],
    "L": [10, 50, 200],
    "shape": ["64x64", "112x64", "256x144"],
    "dtype": ["float64", "float32"],
    "unroll": ["last", "ergodic"],
}
# loss and relative gradient differences accepted between the two sides
TOLERANCE = {"float64": 1e-9, "float32": 2e-3}


def make_problem(N, m, n, dtype, seed=0):
    """Smooth-ish signals, noisy copies, and a random operator of moderate norm."""
    rng = np.random.default_rng(seed)
    X_clean = np.cumsum(rng.standard_normal((N, n)), axis=1) / np.sqrt(n)
    X_noisy = X_clean + 0.3 * rng.standard_normal((N, n))
    K = rng.standard_normal((m, n)) / np.sqrt(n)
    return (a.astype(dtype) for a in (K, X_noisy, X_clean))


def torch_loss_grad(torch, K, X_noisy, X_clean, n_layers, alpha, steps):
    """The unrolled map in PyTorch, differentiated by autograd."""
    K = torch.tensor(K, requires_grad=True)
    X = torch.from_numpy(X_noisy)
    N = X.shape[0]
    if steps is None:
        # default rule, differentiated through the SVD; the norm in float64
        # as on the NumPy side
        sigma = tau = STEP_FACTOR / torch.linalg.matrix_norm(K.double(), ord=2)
        sigma = tau = sigma.to(K.dtype)
    else:
        sigma, tau = steps
    r = torch.zeros_like(X)
    xbar = X
    y = torch.zeros(N, K.shape[0], dtype=X.dtype)
    out = torch.zeros_like(X) if alpha[-1] != 1.0 else None
    for l in range(n_layers):
        y = torch.clamp(y + sigma * (xbar @ K.T), -1.0, 1.0)
        r_new = (r - tau * (y @ K)) / (1.0 + tau)
        xbar = X + 2.0 * r_new - r
        r = r_new
        if out is not None:
            out = out + float(alpha[l]) * r
    residual = X + (r if out is None else out) - torch.from_numpy(X_clean)
    loss = 0.5 * (residual**2).sum() / N
    loss.backward()
    return loss.item(), K.grad.numpy()


def gemm_reference(dtype, size=1024, seed=1):
    """Two square matrices whose product gives the attainable GEMM rate."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((size, size)).astype(dtype) for _ in range(2)]


def run_config(N, L, shape, dtype, unroll, args, torch):
    m, n = shape
    K, X_noisy, X_clean = make_problem(N, m, n, dtype)
    alpha = output_weights(L, unroll)
    # the library's parallelism is n_jobs workers with one BLAS thread each
    n_jobs = None if args.default_n_jobs else args.threads
    kw = dict(n_layers=L, unroll=unroll, n_jobs=n_jobs)
    if args.chunk_size:
        kw.update(chunk_size=args.chunk_size)
    steps = None
    if args.steps == "fixed":
        from sklearn_ergo._operators import DenseOperator

        s = STEP_FACTOR / DenseOperator(K).norm_and_grad()[0]
        steps = (s, s)
        kw.update(sigma=s, tau=s)

    def ours():
        return unrolled_loss_grad(K, X_noisy, X_clean, **kw)

    def theirs():
        return torch_loss_grad(torch, K, X_noisy, X_clean, L, alpha, steps)

    A, B = gemm_reference(dtype)
    gemm_flops = 2.0 * len(A) ** 3
    use_torch = torch is not None
    torch_gib = N * L * (5 * n + 4 * m) * np.dtype(dtype).itemsize / 2**30
    if use_torch and torch_gib > args.torch_max_gib:
        print(f"  skip torch: its autograd tape needs ~{torch_gib:.1f} GiB")
        use_torch = False

    # agreement first
    loss, grad = ours()
    row = {"ours": [], "torch": [], "gemm": [], "torch_gemm": []}
    diff = ""
    if use_torch:
        t_loss, t_grad = theirs()
        d_loss = abs(loss - t_loss) / abs(t_loss)
        d_grad = np.linalg.norm(grad - t_grad) / np.linalg.norm(t_grad)
        diff = f"{max(d_loss, d_grad):.1e}"
        if not max(d_loss, d_grad) <= TOLERANCE[dtype]:
            raise AssertionError(
                f"implementations disagree: loss {d_loss:.2e}, gradient {d_grad:.2e}"
            )
    impls = [("ours", ours), ("gemm", lambda: A @ B)]
    if use_torch:
        # PyTorch's own BLAS (MKL in the x86 wheels) may outrun NumPy's
        A_t, B_t = torch.from_numpy(A), torch.from_numpy(B)
        impls += [("torch", theirs), ("torch_gemm", lambda: A_t @ B_t)]
    for rep in range(args.repeat):
        # alternate the order so that neither side always runs first
        for name, fn in impls if rep % 2 == 0 else impls[::-1]:
            row[name].append(timed(fn)[0])
    flops = 12.0 * m * n * L * N
    ours_best, ours_med = best_and_median(row["ours"])
    gemm_rate = gemm_flops / min(row["gemm"]) / 1e9
    rate = flops / ours_best / 1e9
    result = {
        "N": N,
        "L": L,
        "m x n": f"{m}x{n}",
        "dtype": dtype,
        "unroll": unroll,
        "ours best/med (s)": f"{ours_best:.3f} / {ours_med:.3f}",
        "torch best/med (s)": "-",
        "speed-up best (med)": "-",
        "ours GFLOP/s": f"{rate:.1f}",
        "GEMM GFLOP/s numpy / torch": f"{gemm_rate:.1f} / -",
        "% of GEMM": f"{100 * rate / gemm_rate:.0f}%",
        "peak MiB ours": "-",
        "peak MiB torch": "-",
        "max rel diff": diff or "-",
    }
    if use_torch:
        t_best, t_med = best_and_median(row["torch"])
        med_ratio = np.median(np.array(row["torch"]) / np.array(row["ours"]))
        result["torch best/med (s)"] = f"{t_best:.3f} / {t_med:.3f}"
        result["speed-up best (med)"] = f"{t_best / ours_best:.2f}x ({med_ratio:.2f}x)"
        t_gemm = gemm_flops / min(row["torch_gemm"]) / 1e9
        result["GEMM GFLOP/s numpy / torch"] = f"{gemm_rate:.1f} / {t_gemm:.1f}"
    if args.memory:
        mem = peak_memory_mib(ours, children=args.threads > 1)
        result["peak MiB ours"] = "-" if mem is None else f"{mem:.0f}"
        if use_torch:
            mem = peak_memory_mib(theirs)
            result["peak MiB torch"] = "-" if mem is None else f"{mem:.0f}"
    return result


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="smoke run (< 60 s)")
    preset.add_argument("--full", action="store_true", help="the whole grid")
    p.add_argument("--N", type=int, nargs="+", help=f"samples, grid {GRID['N']}")
    p.add_argument("--L", type=int, nargs="+", help=f"layers, grid {GRID['L']}")
    p.add_argument("--shape", nargs="+", help=f"m x n, grid {GRID['shape']}")
    p.add_argument("--dtype", nargs="+", choices=GRID["dtype"])
    p.add_argument("--unroll", nargs="+", choices=GRID["unroll"])
    p.add_argument("--steps", choices=["default", "fixed"], default="default")
    p.add_argument("--repeat", type=int, default=5, help="timed runs (best-of-k)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="PyTorch threads, and n_jobs of sklearn-ergo (one BLAS thread each)",
    )
    p.add_argument(
        "--default-n-jobs",
        action="store_true",
        help="sklearn-ergo with its default n_jobs=None (every core, in threads); "
        "matched threads when --threads is the number of cores",
    )
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--chunk-size", type=int, help="sklearn-ergo's chunk_size")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument(
        "--torch-max-gib",
        type=float,
        default=8.0,
        help="skip PyTorch where its autograd tape would exceed this",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = min(args.repeat, 3)
    return args


def configurations(args):
    axes = {k: getattr(args, k) for k in GRID}
    if args.full or any(axes.values()):
        axes = {k: v or GRID[k] for k, v in axes.items()}
        shapes = [tuple(int(x) for x in s.split("x")) for s in axes["shape"]]
        return list(
            itertools.product(
                axes["N"], axes["L"], shapes, axes["dtype"], axes["unroll"]
            )
        )
    return PRESETS["quick" if args.quick else "targets"]


def main(argv=None):
    args = parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print(
                "PyTorch not installed (pip install sklearn-ergo[pytorch]): NumPy only"
            )
    with threadpool_limits(args.threads):
        if torch is not None:
            torch.set_num_threads(args.threads)
        blas = {(d["internal_api"], d["num_threads"]) for d in threadpool_info()}
        n_jobs = "None (default)" if args.default_n_jobs else args.threads
        print(
            f"# {machine()}; threads = {args.threads}; sklearn-ergo n_jobs = "
            f"{n_jobs}; pools {sorted(blas)}"
        )
        print(
            f"# numpy {np.__version__}"
            + (f", torch {torch.__version__}" if torch is not None else "")
            + f"; steps: {args.steps}; best of {args.repeat}"
        )
        print(f"# command: python {' '.join(sys.argv)}")
        results = []
        for config in configurations(args):
            results.append(run_config(*config, args, torch))
            print("  " + ", ".join(f"{k}={v}" for k, v in results[-1].items()))
    print()
    print(markdown_table(list(results[0]), [list(r.values()) for r in results]))


if __name__ == "__main__":
    main()
