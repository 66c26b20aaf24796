# Copyright (c) mmgem contributors. All rights reserved.
"""Heat map of a GEM plan (matplotlib's Agg canvas, no display needed)."""
import io
import os.path as osp

import numpy as np

from ..utils.fileio import atomic_write


def _short(value) -> str:
    """``19753`` -> ``'19.8k'``; small numbers unchanged."""
    value = int(value)
    return f'{value / 1000:.1f}k' if value >= 10000 else str(value)


def draw_plan_heatmap(plan, path: str, dpi: int = 120) -> str:
    """Draw ``plan.quota`` row-normalised as a datasets x experts heat map.

    Args:
        plan (GEMPlan): The plan.
        path (str): Destination PNG, written atomically.
        dpi (int): Resolution. Defaults to 120.

    Returns:
        str: The absolute path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    k, m = plan.quota.shape
    share = plan.quota / plan.images[:, None]
    fig = Figure(figsize=(min(3.5 + 0.75 * m, 40), min(1.5 + 0.4 * k, 60)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap='viridis', vmin=0.0, vmax=1.0, aspect='auto')
    ax.set_xticks(np.arange(m))
    ax.set_xticklabels([f'e{e}' for e in range(m)], fontsize=7 if m > 16 else 9)
    ax.set_yticks(np.arange(k))
    ax.set_yticklabels([f'{n} ({int(i)})' for n, i in zip(plan.dataset_names, plan.images)],
                       fontsize=7 if k > 20 else 9)
    ax.set_xlabel('expert (load / capacity below)')
    if m <= 16:
        cap = '-' if plan.capacity is None else _short(plan.capacity)
        ax.set_xticklabels([f'e{e}\n{_short(v)}\n/{cap}' for e, v in
                            enumerate(plan.expert_loads)], fontsize=8)
    if k * m <= 400:
        for d in range(k):
            for e in range(m):
                if plan.quota[d, e]:
                    ax.text(e, d, f'{share[d, e]:.2f}', ha='center', va='center',
                            fontsize=7, color='w' if share[d, e] < 0.6 else 'k')
    fig.colorbar(im, ax=ax, label='share of the dataset\'s images')
    opt = plan.integral_optimum
    ax.set_title(f'GEM plan {plan.hash[:12]}: LP bound {plan.lp_bound:.4f}, '
                 + ('' if opt is None else f'integral optimum {opt:.4f}, ')
                 + f'rounded {plan.rounded_cost:.4f}', fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi)
    atomic_write(path, buf.getvalue())
    return osp.abspath(path)
