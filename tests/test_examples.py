"""The ergodic-study example runs end to end in its quick preset."""

import json
import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "plot_ergodic_vs_last.py"


def test_plot_ergodic_vs_last_quick(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    main = runpy.run_path(str(EXAMPLE))["main"]
    main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["results"]) == {"tv", "random", "tv-huber"}
    assert "implicit" in saved["results"]["tv-huber"]
    for name in ("curves_tv", "final_random", "profile_tv", "gradients"):
        assert (tmp_path / f"ergodic_{name}.png").stat().st_size > 0
    # The replot path reads back what was saved.
    main(["--replot", str(tmp_path / "results.json"), "--out", str(tmp_path / "re")])
    assert (tmp_path / "re" / "tables.md").read_text() == (
        tmp_path / "tables.md"
    ).read_text()
