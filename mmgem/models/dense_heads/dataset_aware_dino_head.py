# Copyright (c) mmgem contributors. All rights reserved.
"""DINO's head with one label space per image in its classification losses."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.dense_heads import DINOHead
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import InstanceList, OptInstanceList
from mmengine.structures import InstanceData
from torch import Tensor

from ..utils.label_space import label_range_mask

LABEL_RANGE_KEY = 'label_range'


@MODELS.register_module()
class DatasetAwareDINOHead(DINOHead):
    """:class:`DINOHead` whose classification losses see only each image's
    own label range.

    In multi-dataset training the label space is the concatenation of the
    datasets' label sets, and an image is annotated for its own dataset's
    classes only: a COCO image says nothing about VOC's "person" or KITTI's
    "car". mmdet's DINO would treat every other dataset's class as a negative
    of every query. With ``label_ranges`` given to :meth:`loss` (or a
    ``'label_range'`` ``(low, high)`` entry in each image's meta given to
    :meth:`loss_by_feat`), the sigmoid focal loss of an image runs over its
    own labels ``[low, high)`` only: the other classes get weight 0 (they are
    neither positives nor negatives, and their logits get exactly zero
    gradient) in every decoder layer, in the encoder (two-stage) output and in
    the denoising queries. The normalisation (number of positives) is
    DINO's, so an image whose range is the whole label space has DINO's loss.

    The mask is a per-element ``(num_queries, num_classes)`` label weight,
    which mmdet's :class:`FocalLoss` applies elementwise on both of its code
    paths (the mmcv CUDA op on GPU and the python implementation on CPU).
    The Hungarian matching needs no change: mmdet's ``FocalLossCost`` reads
    only the columns of the image's ground-truth labels, which lie in its
    range (``test_matching_reads_only_the_ground_truth_classes`` in
    ``tests/models/test_dataset_aware_head.py`` checks that other
    classes' logits do not change the assignment).

    Without label ranges the head is exactly :class:`DINOHead`.

    After every :meth:`loss_by_feat` call, :attr:`last_matched_query_mask` is
    a ``(bs, num_matching_queries)`` bool tensor: True at the matching
    queries that the last decoder layer's Hungarian assignment matched to a
    ground-truth box (denoising queries are not included), DAMEX's
    foreground tokens.

    Args:
        *args, **kwargs: Those of :class:`DINOHead`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.last_matched_query_mask: Optional[Tensor] = None
        self._assignments: Optional[List[Tensor]] = None

    def loss(self,
             hidden_states: Tensor,
             references: List[Tensor],
             enc_outputs_class: Tensor,
             enc_outputs_coord: Tensor,
             batch_data_samples: SampleList,
             dn_meta: Dict[str, int],
             label_ranges: Optional[Tensor] = None) -> dict:
        """DINO's losses, restricted to each image's label range.

        Args:
            hidden_states, references, enc_outputs_class, enc_outputs_coord,
                batch_data_samples, dn_meta: As in :meth:`DINOHead.loss`.
            label_ranges (Tensor, optional): ``(bs, 2)`` int64 ``[low, high)``
                label range of each image. None gives DINO's losses over all
                classes. Defaults to None.

        Returns:
            dict[str, Tensor]: DINO's loss components.
        """
        batch_gt_instances = []
        batch_img_metas = []
        for i, data_sample in enumerate(batch_data_samples):
            meta = data_sample.metainfo
            if label_ranges is not None:
                meta = dict(meta, **{LABEL_RANGE_KEY: label_ranges[i]})
            batch_img_metas.append(meta)
            batch_gt_instances.append(data_sample.gt_instances)
        outs = self(hidden_states, references)
        return self.loss_by_feat(*outs, enc_outputs_class, enc_outputs_coord,
                                 batch_gt_instances, batch_img_metas, dn_meta)

    def loss_by_feat(
        self,
        all_layers_cls_scores: Tensor,
        all_layers_bbox_preds: Tensor,
        enc_cls_scores: Tensor,
        enc_bbox_preds: Tensor,
        batch_gt_instances: InstanceList,
        batch_img_metas: List[dict],
        dn_meta: Dict[str, int],
        batch_gt_instances_ignore: OptInstanceList = None
    ) -> Dict[str, Tensor]:
        """DINO's loss, masked by the metas' label ranges; records matches.

        Args:
            all_layers_cls_scores, all_layers_bbox_preds, enc_cls_scores,
                enc_bbox_preds, batch_gt_instances, dn_meta,
                batch_gt_instances_ignore: As in
                :meth:`DINOHead.loss_by_feat`.
            batch_img_metas (list[dict]): Meta information of each image;
                with a ``'label_range'`` (``(low, high)``) in every meta the
                classification losses run over that range only.

        Returns:
            dict[str, Tensor]: DINO's loss components.
        """
        with_ranges = [LABEL_RANGE_KEY in meta for meta in batch_img_metas]
        if any(with_ranges):
            if not all(with_ranges):
                raise ValueError(
                    f'{len(with_ranges) - sum(with_ranges)} of '
                    f'{len(with_ranges)} image metas lack a '
                    f"'{LABEL_RANGE_KEY}': give every image of the batch a "
                    'label range, or none')
            if not isinstance(self.loss_cls, FocalLoss):
                raise ValueError(
                    f'{type(self).__name__} masks the classification loss '
                    'per class, which needs mmdet\'s FocalLoss (elementwise '
                    f'weights); loss_cls is {type(self.loss_cls).__name__}')
        self._assignments = []
        try:
            losses = super().loss_by_feat(
                all_layers_cls_scores, all_layers_bbox_preds, enc_cls_scores,
                enc_bbox_preds, batch_gt_instances, batch_img_metas, dn_meta,
                batch_gt_instances_ignore)
            assignments = self._assignments
        finally:
            self._assignments = None
        # DETRHead.loss_by_feat assigns decoder layers 0..L-1 in order, then
        # DINOHead.loss_by_feat the encoder output
        num_layers = all_layers_cls_scores.size(0)
        expected = num_layers + int(enc_cls_scores is not None)
        if len(assignments) != expected:
            raise RuntimeError(
                f'expected {expected} Hungarian assignments ({num_layers} '
                f'decoder layers + encoder), mmdet made {len(assignments)}')
        self.last_matched_query_mask = assignments[num_layers - 1]
        return losses

    def get_targets(self, cls_scores_list: List[Tensor],
                    bbox_preds_list: List[Tensor],
                    batch_gt_instances: InstanceList,
                    batch_img_metas: List[dict]) -> tuple:
        """DETR's matching targets; records which queries were matched.

        Args:
            cls_scores_list, bbox_preds_list, batch_gt_instances,
                batch_img_metas: As in ``DETRHead.get_targets``.

        Returns:
            tuple: As ``DETRHead.get_targets``.
        """
        targets = super().get_targets(cls_scores_list, bbox_preds_list,
                                      batch_gt_instances, batch_img_metas)
        if self._assignments is not None:
            self._assignments.append(
                torch.stack([labels < self.num_classes
                             for labels in targets[0]]))
        return targets

    def _get_targets_single(self, cls_score: Tensor, bbox_pred: Tensor,
                            gt_instances: InstanceData,
                            img_meta: dict) -> tuple:
        """DETR's targets of one image, label weights masked by its range.

        Args:
            cls_score, bbox_pred, gt_instances, img_meta: As in
                ``DETRHead._get_targets_single``.

        Returns:
            tuple: As ``DETRHead._get_targets_single``; with a label range in
            ``img_meta`` the label weights are ``(num_queries, num_classes)``.
        """
        targets = super()._get_targets_single(cls_score, bbox_pred,
                                              gt_instances, img_meta)
        return self._mask_label_weights(targets, img_meta)

    def _get_dn_targets_single(self, gt_instances: InstanceData,
                               img_meta: dict, dn_meta: Dict[str,
                                                             int]) -> tuple:
        """DINO's denoising targets of one image, masked by its range.

        Args:
            gt_instances, img_meta, dn_meta: As in
                ``DINOHead._get_dn_targets_single``.

        Returns:
            tuple: As ``DINOHead._get_dn_targets_single``; with a label range
            in ``img_meta`` the label weights are ``(num_denoising_queries,
            num_classes)``.
        """
        targets = super()._get_dn_targets_single(gt_instances, img_meta,
                                                 dn_meta)
        return self._mask_label_weights(targets, img_meta)

    def _mask_label_weights(self, targets: Sequence[Tensor],
                            img_meta: dict) -> Tuple[Tensor, ...]:
        """Expand ``(N,)`` label weights to ``(N, C)`` zero outside the range.

        Args:
            targets (Sequence[Tensor]): ``(labels, label_weights, ...)``.
            img_meta (dict): Meta of the image, maybe with a label range.

        Returns:
            tuple[Tensor]: The targets with masked label weights.
        """
        label_range = img_meta.get(LABEL_RANGE_KEY)
        if label_range is None:
            return tuple(targets)
        labels, label_weights, *rest = targets
        label_range = torch.as_tensor(
            label_range, dtype=torch.long, device=label_weights.device)
        mask = label_range_mask(label_range.view(1, 2), self.num_classes)
        label_weights = label_weights[:, None] * mask.to(label_weights.dtype)
        return (labels, label_weights, *rest)
