"""The Set12 table of the model and training choices, from the runs' logs.

Every folder under ``RUNS`` (default ``benchmarks/runs/ablation``) is one run of
``train_bsd.py`` that differs from the ``base`` run in one choice; its
``train.log`` holds the command and the validation PSNR (Set12, the
published protocol) every ``--validate-every`` steps.  The table gives each
run's settings that differ from the base's, its PSNR at step 0 (the tuned
start) and its best PSNR, and the difference from the base's best (same
seed: same crops and noise) and from the mean over the runs that differ from
the base in ``--seed`` only.  A difference within the spread of those seeds
is not a finding.

    python benchmarks/ablation_table.py [RUNS]

Runs ``base-padded-loss`` and the like were made by an older commit (named
in the run's ``commit`` file) to measure a change of the code itself.
"""

import argparse
import pathlib
import re
import shlex

# The options of a run that do not change the model or its training.
_IGNORED = {"--data", "--out", "--n-jobs", "--checkpoint-minutes", "--resume"}
_LINE = re.compile(r"^step (\d+)/(\d+): .*validation PSNR ([\d.]+) dB")
_ELAPSED = re.compile(r"elapsed (\d+):(\d\d):(\d\d)")


def read_log(path):
    """``(options, {step: psnr}, seconds)`` of a ``train_bsd.py`` log."""
    options, scores, seconds = {}, {}, 0
    for line in path.read_text().splitlines():
        if line.startswith("$ python "):
            words = shlex.split(line[2:])[2:]
            options = {}
            for i, word in enumerate(words):
                if word.startswith("--") and word not in _IGNORED:
                    nxt = words[i + 1] if i + 1 < len(words) else ""
                    options[word] = "" if nxt.startswith("--") or not nxt else nxt
        elif match := _LINE.match(line):
            scores[int(match[1])] = float(match[3])
            if elapsed := _ELAPSED.search(line):
                h, m, s = (int(g) for g in elapsed.groups())
                seconds = 3600 * h + 60 * m + s
    return options, scores, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = pathlib.Path(__file__).parent
    parser.add_argument("runs", nargs="?", default=here / "runs" / "ablation")
    args = parser.parse_args(argv)
    runs = {
        d.name: read_log(d / "train.log")
        for d in sorted(pathlib.Path(args.runs).iterdir())
        if (d / "train.log").exists()
    }
    base_options = runs["base"][0]
    rows = []
    for name, (options, scores, seconds) in runs.items():
        if not scores:  # not validated yet
            continue
        diff = " ".join(
            f"{k} {v}".strip() for k, v in options.items() if base_options.get(k) != v
        )
        diff += "".join(f" (no {k})" for k in base_options if k not in options)
        commit = pathlib.Path(args.runs, name, "commit")
        if commit.exists():
            diff += f" (code of {commit.read_text().strip()})"
        # The base with another seed (crops, noise, start) only.
        seed = name == "base" or re.fullmatch(r"--seed \d+", diff.strip())
        best_step = max(scores, key=lambda s: (scores[s], -s))
        rows.append((not seed, name, diff, scores, best_step, seconds))
    bests = [r[3][r[4]] for r in rows if not r[0]]
    mean, spread = sum(bests) / len(bests), max(bests) - min(bests)
    print(
        f"base over {len(bests)} seeds: best Set12 {mean:.2f} dB on average, "
        f"{min(bests):.2f}-{max(bests):.2f} (spread {spread:.2f} dB)\n"
    )
    base = max(runs["base"][1].values())
    print(
        "| run | differs from base | steps | Set12 at step 0 | best Set12 (step) "
        "| vs base | vs the seeds' mean | wall time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for _, name, diff, scores, best_step, seconds in sorted(rows):
        if name == "base":
            diff = " ".join(f"{k} {v}".strip() for k, v in base_options.items())
        best = scores[best_step]
        print(
            f"| {name} | {diff.strip() or '-'} | {max(scores)} | {scores[0]:.2f} "
            f"| {best:.2f} ({best_step}) | {best - base:+.2f} | {best - mean:+.2f} "
            f"| {seconds // 60} min |"
        )


if __name__ == "__main__":
    main()
