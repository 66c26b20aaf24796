# Copyright (c) mmgem contributors. All rights reserved.
from .plan_visualizer import add_plan_to_visualizer, render_text_image
from .routing_tally import RoutingTally, draw_share_heatmap, moe_layer_names
from .uodb_visualizer import UODBLocalVisualizer

__all__ = [
    'UODBLocalVisualizer', 'add_plan_to_visualizer', 'render_text_image', 'RoutingTally',
    'draw_share_heatmap', 'moe_layer_names'
]
