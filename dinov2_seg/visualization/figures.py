"""Figures drawn off-screen with matplotlib's Agg canvas.

A ``Figure`` built directly (not through pyplot) needs no display and no
global backend switch, and is freed with its last reference. Saved without
a tight bounding box, a PNG is exactly ``figsize * dpi`` pixels.
"""
from typing import Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(size: Tuple[float, float], dpi: int) -> Figure:
    """A figure of ``size`` inches whose layout keeps long tick labels
    inside the canvas."""
    fig = Figure(figsize=size, dpi=dpi, layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str) -> None:
    fig.savefig(path, dpi=fig.dpi)
