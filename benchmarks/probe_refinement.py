"""Probe: TNRD-like reaction-diffusion steps on top of the shipped model's output.

Not the package's method: a quick measurement, with PyTorch autograd, of
what learned influence functions could add to the shipped denoiser.  Each
step maps ``x`` to ``x - K^T phi(K x) - lam (x - x~)`` with zero-mean filters
``K`` (started from a 2-D DCT basis), one influence function ``phi`` per
filter (piecewise linear on a uniform grid, started at 0: the identity map)
and a learned ``lam``.  The steps are trained on the shipped model's outputs
for the first ``--n-train`` Train400 images (noise seed 7; whole images
denoised, then random crops with flips), and scored on Set12 (noise seed 0)
against the shipped model's own output.

    pip install ".[benchmarks,pytorch]"
    python benchmarks/probe_refinement.py --data DIR [--stages 1] [--steps 3000]
"""

import argparse
import pathlib
import time

import numpy as np
import scipy.fft

from sklearn_ergo._image_training import benchmark_noise
from sklearn_ergo._pretrained import pretrained_denoiser
from sklearn_ergo.datasets import load_image_folder

LO, HI, N_KNOTS = -0.6, 0.6, 63


def shipped_outputs(folder, n, seed, sigma):
    """``(clean, noisy, shipped model's output)`` of the first ``n`` images."""
    model = pretrained_denoiser(25)
    clean = load_image_folder(folder)[:n]
    noisy = benchmark_noise(clean, sigma, seed)
    outputs = [model.denoise(y, sigma=sigma) for y in noisy]
    return list(zip(clean, noisy, outputs, strict=True))


def dct_filters(n_filters, size):
    """The first ``n_filters`` non-constant 2-D DCT atoms, unit norm."""
    atoms = []
    for u in range(size):
        for v in range(size):
            if u or v:
                e = np.zeros((size, size))
                e[u, v] = 1.0
                atoms.append(scipy.fft.idctn(e, norm="ortho"))
    return np.array(atoms[:n_filters])


def make_stage(torch, n_filters, size):
    fn = torch.nn.functional
    r, h = size // 2, (HI - LO) / (N_KNOTS - 1)

    class Stage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            k = torch.tensor(dct_filters(n_filters, size), dtype=torch.float32)
            self.k = torch.nn.Parameter(k[:, None])
            self.table = torch.nn.Parameter(torch.zeros(n_filters, N_KNOTS))
            self.lam = torch.nn.Parameter(torch.zeros(()))

        def phi(self, z):
            t = ((z - LO) / h).clamp(0, N_KNOTS - 1 - 1e-4)
            i = t.floor().long()
            f = t - i
            base = (torch.arange(n_filters) * N_KNOTS).view(1, n_filters, 1, 1)
            flat = self.table.reshape(-1)
            return flat[base + i] * (1 - f) + flat[base + i + 1] * f

        def forward(self, x, noisy):
            k = self.k - self.k.mean(dim=(2, 3), keepdim=True)
            z = fn.conv2d(fn.pad(x, (r,) * 4, mode="reflect"), k)
            back = fn.conv_transpose2d(self.phi(z), k)[..., r:-r, r:-r]
            return x - back - self.lam * (x - noisy)

    return Stage()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="has train400/ and set12/")
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--stages", type=int, default=1)
    parser.add_argument("--n-filters", type=int, default=48)
    parser.add_argument("--size", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data, sigma = pathlib.Path(args.data), 25 / 255
    val = shipped_outputs(data / "set12", 12, 0, sigma)
    train = shipped_outputs(data / "train400", args.n_train, 7, sigma)
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    val = [tuple(map(as_t, t)) for t in val]
    train = [tuple(map(as_t, t)) for t in train]
    stages = torch.nn.ModuleList(
        [make_stage(torch, args.n_filters, args.size) for _ in range(args.stages)]
    )
    opt = torch.optim.Adam(stages.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    rng = np.random.default_rng(0)

    def batch(n=32, size=64):
        out = []
        for _ in range(n):
            c, y, o = train[rng.integers(len(train))]
            a = rng.integers(c.shape[0] - size + 1)
            b = rng.integers(c.shape[1] - size + 1)
            trip = [t[a : a + size, b : b + size] for t in (c, y, o)]
            if rng.random() < 0.5:
                trip = [t.flip(0) for t in trip]
            if rng.random() < 0.5:
                trip = [t.T for t in trip]
            out.append(trip)
        return [torch.stack(v)[:, None] for v in zip(*out, strict=True)]

    def run(x, noisy):
        for stage in stages:
            x = stage(x, noisy)
        return x

    def psnr(out, clean):
        return 10 * np.log10(1 / float(((out.clamp(0, 1) - clean) ** 2).mean()))

    def evaluate():
        with torch.no_grad():
            return np.mean(
                [psnr(run(o[None, None], y[None, None])[0, 0], c) for c, y, o in val]
            )

    shipped = np.mean([psnr(o, c) for c, _, o in val])
    print(f"Set12 sigma 25, shipped model: {shipped:.4f} dB", flush=True)
    start = time.time()
    for step in range(1, args.steps + 1):
        c, y, o = batch()
        loss = ((run(o, y) - c)[..., 8:-8, 8:-8] ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % (args.steps // 5) == 0:
            print(
                f"step {step}: loss {1e4 * loss.item():.2f}e-4, Set12 with "
                f"{args.stages} refinement step(s) {evaluate():.4f} dB, "
                f"{time.time() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
