"""The figure helper: deterministic, self-contained, theme-neutral HTML."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from kexue.plot import INK, PALETTE, figure, figure_html


def _line_figure():
    fig, ax = figure()
    x = np.linspace(0, 1, 50)
    ax.plot(x, x**2, label="square")
    ax.set_title("t")
    ax.legend()
    return fig


def test_svg_output_is_byte_identical_between_renders():
    assert figure_html(_line_figure()) == figure_html(_line_figure())


def test_svg_is_inline_transparent_and_references_nothing_external():
    out = figure_html(_line_figure(), caption="a <caption> & more")
    assert out.startswith('<figure class="kexue-figure"><svg role="img" class="kexue-svg"')
    assert "<?xml" not in out and "<!DOCTYPE" not in out
    urls = set(re.findall(r"https?://[^\"' ]+", out))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}  # XML namespaces only
    assert "<figcaption>a &lt;caption&gt; &amp; more</figcaption>" in out
    # Text uses the neutral ink colour; no opaque white background rectangle.
    assert INK in out
    assert "fill: #ffffff" not in out.lower()


def test_png_output_is_a_valid_embedded_png():
    fig, ax = figure()
    ax.imshow(np.arange(64).reshape(8, 8))
    out = figure_html(fig, fmt="png", caption="grid")
    m = re.search(r'src="data:image/png;base64,([^"]+)"', out)
    assert m is not None and 'alt="grid"' in out
    assert base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_of_axes_and_palette():
    fig, axes = figure(2, 3)
    assert axes.shape == (2, 3)
    assert len(PALETTE) == len(set(PALETTE)) >= 6
    figure_html(fig)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"fmt": "jpg"}, ValueError, "fmt"),
    ({"dpi": 0}, ValueError, "dpi"),
])
def test_figure_html_rejects_bad_arguments(kwargs, exc, match):
    fig, _ = figure()
    with pytest.raises(exc, match=match):
        figure_html(fig, **kwargs)


def test_figure_html_rejects_non_figures_and_figure_rejects_bad_grids():
    with pytest.raises(TypeError, match="fig"):
        figure_html("not a figure")
    with pytest.raises(ValueError, match="nrows"):
        figure(0)
    with pytest.raises(ValueError, match="ncols"):
        figure(1, 1.5)
