"""Drawing per-word attention maps over the image."""

import numpy as np


def upsample_map(attention, size):
    """A `(G, G)` map resized to `(size, size)` by bilinear interpolation, in [0, 1]."""
    attention = np.asarray(attention, dtype="float64")
    grid_h, grid_w = attention.shape
    # Sample at pixel centres in grid coordinates.
    ys = np.clip((np.arange(size) + 0.5) * grid_h / size - 0.5, 0, grid_h - 1)
    xs = np.clip((np.arange(size) + 0.5) * grid_w / size - 0.5, 0, grid_w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, grid_h - 1), np.minimum(x0 + 1, grid_w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = attention[y0][:, x0] * (1 - wx) + attention[y0][:, x1] * wx
    bottom = attention[y1][:, x0] * (1 - wx) + attention[y1][:, x1] * wx
    out = top * (1 - wy) + bottom * wy
    peak = out.max()
    return out / peak if peak > 0 else out


def draw_attention_overlay(result, path, columns=5, panel_size=2.0, alpha=0.55):
    """Writes a PNG: the image, then one panel per word with its attention heat map.

    With a retrieval captioner's result, the image panel's title names the
    nearest retrieved caption, and each word's title gives the share of its
    attention that went to the retrieved captions rather than the image
    (e.g. "red (text 62%)").

    Args:
        result: the dict returned by `Captioner.attention_maps`.
        path: the PNG file to write.
        columns: panels per row.
        panel_size: panel side in inches (100 dpi).
        alpha: opacity of the heat map.

    Returns:
        `path`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("Drawing attention needs matplotlib: `pip install matplotlib`.") \
            from error
    image = np.asarray(result["image"])
    words, maps = list(result["words"]), np.asarray(result["maps"])
    panels = 1 + len(words)
    columns = max(1, min(columns, panels))
    rows = -(-panels // columns)
    figure = Figure(figsize=(columns * panel_size, rows * panel_size + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    figure.suptitle(result["caption"] or "(empty caption)", fontsize=11)
    size = image.shape[0]
    for index in range(panels):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.imshow(image, extent=(0, size, size, 0))
        if index == 0:
            neighbours = result.get("neighbours")
            axis.set_title(f"nearest: {neighbours[0][0]}" if neighbours else "image",
                           fontsize=8 if neighbours else 9)
        else:
            heat = upsample_map(maps[index - 1], size)
            axis.imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0,
                        extent=(0, size, size, 0))
            title = words[index - 1]
            if "retrieved_share" in result:
                title += f" (text {100 * float(result['retrieved_share'][index - 1]):.0f}%)"
            axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(str(path))
    return path
