# Copyright (c) mmgem contributors. All rights reserved.
from .routing_tally import RoutingTally, draw_share_heatmap, moe_layer_names

__all__ = ['RoutingTally', 'draw_share_heatmap', 'moe_layer_names']
