"""The ergodic-versus-last study of ``docs/ergodic.md``.

Runs ``examples/plot_ergodic_vs_last.py`` with its ``study`` preset (1000
training patches; 30 L-BFGS iterations; L from 5 to 200; last, ergodic and
linearly weighted ergodic outputs; TV and random initial operators; plus a
Huber setting with the implicit gradient and a 3x longer budget from the
random operator: about 20 minutes of one core) and writes the figures,
``results.json`` and the tables of the document::

    python benchmarks/ergodic_study.py --out docs/ergodic
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    example = Path(__file__).parents[1] / "examples" / "plot_ergodic_vs_last.py"
    args = sys.argv[1:] or ["--out", "docs/ergodic"]
    sys.argv = [str(example), "--preset", "study", *args]
    runpy.run_path(str(example), run_name="__main__")
