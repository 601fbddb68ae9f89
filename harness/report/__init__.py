"""The report of a run: seaborn figures (PNG + SVG) and one self-contained index.html.

    from harness.report import build_report
    build_report("results/sweeps/cpu/2026-...")   # -> .../report/index.html

data.py shapes rows, figures.py draws (one function per figure), tables.py makes the tables,
page.py writes the HTML, build.py ties them together.
"""

from harness.report.build import build_report

__all__ = ["build_report"]
