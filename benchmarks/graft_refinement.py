"""A model file: one model's stages with another's refinement steps.

Fine-tuning a model of another noise level with refinement steps starts
better from steps already trained than from the identity: both models see
images scaled to their training level (``ImageDenoiser.denoise``), so the
steps of one apply to the other's output.

    cd benchmarks
    python graft_refinement.py --stages ../sklearn_ergo/pretrained/sigma50.npz \
        --steps runs/sigma25-48x7-refined/model.npz -o runs/graft50.npz
"""

import argparse

from sklearn_ergo import load_denoiser, save_denoiser
from sklearn_ergo._refinement import Refinement


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", required=True, help="model file of the stages")
    parser.add_argument("--steps", required=True, help="model file with steps")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    den, donor = load_denoiser(args.stages), load_denoiser(args.steps)
    if not donor.n_refine:
        raise SystemExit(f"{args.steps} has no refinement steps.")
    if donor.patch_size != den.patch_size:
        raise SystemExit("the two models' filters differ in size.")
    if den.noise_std_ != donor.noise_std_:
        raise SystemExit("the two models see different noise levels.")
    den.set_params(n_refine=donor.n_refine)
    for name in Refinement.param_names:
        setattr(den, f"{name}_", getattr(donor, f"{name}_"))
    save_denoiser(den, args.output)
    print(f"{args.output}: the stages of {args.stages}, the steps of {args.steps}")


if __name__ == "__main__":
    main()
