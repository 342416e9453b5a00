"""Heat-map plots of attention weights.

Shape legend: B batch, N heads, T query length, S key length.
"""

import math
import os

import numpy as np

from keras_attention.analysis._maps import to_numpy
from keras_attention.utils.validation import check_positive_int

_MAX_COLUMNS = 4


def _panel_map(array, name):
    """One `(T, S)` map from a `(T, S)`, `(N, T, S)` or `(1, N, T, S)` array (heads
    averaged)."""
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(
                f"`{name}` has a batch of {array.shape[0]}: select one item, e.g. "
                f"weights[0]. Received: shape={array.shape}"
            )
        array = array[0]
    if array.ndim == 3:
        array = array.mean(axis=0)
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be a (query_len, key_len) or (heads, query_len, key_len) "
            f"map. Received: shape={array.shape}"
        )
    return array


def _panels(weights):
    """`[(panel title or None, (T, S) map)]` for the accepted layouts."""
    if isinstance(weights, (list, tuple)):
        if not weights:
            raise ValueError("`weights` must not be an empty list. Received: weights=[]")
        return [
            (f"layer {i}", _panel_map(to_numpy(w, f"weights[{i}]"), f"weights[{i}]"))
            for i, w in enumerate(weights)
        ]
    array = to_numpy(weights, "weights")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        return [(None, array)]
    if array.ndim == 3:
        return [(f"head {h}", m) for h, m in enumerate(array)]
    raise ValueError(
        "`weights` must be a (query_len, key_len) map, (heads, query_len, key_len) maps, "
        "or a list of per-layer maps (a batch of one is accepted). "
        f"Received: shape={array.shape}"
    )


def _check_labels(name, labels, size):
    if labels is None:
        return None
    labels = [str(label) for label in labels]
    if len(labels) != size:
        raise ValueError(
            f"`{name}` must have one label per position ({size}). "
            f"Received: {len(labels)} labels"
        )
    return labels


def _figure_pixel_size(num_panels, panel_size=3.0, dpi=100):
    """`(width, height)` in pixels of a `plot_attention` figure with that many panels."""
    columns = min(num_panels, _MAX_COLUMNS)
    rows = math.ceil(num_panels / columns)
    return round(columns * panel_size * dpi), round(rows * panel_size * dpi)


def plot_attention(weights, x_labels=None, y_labels=None, path="attention.png", title=None,
                   max_panels=16, panel_size=3.0, dpi=100, cmap="viridis"):
    """Draw attention weights as heat maps and write them to a PNG file.

    Layouts: a `(T, S)` map gives one panel; `(N, T, S)` one panel per head; a list
    of per-layer maps (each `(T, S)` or `(N, T, S)`, heads averaged) one panel per
    layer. A leading batch axis of size 1 is dropped. Queries run down the rows,
    keys along the columns, tokens on the axes. At most `max_panels` panels are
    drawn (the first ones).

    Size rule: panels sit on a grid of `min(P, 4)` columns and `ceil(P / 4)` rows
    for P panels, each `panel_size` inches square, so the PNG is
    `columns * panel_size * dpi` by `rows * panel_size * dpi` pixels (900 x 300 for
    3 panels with the defaults), whatever the labels or title. Drawing uses the
    Agg backend through `matplotlib.figure.Figure`, leaving pyplot's state alone.

    Args:
        weights: the map(s) to draw, tensors or NumPy arrays.
        x_labels: optional key tokens, one per column.
        y_labels: optional query tokens, one per row; default `x_labels` when the
            map is square.
        path: where to write the PNG.
        title: optional figure title.
        max_panels: largest number of panels to draw.
        panel_size: side of one panel in inches.
        dpi: pixels per inch.
        cmap: matplotlib colour map.

    Returns:
        `path`, as a string.

    Example:

    >>> plot_attention(scores[0], x_labels=tokens, path="heads.png")
    'heads.png'
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_attention needs matplotlib: `pip install matplotlib`.") from error
    max_panels = check_positive_int("max_panels", max_panels)
    dpi = check_positive_int("dpi", dpi)
    if isinstance(panel_size, bool) or not isinstance(panel_size, (int, float)) or panel_size <= 0:
        raise ValueError(
            f"`panel_size` must be a positive number. Received: panel_size={panel_size!r}"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path. Received: path={path!r}")
    panels = _panels(weights)[:max_panels]
    t, s = panels[0][1].shape
    if any(m.shape != (t, s) for _, m in panels):
        raise ValueError(
            "All maps must have the same (query_len, key_len). "
            f"Received: shapes {[m.shape for _, m in panels]}"
        )
    x_labels = _check_labels("x_labels", x_labels, s)
    if y_labels is None and x_labels is not None and t == s:
        y_labels = x_labels
    y_labels = _check_labels("y_labels", y_labels, t)

    width, height = _figure_pixel_size(len(panels), panel_size, dpi)
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    columns = min(len(panels), _MAX_COLUMNS)
    rows = math.ceil(len(panels) / columns)
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False)).ravel()
    vmax = max(float(m.max()) for _, m in panels) or 1.0
    for ax, (name, m) in zip(axes, panels):
        image = ax.imshow(m, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto",
                          interpolation="nearest")
        if name is not None:
            ax.set_title(name, fontsize=9)
        for set_ticks, set_labels, labels, size in (
            (ax.set_xticks, ax.set_xticklabels, x_labels, s),
            (ax.set_yticks, ax.set_yticklabels, y_labels, t),
        ):
            if labels is not None:
                set_ticks(range(size))
                set_labels(labels, fontsize=7)
        if x_labels is not None:
            ax.tick_params(axis="x", labelrotation=90)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    figure.colorbar(image, ax=list(axes[:len(panels)]), shrink=0.8)
    if title is not None:
        figure.suptitle(str(title))
    path = os.fspath(path)
    figure.savefig(path, format="png", dpi=dpi)
    return path
