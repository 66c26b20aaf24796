# Copyright (c) mmgem contributors. All rights reserved.
"""PyTorch kernels on CUDA for an mmcv built without its CUDA ops.

An mmcv built without CUDA ops (e.g. when ``tools/gpu_smoke.sh`` cannot
compile them in time) has no kernel for CUDA tensors; DINO then needs mmcv's
pure-PyTorch multi-scale deformable attention and mmdet's PyTorch sigmoid
focal loss on CUDA. Both compute the same functions, more slowly.

This is the one change of another package's module state that mmgem makes,
and only when asked: :class:`~mmgem.engine.runner.GEMRunner` applies
:func:`use_pure_pytorch_ops` when it is built with the environment variable
``MMGEM_PURE_PYTORCH_OPS=1``. It sets
``mmcv.ops.multi_scale_deform_attn.IS_CUDA_AVAILABLE = False`` and
``mmdet.models.losses.focal_loss.sigmoid_focal_loss``, for the rest of the
process, and logs that it did.
"""
import logging
import os

from mmengine.logging import print_log

PURE_PYTORCH_OPS_ENV = 'MMGEM_PURE_PYTORCH_OPS'


def _py_sigmoid_focal_loss_on_labels(pred, target, weight=None, gamma=2.0,
                                     alpha=0.25, reduction='mean',
                                     avg_factor=None):
    """mmdet's ``sigmoid_focal_loss`` (label targets) with PyTorch ops."""
    import torch.nn.functional as F
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    num_classes = pred.size(1)
    one_hot = F.one_hot(target, num_classes=num_classes + 1)[:, :num_classes]
    return py_sigmoid_focal_loss(pred, one_hot.type_as(pred), weight,
                                 gamma=gamma, alpha=alpha,
                                 reduction=reduction, avg_factor=avg_factor)


def pure_pytorch_ops_requested() -> bool:
    """bool: Whether ``MMGEM_PURE_PYTORCH_OPS=1`` is set."""
    return os.environ.get(PURE_PYTORCH_OPS_ENV) == '1'


def use_pure_pytorch_ops() -> bool:
    """Use PyTorch kernels where DINO would call mmcv's CUDA ops.

    Returns:
        bool: Whether the kernels were switched by this call (False when
        they already were).
    """
    from mmcv.ops import multi_scale_deform_attn
    from mmdet.models.losses import focal_loss
    if focal_loss.sigmoid_focal_loss is _py_sigmoid_focal_loss_on_labels:
        return False
    multi_scale_deform_attn.IS_CUDA_AVAILABLE = False
    focal_loss.sigmoid_focal_loss = _py_sigmoid_focal_loss_on_labels
    print_log(
        f'{PURE_PYTORCH_OPS_ENV}=1: multi-scale deformable attention and the '
        'sigmoid focal loss run as PyTorch code (mmcv without CUDA ops)',
        logger='current', level=logging.WARNING)
    return True
