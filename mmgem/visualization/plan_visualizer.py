# Copyright (c) mmgem contributors. All rights reserved.
"""Send a GEM plan to MMEngine's Visualizer (TensorBoard, W&B, local files)."""
from typing import Optional

import mmcv
import numpy as np
from mmengine.visualization import Visualizer


def render_text_image(text: str, font_size: int = 9, dpi: int = 100) -> np.ndarray:
    """Render monospaced text (a table) as an RGB image.

    Vis backends take images and scalars, not text; the plan's table goes
    to them as this picture.

    Args:
        text (str): The text, lines separated by ``\\n``.
        font_size (int): Font size in points. Defaults to 9.
        dpi (int): Resolution. Defaults to 100.

    Returns:
        np.ndarray: ``(H, W, 3)`` uint8 RGB image, black text on white.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    text = text.rstrip('\n')
    fig = Figure(figsize=(1, 1), dpi=dpi, facecolor='white')
    canvas = FigureCanvasAgg(fig)
    label = fig.text(0, 1, text, family='monospace', fontsize=font_size, va='top',
                     ha='left', linespacing=1.2)
    canvas.draw()
    extent = label.get_window_extent()
    pad = font_size * dpi / 72  # one em around the text
    width, height = extent.width + 2 * pad, extent.height + 2 * pad
    fig.set_size_inches(width / dpi, height / dpi)
    label.set_position((pad / width, 1 - pad / height))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def add_plan_to_visualizer(visualizer: Optional[Visualizer],
                           plan,
                           heatmap_file: str,
                           step: int = 0) -> None:
    """Send a plan's heat map and table to every vis backend.

    Two images: ``gem_plan`` (the heat map drawn by ``GEMPlan.plot``, read
    back from ``heatmap_file``) and ``gem_plan_table`` (the plan's summary
    and quota table, :func:`render_text_image`). With ``LocalVisBackend``
    they land in ``<work_dir>/<timestamp>/vis_data/vis_image/gem_plan_<step>.png``;
    with ``TensorboardVisBackend`` under the same tags.

    Args:
        visualizer (Visualizer, optional): The runner's visualizer; None
            sends nothing.
        plan (GEMPlan): The plan.
        heatmap_file (str): The PNG ``plan.plot`` wrote.
        step (int): Global step (the iteration the plan was installed at).
    """
    if visualizer is None:
        return
    heatmap = mmcv.imread(heatmap_file, channel_order='rgb')
    if heatmap is None:
        raise FileNotFoundError(f'add_plan_to_visualizer: cannot read the heat map {heatmap_file}')
    visualizer.add_image('gem_plan', heatmap, step=step)
    visualizer.add_image('gem_plan_table', render_text_image(str(plan)), step=step)
