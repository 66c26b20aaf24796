# Copyright (c) mmgem contributors. All rights reserved.
"""Dataset x expert counts of the foreground tokens of test forwards.

DAMEX's Figure 3 shows, for every MoE layer, which experts the tokens of each
dataset go to. :class:`RoutingTally` collects that from
``GEMDINO.routing_record`` (kept when ``model.record_routing`` is set): a
token counts as foreground when its query's highest class probability in the
last decoder layer is at least ``score_thr`` (so the queries that become
detections, as the ground-truth matching is not available at test time), and
it is counted for the image's true dataset, under the expert that processed
it (tokens an expert dropped are not counted).
"""
from typing import List, Optional, Sequence

import numpy as np
import torch


class RoutingTally:
    """Accumulates ``(layers, datasets, experts)`` foreground-token counts.

    Args:
        num_layers (int): MoE layers of the model.
        num_datasets (int): Datasets.
        num_experts (int): Experts per MoE layer.
        score_thr (float): Lowest class probability of a foreground query.
            Defaults to 0.3 (mmdet's visualisation threshold).
    """

    def __init__(self, num_layers: int, num_datasets: int, num_experts: int,
                 score_thr: float = 0.3) -> None:
        self.score_thr = float(score_thr)
        self.counts = np.zeros((num_layers, num_datasets, num_experts),
                               dtype=np.int64)

    def update(self, record: dict) -> None:
        """Add one forward's ``routing_record``.

        Args:
            record (dict): ``token_experts`` (per layer ``(B, N)``, -1 for
                dropped tokens), ``query_scores`` (``(B, N)``) and
                ``dataset_ids`` (``(B,)``, -1 for unknown).
        """
        num_layers, num_datasets, num_experts = self.counts.shape
        layers = record['token_experts']
        if len(layers) != num_layers:
            raise ValueError(f'routing record has {len(layers)} MoE layers, '
                             f'the tally {num_layers}')
        fg = (record['query_scores'] >= self.score_thr).cpu()
        ids = record['dataset_ids'].cpu().long()
        valid = (ids >= 0) & (ids < num_datasets)
        for layer, experts in enumerate(layers):
            experts = experts.cpu().long()
            keep = fg & (experts >= 0) & valid[:, None]
            rows = ids[:, None].expand_as(experts)[keep]
            flat = rows * num_experts + experts[keep]
            self.counts[layer] += torch.bincount(
                flat, minlength=num_datasets * num_experts).view(
                    num_datasets, num_experts).numpy()

    def shares(self) -> np.ndarray:
        """np.ndarray: Counts normalised per (layer, dataset) row."""
        totals = self.counts.sum(axis=2, keepdims=True)
        return self.counts / np.maximum(totals, 1)

    def table(self, layer: int, dataset_names: Sequence[str],
              layer_name: Optional[str] = None) -> str:
        """A markdown table of one layer's shares (and token counts).

        Args:
            layer (int): Index among the MoE layers.
            dataset_names (Sequence[str]): Row names.
            layer_name (str, optional): Caption. Defaults to
                ``'MoE layer <layer>'``.

        Returns:
            str: The table.
        """
        share = self.shares()[layer]
        num_experts = share.shape[1]
        lines = [
            f'{layer_name or f"MoE layer {layer}"}: share of each dataset\'s '
            f'foreground tokens (score >= {self.score_thr}) per expert',
            '| dataset | tokens | ' + ' | '.join(f'e{e}' for e in range(num_experts)) + ' |',
            '|---|---|' + '---|' * num_experts
        ]
        for name, row, count in zip(dataset_names, share, self.counts[layer].sum(1)):
            lines.append(f'| {name} | {int(count)} | ' +
                         ' | '.join(f'{v:.2f}' for v in row) + ' |')
        return '\n'.join(lines)


def draw_share_heatmap(share: np.ndarray, row_labels: Sequence[str],
                       col_labels: Sequence[str], title: str,
                       dpi: int = 100) -> np.ndarray:
    """Draw a row-normalised share matrix as an RGB image.

    Args:
        share (np.ndarray): ``(rows, cols)`` values in [0, 1].
        row_labels (Sequence[str]): Row tick labels.
        col_labels (Sequence[str]): Column tick labels.
        title (str): Title.
        dpi (int): Resolution. Defaults to 100.

    Returns:
        np.ndarray: ``(H, W, 3)`` uint8 RGB image (MMEngine's
        ``Visualizer.add_image`` takes it as is).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = share.shape
    fig = Figure(figsize=(min(3.5 + 0.6 * cols, 30), min(1.5 + 0.35 * rows, 40)),
                 dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap='viridis', vmin=0.0, vmax=1.0, aspect='auto')
    ax.set_xticks(np.arange(cols))
    ax.set_xticklabels(list(col_labels), fontsize=8)
    ax.set_yticks(np.arange(rows))
    ax.set_yticklabels(list(row_labels), fontsize=8)
    ax.set_xlabel('expert')
    if rows * cols <= 400:
        for r in range(rows):
            for c in range(cols):
                ax.text(c, r, f'{share[r, c]:.2f}', ha='center', va='center',
                        fontsize=7, color='w' if share[r, c] < 0.6 else 'k')
    fig.colorbar(im, ax=ax, label='share of the dataset\'s tokens')
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def moe_layer_names(model) -> List[str]:
    """``decoder layer <i>`` for every MoE layer of a GEMDINO, in order."""
    return [f'decoder layer {i}' for i in getattr(model, 'moe_layers', ())]
