"""Arguments and image scraper for the sphinx-gallery build of ``examples/``.

The examples are command-line scripts that write their figures to files
(``--output`` or ``--out``) and close them, so Matplotlib's scraper would see
nothing and the files would land in ``examples/``.  During the docs build each
example instead writes into its own folder under ``_build/gallery_outputs``,
and :func:`png_scraper` shows the PNG files it wrote there.  Sphinx-gallery
imports both functions by their qualified names (a callable in ``conf.py``
cannot be pickled into Sphinx's environment cache).
"""

import shutil
from pathlib import Path

from sphinx_gallery.scrapers import figure_rst

# How each example is told where to write; an example missing here runs with
# no arguments.
OUTPUT_ARGS = {
    "plot_denoise_image": lambda out: ["--output", str(out / "denoise_image.png")],
    "plot_ergodic_vs_last": lambda out: ["--out", str(out)],
}
# Per output folder, the files already shown (a rerun starts a fresh folder).
_shown = {}


def _output_dir(gallery_conf, src_file):
    stem = Path(src_file).stem
    return Path(gallery_conf["src_dir"], "_build", "gallery_outputs", stem)


def reset_argv(gallery_conf, script_vars):
    """Return the command-line arguments of one example (a fresh output folder)."""
    out = _output_dir(gallery_conf, script_vars["src_file"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _shown[out] = set()
    stem = Path(script_vars["src_file"]).stem
    return OUTPUT_ARGS[stem](out) if stem in OUTPUT_ARGS else []


def png_scraper(block, block_vars, gallery_conf):
    """Show the PNG files that a code block wrote to its example's folder."""
    out = _output_dir(gallery_conf, block_vars["src_file"])
    shown = _shown.setdefault(out, set())
    new = [p for p in out.glob("*.png") if p not in shown]
    # In the order the example wrote them: its first figure is the thumbnail.
    new.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    targets = []
    for path, target in zip(new, block_vars["image_path_iterator"], strict=False):
        shutil.copyfile(path, target)
        shown.add(path)
        targets.append(target)
    return figure_rst(targets, gallery_conf["src_dir"])
