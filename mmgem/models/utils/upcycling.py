# Copyright (c) mmgem contributors. All rights reserved.
"""Sparse upcycling: a dense DINO's decoder FFNs copied into every expert."""
import re
from collections import defaultdict
from typing import Dict

import torch
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import load_state_dict
from torch import Tensor, nn

#: A dense decoder FFN's key: ``decoder.layers.<i>.ffn.layers.<...>``.
FFN_KEY = re.compile(r'^decoder\.layers\.(\d+)\.ffn\.(layers\..+)$')
#: Keys a dense DINO lacks; the MoE model keeps its own values for them.
GEM_ONLY_KEYS = ('routing_table.', 'router.', 'label_offsets', 'domain_classifier.')
#: Keys the MoE model always keeps its own values for: a dense model's plan
#: (a dense GEM-DINO's empty routing table, of its own expert count) is not
#: one of the MoE layers; GEMPlannerHook plans the upcycled model.
OWN_KEYS = ('routing_table.',)


def upcycle_state_dict(model: nn.Module,
                       dense_state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Convert a dense DINO state dict to the keys of an MoE DINO.

    The FFN weights of every MoE layer (``model.moe_layers``) are copied
    into each expert (a router that owns its experts converts them itself,
    ``router.upcycled_state``); GEM-only entries (routing table, routers, domain
    classifier) missing from the dense state dict keep the model's current
    values, and so does the routing table always (a dense GEM-DINO's holds
    no plan of these MoE layers, and may be of another expert count).

    Args:
        model (nn.Module): A :class:`~mmgem.models.GEMDINO` (``moe_layers``,
            ``decoder.layers[i].ffn``).
        dense_state_dict (dict[str, Tensor]): State dict of mmdet's DINO
            (or of a GEM-DINO: MoE keys pass through unchanged, the routing
            table aside).

    Returns:
        dict[str, Tensor]: A state dict for ``model``.
    """
    from ..layers.moe_ffn import MoEFFN
    converted: Dict[str, Tensor] = {}
    dense_ffns: Dict[int, Dict[str, Tensor]] = defaultdict(dict)
    for key, value in dense_state_dict.items():
        if any(key.startswith(part) for part in OWN_KEYS):
            continue
        match = FFN_KEY.match(key)
        if match and int(match.group(1)) in model.moe_layers:
            dense_ffns[int(match.group(1))][match.group(2)] = value
        else:
            converted[key] = value
    for layer_id, ffn_state in dense_ffns.items():
        moe = model.decoder.layers[layer_id].ffn
        prefix = f'decoder.layers.{layer_id}.ffn.'
        if moe.owns_experts:  # e.g. muMoE's factors, set from the dense FFN
            for name, value in moe.router.upcycled_state(ffn_state).items():
                converted[prefix + 'router.' + name] = value
            continue
        with torch.no_grad():
            scratch = MoEFFN(
                moe.embed_dims,
                moe.feedforward_channels,
                num_experts=moe.num_experts)
            scratch.upcycle_from_ffn(ffn_state)
        for name in ('w1', 'b1', 'w2', 'b2'):
            converted[prefix + name] = getattr(scratch, name).data
    for key, value in model.state_dict().items():
        if key not in converted and any(part in key for part in GEM_ONLY_KEYS):
            converted[key] = value
    return converted


def load_dense_state_dict(model: nn.Module,
                          dense_state_dict: Dict[str, Tensor],
                          strict: bool = False) -> None:
    """Load a dense DINO state dict into ``model``, upcycling its MoE FFNs.

    Args:
        model (nn.Module): The MoE DINO.
        dense_state_dict (dict[str, Tensor]): State dict of mmdet's DINO.
        strict (bool): Raise on missing/unexpected/mismatched keys instead
            of logging them. Defaults to False.
    """
    load_state_dict(
        model,
        upcycle_state_dict(model, dense_state_dict),
        strict=strict,
        logger=MMLogger.get_current_instance())


def upcycle_from_checkpoint(model: nn.Module, filename: str) -> None:
    """Load a dense DINO checkpoint file with :func:`load_dense_state_dict`.

    Args:
        model (nn.Module): The MoE DINO.
        filename (str): Checkpoint path or URL (``state_dict`` inside or a
            bare state dict).
    """
    # the safe loader (weights_only=True with mmgem's allow-list)
    from mmgem.engine.runner.checkpoint_loading import load_checkpoint_file
    checkpoint = load_checkpoint_file(filename, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint)
    state_dict = {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in state_dict.items()
    }
    MMLogger.get_current_instance().info(
        f'{type(model).__name__}: upcycling {len(model.moe_ffns())} MoE '
        f'layer(s) from dense checkpoint {filename}')
    load_dense_state_dict(model, state_dict, strict=False)
