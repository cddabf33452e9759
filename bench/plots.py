"""The benchmark reports' plots: grouped bar charts, one PNG per results file.

Every bench script that writes a results file (``RESULTS.md``,
``ZMTP_RESULTS.md``, ...) also writes a PNG next to it with the same stem
(``RESULTS.png``) and embeds it in the markdown. A figure is one or more
panels stacked vertically; a panel is a grouped bar chart (groups along the
x axis, one bar per series in each group, an optional min-max whisker and a
label such as a ratio above each bar). Its title names the benchmark, the
machine and the commit, so a plot seen alone still says where its numbers
come from.

matplotlib is optional (``pip install 'sota-dispatch[bench]'``): it is
imported only when a plot is drawn, with the Agg backend (no display). Without
it a bench still measures and writes its table, and the table says the plot
was skipped.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from harness import cpu_model, git_commit

__all__ = ["Bar", "Panel", "figure_lines", "figure_path", "machine_label", "write_figure"]

#: One colour per series position (colour-blind-safe, matplotlib's "tab10" order
#: with the grey moved last), so the same series keeps its colour across panels.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@attrs.frozen
class Bar:
    """One bar: ``value`` of ``series`` in ``group``; ``low``/``high`` draw a
    min-max whisker, ``label`` is written above it (say, ``1.18x``)."""

    group: str
    series: str
    value: float
    low: float | None = None
    high: float | None = None
    label: str = ""


@attrs.frozen
class Panel:
    """One grouped bar chart: groups in order of first appearance along x,
    series in order of first appearance within each group."""

    title: str
    ylabel: str
    bars: Sequence[Bar]


def machine_label() -> str:
    """The machine in a few words, for a figure's title."""
    return (
        f"{cpu_model()}, {os.cpu_count()} logical cores, {platform.python_implementation()} {platform.python_version()}"
    )


def figure_path(output: str) -> Path | None:
    """Where the figure of the report written to ``output`` goes: the same
    path with ``.png``; None when no report is written (``-``)."""
    return None if output == "-" else Path(output).with_suffix(".png")


def write_figure(path: Path, title: str, panels: Sequence[Panel], source: str) -> bool:
    """Draw ``panels`` into a PNG at ``path``; False, writing nothing, if
    matplotlib is not installed.

    ``source`` is the commit line of the title (``git_commit``'s text). The
    file is written under a temporary name and renamed, like the reports.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # type: ignore[import-not-found,unused-ignore]
        from matplotlib.figure import Figure  # type: ignore[import-not-found,unused-ignore]
        from matplotlib.ticker import FuncFormatter  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    shown = [p for p in panels if p.bars]
    if not shown:
        return False
    fig = Figure(figsize=(11, 0.9 + 3.4 * len(shown)), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"{title}\n{machine_label()}; {source}", fontsize=11)
    axes = fig.subplots(len(shown), 1, squeeze=False)
    for ax, panel in zip(axes[:, 0], shown, strict=True):
        groups = list(dict.fromkeys(b.group for b in panel.bars))
        series = list(dict.fromkeys(b.series for b in panel.bars))
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            mine = [b for b in panel.bars if b.series == name]
            xs = [groups.index(b.group) + (i - (len(series) - 1) / 2) * width for b in mine]
            values = [b.value for b in mine]
            below = [b.value - b.low if b.low is not None else 0.0 for b in mine]
            above = [b.high - b.value if b.high is not None else 0.0 for b in mine]
            whiskers = [below, above] if any(below) or any(above) else None
            rects = ax.bar(
                xs, values, width * 0.95, label=name, color=COLOURS[i % len(COLOURS)], yerr=whiskers, capsize=3
            )
            for rect, bar in zip(rects, mine, strict=True):
                if bar.label:
                    top = max(bar.value, bar.high if bar.high is not None else bar.value)
                    ax.annotate(
                        bar.label,
                        (rect.get_x() + rect.get_width() / 2, top),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
        ax.set_xticks(range(len(groups)), groups)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel)
        ax.margins(y=0.15)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 100 else f"{v:g}"))
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        if len(series) > 1:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    tmp.replace(path)
    return True


def figure_lines(output: str, title: str, panels: Sequence[Panel], source_paths: Sequence[str]) -> list[str]:
    """Write the figure of the report going to ``output`` and return the
    markdown lines that embed it (none when no report is written; a note,
    also printed, when matplotlib is missing)."""
    path = figure_path(output)
    if path is None:
        return []
    if write_figure(path, title, panels, git_commit(source_paths)):
        print(f"wrote {path}", file=sys.stderr)
        return [f"![{title}]({path.name})", ""]
    note = "plot skipped: matplotlib is not installed (pip install 'sota-dispatch[bench]')"
    print(note, file=sys.stderr)
    return [f"({note})", ""]
