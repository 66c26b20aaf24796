# Copyright (c) mmgem contributors. All rights reserved.
"""Fixed-weight, fixed-input runs of the MoE layer and of GEM-DINO per router.

The fixtures under ``tests/fixtures/routers/`` were captured with this module
from the code *before* routing became pluggable (``MoEFFN(routing='gem' |
'damex' | 'moe')``, commit eda3db0): outputs, auxiliary losses, routing
statistics, the detector's loss dict and every gradient. The tests compare
today's routers to them with ``torch.equal`` (bit-identical), so a refactor
of the routing cannot change a number unnoticed.

Re-capture (only when a change of the numbers is intended)::

    PYTHONPATH=$PWD python tests/models/router_fixtures.py
"""
import hashlib
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import torch

FIXTURE_DIR = Path(__file__).resolve().parents[1] / 'fixtures' / 'routers'
#: (case name, MoEFFN kwargs of the legacy API, router config of the new API).
LAYER_CASES = (
    ('gem', dict(routing='gem'), dict(type='GEMRouter')),
    ('damex', dict(routing='damex'), dict(type='DAMEXRouter')),
    ('moe_tutel', dict(routing='moe'), dict(type='Top1Router')),
    ('moe_vmoe', dict(routing='moe', balance_loss='vmoe'),
     dict(type='Top1Router', balance_loss='vmoe')),
    ('moe_position', dict(routing='moe', capacity_priority='position',
                          capacity_factor=1.0),
     dict(type='Top1Router')),
)
#: Layer options (dispatch, not routing) of the new API per case.
LAYER_DISPATCH = dict(moe_position=dict(capacity_priority='position',
                                        capacity_factor=1.0))
DETECTOR_CASES = (('gem', dict(type='GEMRouter')),
                  ('damex', dict(type='DAMEXRouter')),
                  ('moe', dict(type='Top1Router')))
IMAGE_EXPERTS = (2, 0, 2)
PLAN = np.array([[3, 2, 0, 0], [0, 0, 4, 1]])


def layer_inputs():
    """Tokens ``(3, 5, 16)`` and a foreground mask ``(3, 5)``."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 5, 16, generator=gen)
    mask = torch.rand(3, 5, generator=gen) > 0.4
    return x, mask


def run_layer(layer_kwargs: Dict) -> Dict[str, torch.Tensor]:
    """Build a seeded ``MoEFFN(16, 32, 4)``, run train + eval, return all.

    Args:
        layer_kwargs (dict): Routing kwargs of the layer.

    Returns:
        dict[str, Tensor]: Outputs, loss, statistics and gradients.
    """
    from mmgem.models.layers import BatchRouting, MoEFFN
    torch.manual_seed(0)
    layer = MoEFFN(16, 32, num_experts=4, **layer_kwargs)
    x, mask = layer_inputs()
    x.requires_grad_(True)
    routing = BatchRouting(image_experts=torch.tensor(IMAGE_EXPERTS),
                           dataset_ids=torch.tensor([0, 1, 0]))
    layer.train()
    torch.manual_seed(1)
    out = layer(x, routing=routing)
    result = dict(train_out=out.detach().clone())
    loss = out.square().mean()
    aux = layer.aux_loss(mask)
    if aux is not None:
        result['aux_loss'] = aux.detach().clone()
        loss = loss + aux
    for key, value in layer.routing_stats.items():
        result[f'train_stats.{key}'] = value.detach().clone()
    loss.backward()
    result['grad.x'] = x.grad.clone()
    for name, param in layer.named_parameters():
        if param.grad is not None:
            result[f'grad.{name}'] = param.grad.clone()
    layer.eval()
    with torch.no_grad():
        result['eval_out'] = layer(x, routing=routing).clone()
    for key, value in layer.routing_stats.items():
        result[f'eval_stats.{key}'] = value.detach().clone()
    return result


def run_detector(model_kwargs: Dict) -> Dict[str, torch.Tensor]:
    """Train-step losses and gradients of the tiny GEM-DINO of the tests.

    Args:
        model_kwargs (dict): Routing kwargs of the detector.

    Returns:
        dict[str, Tensor]: Every loss-dict value and every gradient.
    """
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_gem_dino import OFFSETS, _batch, _build, _gem_cfg
    model = _build(_gem_cfg(num_experts=4, num_datasets=2,
                            label_offsets=OFFSETS, **model_kwargs))
    model.install_plan(PLAN, None, 'fixture', dataset_names=['set0', 'set1'])
    model.train()
    inputs, samples = _batch(model, [0, 1, 1], training=True)
    torch.manual_seed(3)
    losses = model.loss(inputs, samples)
    result = {f'loss.{k}': v.detach().clone() for k, v in losses.items()
              if isinstance(v, torch.Tensor)}
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        if '.router.' in name:
            result[f'grad.{name}'] = param.grad.clone()
        else:  # the rest by digest: bit-identity in 32 bytes
            result[f'grad_sha256.{name}'] = tensor_digest(param.grad)
    return result


def tensor_digest(tensor: torch.Tensor) -> torch.Tensor:
    """SHA-256 of a tensor's dtype, shape and bytes, as ``(32,)`` uint8."""
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(
        f'{data.dtype}{tuple(data.shape)}'.encode() +
        data.view(torch.uint8).numpy().tobytes()).digest()
    return torch.frombuffer(bytearray(digest), dtype=torch.uint8)


def capture() -> None:
    """Write ``layer_<case>.pt`` and ``detector_<case>.pt``."""
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    for name, legacy, _ in LAYER_CASES:
        torch.save(run_layer(legacy), FIXTURE_DIR / f'layer_{name}.pt')
    for name, _ in DETECTOR_CASES:
        torch.save(run_detector(dict(routing=name)),
                   FIXTURE_DIR / f'detector_{name}.pt')


if __name__ == '__main__':
    capture()
