"""Command line: ``python -m sklearn_ergo demo``."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sklearn_ergo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="learn K on natural-image patches and report PSNR vs patch TV"
    )
    demo.add_argument("--n-patches", type=int, default=20_000)
    demo.add_argument("--n-layers", type=int, default=20)
    demo.add_argument("--max-iter", type=int, default=20)
    demo.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        try:
            run_demo(args.n_patches, args.n_layers, args.max_iter, n_jobs=args.n_jobs)
        except ImportError as exc:
            print(
                f"error: the demo needs Pillow to read scikit-learn's sample images "
                f"({exc}); pip install 'sklearn-ergo[demo]'",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
