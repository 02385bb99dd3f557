"""One figure style for every page, and one way to show a figure wherever the code runs.

The site has a light and a dark palette, so figures are drawn on a transparent
background with mid-tone colours and mid-grey text that reads on both. Line plots
become inline SVG (crisp, small); dense images (digit grids, heatmaps) become a
base64 PNG ``<img>`` so readers can zoom them. Output is deterministic: the SVG
hash salt and the metadata dates are fixed, so two builds give identical bytes.

[`show`][kexue.plot.show] prints the figure as HTML while the site is built, displays it inline
in Jupyter, and opens a window in a plain Python session (with an interactive matplotlib
backend), so a block copied from a page shows its figure instead of printing HTML. On the site
the figures become separate files that a click enlarges.

Examples:
    Typical use, as on every page:

    >>> from kexue.plot import figure, show
    >>> fig, ax = figure()
    >>> _ = ax.plot([0, 1, 2, 3], [0, 1, 4, 9])
    >>> _ = ax.set_xlabel("x")
    >>> show(fig, caption="A parabola: look at the curvature.")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import os
import sys
from typing import Any, Literal

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from kexue._checks import check_int

__all__ = ["INK", "PALETTE", "figure", "figure_html", "show", "style"]

#: Mid-tone, colour-blind-aware palette (Okabe-Ito hues, brightened for dark mode).
PALETTE: tuple[str, ...] = (
    "#3b8fd9",  # blue
    "#e69f00",  # orange
    "#2aa876",  # green
    "#d55e8e",  # pink
    "#8c7ae6",  # violet
    "#56b4e9",  # sky
    "#c9a227",  # ochre
    "#9a9a9a",  # grey
)

#: Text and axis colour: a grey that keeps contrast on white and on Material's slate.
INK = "#8a8f98"

_RC: dict[str, Any] = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "none",
    "axes.facecolor": "none",
    "savefig.facecolor": "none",
    "savefig.transparent": True,
    "axes.edgecolor": INK,
    "axes.labelcolor": INK,
    "axes.titlecolor": INK,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.color": INK,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE)),
    "xtick.color": INK,
    "ytick.color": INK,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "text.color": INK,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "font.family": "DejaVu Sans",
    "svg.fonttype": "none",  # text stays text: selectable, searchable, tiny
    "svg.hashsalt": "kexue",  # deterministic element ids
    "image.cmap": "viridis",
}


def style() -> matplotlib.RcParams:
    """Return the rc parameters of the kexue figure style (a copy of matplotlib's with ours applied).

    Returns:
        An ``RcParams`` usable as ``with matplotlib.rc_context(style()): ...``.
    """
    params = matplotlib.RcParams(matplotlib.rcParams)
    params.update(_RC)
    return params


def figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] | None = None,
    **subplot_kw: Any,
) -> tuple[Figure, Any]:
    """Create a figure and axes in the kexue style.

    The style is written into ``matplotlib.rcParams`` (matplotlib has no per-figure
    style and reads it whenever an artist is created), so later plots in the same
    process share it. Use [`style`][kexue.plot.style] with ``matplotlib.rc_context`` to scope it instead.

    Args:
        nrows: Rows of subplots (>= 1).
        ncols: Columns of subplots (>= 1).
        figsize: Size in inches; defaults to 6.4 x 3.6 for one panel, wider/taller for grids.
        **subplot_kw: Passed to ``plt.subplots`` (e.g. ``sharex=True``).

    Returns:
        ``(fig, ax)`` exactly as ``matplotlib.pyplot.subplots`` returns them.

    Raises:
        ValueError: If ``nrows`` or ``ncols`` is not a positive integer.

    Examples:
        >>> fig, axes = figure(1, 2)
        >>> len(axes), fig.get_size_inches().tolist()
        (2, [6.6, 3.6])
    """
    for name, value in (("nrows", nrows), ("ncols", ncols)):
        check_int(value, name)
    if figsize is None:
        figsize = (6.4 if ncols == 1 else min(3.3 * ncols, 10.0), 3.6 if nrows == 1 else 3.0 * nrows)
    # Matplotlib reads most style settings when an artist is created (a legend, a text added
    # after this call), and it has no per-figure style, so the style is applied process-wide.
    matplotlib.rcParams.update(_RC)
    fig, ax = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", **subplot_kw)
    return fig, ax


def figure_html(
    fig: Figure,
    *,
    fmt: Literal["svg", "png"] = "svg",
    caption: str | None = None,
    alt: str | None = None,
    dpi: int = 110,
    close: bool = True,
) -> str:
    """Render a figure as an HTML ``<figure>`` that a fence can print.

    Args:
        fig: The matplotlib figure.
        fmt: ``"svg"`` for line plots (inline vector), ``"png"`` for dense images (base64 ``<img>``).
        caption: Optional caption (plain text, HTML-escaped) saying what to look at.
        alt: Alternative text for PNG images; defaults to the caption.
        dpi: Resolution of PNG output.
        close: Close the figure afterwards (frees memory; default True).

    Returns:
        A self-contained HTML string with no external references.

    Raises:
        TypeError: If ``fig`` is not a matplotlib ``Figure``.
        ValueError: If ``fmt`` is not ``"svg"`` or ``"png"`` or ``dpi`` is not positive.

    Examples:
        >>> fig, ax = figure()
        >>> _ = ax.imshow([[0, 1], [1, 0]])
        >>> html = figure_html(fig, fmt="png", caption="A 2x2 checkerboard.")
        >>> html.startswith('<figure class="kexue-figure"><img class="kexue-png" alt="A 2x2 checkerboard."')
        True
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if fmt not in ("svg", "png"):
        raise ValueError(f"fmt must be 'svg' or 'png', got {fmt!r}")
    if not isinstance(dpi, int) or dpi <= 0:
        raise ValueError(f"dpi must be a positive integer, got {dpi!r}")
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        if fmt == "svg":
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
            body = buf.getvalue().decode("utf-8")
            # Drop the XML prolog and DOCTYPE: inline SVG in HTML5 needs neither.
            body = body[body.index("<svg") :]
            # Drop the RDF metadata block: it only names the creator and references schema URLs.
            start, end = body.find("<metadata>"), body.find("</metadata>")
            if start != -1 and end != -1:
                body = body[:start] + body[end + len("</metadata>") :]
            body = body.replace("<svg ", '<svg role="img" class="kexue-svg" ', 1)
        else:
            fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
            data = base64.b64encode(buf.getvalue()).decode("ascii")
            text = html.escape(alt if alt is not None else (caption or "figure"), quote=True)
            body = f'<img class="kexue-png" alt="{text}" src="data:image/png;base64,{data}">'
    if close:
        plt.close(fig)
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure class="kexue-figure">{body}{cap}</figure>'


_NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def show(
    fig: Figure,
    *,
    caption: str | None = None,
    fmt: Literal["svg", "png"] = "svg",
    alt: str | None = None,
    dpi: int = 110,
) -> None:
    """Show a figure where the code runs: on the site, in Jupyter, or in a window.

    * While the site is built (and when pytest runs the pages), ``$KEXUE_FIGURES`` is ``html``:
      the figure is printed as [`figure_html`][kexue.plot.figure_html] for the page.
    * In a Jupyter kernel it is displayed inline (SVG or PNG, as on the site) with its caption.
    * Elsewhere the caption is printed and ``matplotlib.pyplot.show()`` opens a window, if the
      matplotlib backend can draw one (otherwise a note says how to save the figure).

    Args:
        fig: The matplotlib figure (closed afterwards on the site and in Jupyter).
        caption: What to look at (plain text).
        fmt: ``"svg"`` for line plots, ``"png"`` for dense images.
        alt: Alternative text of a PNG; defaults to the caption.
        dpi: Resolution of PNG output.

    Raises:
        TypeError: If ``fig`` is not a matplotlib ``Figure``.
        ValueError: If ``fmt`` is not ``"svg"`` or ``"png"`` or ``dpi`` is not positive.

    Examples:
        In a script run with a non-interactive backend (as in the tests) it says what it would show:

        >>> fig, ax = figure()
        >>> _ = ax.plot([1, 2, 3])
        >>> show(fig, caption="A straight line.")
        A straight line.
        (matplotlib's 'agg' backend opens no window; save the figure with fig.savefig('figure.svg'))
    """
    if os.environ.get("KEXUE_FIGURES") == "html":
        print(figure_html(fig, fmt=fmt, caption=caption, alt=alt, dpi=dpi))
        return
    html_text = figure_html(fig, fmt=fmt, caption=caption, alt=alt, dpi=dpi, close=False)  # validates
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        from IPython.display import HTML, display

        display(HTML(html_text))
        plt.close(fig)
        return
    if caption:
        print(caption)
    backend = str(matplotlib.get_backend()).lower().removeprefix("module://")
    if backend in _NON_INTERACTIVE:
        print(f"(matplotlib's {backend!r} backend opens no window; save the figure with fig.savefig('figure.svg'))")
    else:
        plt.show()
