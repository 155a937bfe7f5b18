"""Step rules of the unrolled Chambolle-Pock denoiser, compared per layer.

On a 192x192 crop of scikit-image's ``camera`` with Gaussian noise 25/255 and
the anisotropic-TV operator ``w D`` (periodic 2x2 forward differences), the
PSNR after L layers for each step rule, with the weight ``w`` tuned per rule
and per L (all rules cost the same per layer):

- ``sigma = tau = 0.99 / ||K||`` (the core default);
- constant ``tau`` and ``sigma = 0.99^2 / (tau ||K||^2)``;
- accelerated (Chambolle & Pock 2011, Algorithm 2) from ``tau_0``.

    python benchmarks/bench_steps.py            # L in {10, 20, 30, 100}
    python benchmarks/bench_steps.py --quick    # L = 10 only

Needs scikit-image.
"""

import argparse

import numpy as np
from scipy.optimize import minimize_scalar

from sklearn_ergo._chambolle_pock import forward
from sklearn_ergo._convolutional import ConvolutionalOperator
from sklearn_ergo._init import tv_filters
from sklearn_ergo._penalties import L1
from sklearn_ergo._steps import AcceleratedSteps, constant_steps
from sklearn_ergo._unrolled_map import output_weights


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from skimage import data

    clean = data.camera()[150:342, 150:342] / 255.0
    noisy = clean + 25 / 255 * np.random.default_rng(0).standard_normal(clean.shape)
    D = tv_filters(2)
    pen = L1()
    rules = {"sigma = tau": lambda n, L: constant_steps(0.99 / n, 0.99 / n, L)}
    for tau in (0.02, 0.05, 0.2, 1.0):
        rules[f"tau = {tau}"] = lambda n, L, t=tau: constant_steps(
            0.99**2 / (t * n * n), t, L
        )
    for tau0 in (0.02, 0.1, 1.0, 5.0):
        rules[f"accelerated tau_0 = {tau0}"] = lambda n, L, t=tau0: AcceleratedSteps(
            t
        ).schedule(n, L, np.float64)

    def run(weight, L, rule):
        op = ConvolutionalOperator(weight * D, clean.shape, 2, "periodic")
        steps = rule(op.norm_and_grad()[0], L)
        out = forward(op, noisy.reshape(1, -1), steps, pen, output_weights(L, "last"))
        return 10 * np.log10(1 / np.mean((out[0].reshape(clean.shape) - clean) ** 2))

    print("| L | step rule | tuned weight | PSNR (dB) |\n|---|---|---|---|")
    for L in (10,) if args.quick else (10, 20, 30, 100):
        for name, rule in rules.items():
            res = minimize_scalar(
                lambda t, L=L, rule=rule: -run(np.exp(t), L, rule),
                bounds=(np.log(0.01), np.log(0.3)),
                method="bounded",
                options={"xatol": 1e-2},
            )
            print(
                f"| {L} | {name} | {np.exp(res.x):.4f} | {-res.fun:.2f} |", flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
