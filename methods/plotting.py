"""Every plot in evfarm goes through this module: figures on their own Agg canvas, no pyplot.

pyplot keeps global state (a figure manager that holds every figure until `plt.close`, a current
figure and axes), and `matplotlib.use("Agg")` switches the backend for the whole process, the
caller's notebook or GUI included. Neither belongs in library code. Here a figure is a plain
`matplotlib.figure.Figure` attached to a `FigureCanvasAgg`: it renders without a display, nothing
registers it anywhere, and it is freed like any other object when the last reference goes. Reading
rcParams (the default style) is the only global thing touched.

API (our own design, no paper behind it):

=================================  ===========================================================
`new_figure(nrows, ncols, **kw)`   `(Figure, axes)`, axes shaped as `plt.subplots` shapes them
`save_figure(fig, path, dpi)`      write the image atomically (temp file + `os.replace`)
`colormap(name)`                   a registered colormap (`matplotlib.colormaps[name]`)
`legend_handle(**line_kw)`         a proxy artist for a legend entry (replaces `plt.Line2D`)
=================================  ===========================================================

`save_figure` is the one function in `methods/` that writes a file. It lives here rather than in
`cluster/` because `sims/zoo` writes sample grids and overlays too and may not import upwards; a
figure's path always comes from the caller, so the file I/O stays at the edge of the call.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

_FIGURE_KEYS = ("figsize", "dpi", "facecolor", "edgecolor", "layout")


def new_figure(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas and its grid of axes, like `plt.subplots` without pyplot.

    `figsize`, `dpi`, `facecolor`, `edgecolor` and `layout` go to the Figure; everything else
    (`sharex`, `sharey`, `squeeze`, `subplot_kw`, `gridspec_kw`, ...) to `Figure.subplots`, so
    `axes` is one Axes for 1x1, a 1-D array for one row or column and a 2-D array otherwise
    (`squeeze=False`: always 2-D).
    """
    fig = Figure(**{k: kw.pop(k) for k in _FIGURE_KEYS if k in kw})
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: float = 120, **savefig_kw: Any) -> Path:
    """Write `fig` to `path` (format from the suffix, e.g. .png) and return the path.

    This is the only function in `methods/` that writes a file (see the module docstring). The
    image is written to a temporary file in the same directory, flushed to disk and moved into
    place with `os.replace`, so a reader never sees a half-written image and an existing plot is
    replaced whole. Missing parent directories are created. Extra keywords go to `savefig`
    (`bbox_inches="tight"`, `transparent=True`, ...).
    """
    path = Path(path)
    fmt = savefig_kw.pop("format", None) or path.suffix.lstrip(".").lower() or "png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 honours the umask, as a plain open() would (mkstemp would leave 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, **savefig_kw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def colormap(name: str) -> Colormap:
    """The registered colormap `name` ("tab10", "viridis", ...); call it with an int or a float.

    A listed map such as "tab10" gives colour `i` for `cmap(i)` and its colours as `cmap.colors`.
    """
    return matplotlib.colormaps[name]


def legend_handle(**line_kw: Any) -> Line2D:
    """A line with no data, for a legend entry: `legend_handle(color="k", marker="o", ls="", label="x")`."""
    return Line2D([], [], **line_kw)
