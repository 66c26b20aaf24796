# Copyright (c) mmgem contributors. All rights reserved.
"""The label space of every image of a multi-dataset detector.

:class:`DatasetLabelSpaceMixin` holds what :class:`GEMDINO` does with
labels, apart from its routing and plan:

- training (``dataset_aware``): each image is scored over its own dataset's
  range of the concatenated label space (``label_offsets``);
- test, ``test_label_space='dataset'``: the known (``test_dataset_known``)
  or predicted (domain classifier) dataset's range restricts the two-stage
  top-k and the class scores (``restrict_test_labels``);
- test, ``test_label_space='unified'``: no dataset decision on labels; the
  scores of the classes that share a name (:class:`~mmgem.utils.label_space.
  UnifiedLabelSpace`) are merged by their maximum and the predictions are
  labelled in the unified space (one label per class name).
"""
from typing import Mapping, Optional, Sequence

import torch
from mmdet.structures import OptSampleList, SampleList
from mmengine.structures import InstanceData
from torch import Tensor

from mmgem.utils.label_space import UnifiedLabelSpace

from ..utils.label_space import label_range_mask, label_ranges_of
from .routing_info import dataset_ids_from_samples

#: Values of ``test_label_space``.
TEST_LABEL_SPACES = ('dataset', 'unified')
#: ``pred_label_space`` of a prediction: the labels index the concatenated
#: space (``'concat'``) or the unified space by name (``'unified'``).
PRED_LABEL_SPACES = ('concat', 'unified')


class DatasetLabelSpaceMixin:
    """Label space of each image: dataset ranges and the unified space.

    The host class provides ``training``, ``num_datasets``,
    ``dataset_aware``, ``test_dataset_known``, ``restrict_test_labels``,
    ``test_label_space_cfg`` (None or one of :data:`TEST_LABEL_SPACES`) and
    the ``label_offsets`` buffer, and calls
    :meth:`set_unified_label_space` (with the datasets' class lists, or None
    for no name merging) in its constructor.
    """

    # ------------------------------------------------------------------
    # the unified space
    # ------------------------------------------------------------------
    def set_unified_label_space(
            self,
            dataset_classes: Optional[Sequence[Sequence[str]]],
            merge_table: Optional[Mapping[str, str]] = None) -> None:
        """Build the unified space from the datasets' class lists.

        Args:
            dataset_classes (Sequence[Sequence[str]], optional): The class
                names of every dataset in dataset order (their lengths must
                match ``label_offsets`` when set). None: no names, every
                concatenated label is its own unified class and predictions
                stay in the concatenated space (``pred_label_space``
                ``'concat'``; :class:`UODBMetric` maps them by name).
            merge_table (Mapping[str, str], optional): Synonyms (see
                :mod:`mmgem.utils.label_space`); None: the default (none).

        Raises:
            ValueError: If the class lists disagree with ``label_offsets``.
        """
        self.unified_label_space: Optional[UnifiedLabelSpace] = None
        self._unified_index: Optional[Tensor] = None
        if dataset_classes is None:
            return
        space = UnifiedLabelSpace(dataset_classes, merge_table=merge_table)
        if space.num_datasets != self.num_datasets:
            raise ValueError(f'dataset_classes has {space.num_datasets} class lists for '
                             f'num_datasets={self.num_datasets}')
        if self.has_label_offsets() and space.label_offsets.tolist() != \
                self.label_offsets.tolist():
            raise ValueError(
                f'dataset_classes give the label offsets {space.label_offsets.tolist()}, '
                f'but the model has label_offsets {self.label_offsets.tolist()}')
        self.unified_label_space = space
        self._unified_index = torch.from_numpy(space.concat_to_unified)

    @property
    def test_label_space(self) -> str:
        """str: ``'dataset'`` or ``'unified'``; by default (config None)
        ``'dataset'`` when the dataset is known and ``'unified'`` when not."""
        if self.test_label_space_cfg is not None:
            return self.test_label_space_cfg
        return 'dataset' if self.test_dataset_known else 'unified'

    @property
    def pred_label_space(self) -> str:
        """str: The label space of this model's test predictions."""
        if self.training or self.test_label_space == 'dataset':
            return 'concat'
        return 'concat' if self.unified_label_space is None else 'unified'

    def unify_class_scores(self, cls_scores: Tensor) -> Tensor:
        """Merge the logits of same-named classes by their maximum.

        The maximum is written at the first concatenated label of every
        unified class (its representative); the other members are set to
        ``-inf``, so mmdet's post-processing sees each name once.
        :meth:`to_unified_labels` then relabels the kept boxes.

        Args:
            cls_scores (Tensor): ``(..., num_classes)`` logits.

        Returns:
            Tensor: Logits of the same shape.
        """
        if self.unified_label_space is None:
            return cls_scores
        space = self.unified_label_space
        index = self._unified_index.to(cls_scores.device)
        index = index.expand(*cls_scores.shape[:-1], -1)
        merged = cls_scores.new_full((*cls_scores.shape[:-1], space.num_unified),
                                     float('-inf'))
        merged = merged.scatter_reduce(-1, index, cls_scores, reduce='amax')
        out = torch.full_like(cls_scores, float('-inf'))
        reps = torch.from_numpy(space.representatives()).to(cls_scores.device)
        out[..., reps] = merged
        return out

    def to_unified_labels(self, results: InstanceData) -> InstanceData:
        """Relabel post-processed predictions in the unified space.

        Boxes whose label is not a unified class's representative (their
        logit was ``-inf``) are dropped.

        Args:
            results (InstanceData): With ``labels`` in the concatenated space.

        Returns:
            InstanceData: With ``labels`` in the unified space.
        """
        if self.unified_label_space is None:
            return results
        space = self.unified_label_space
        labels = results.labels
        rep = torch.zeros(space.num_concat, dtype=torch.bool, device=labels.device)
        rep[torch.from_numpy(space.representatives()).to(labels.device)] = True
        results = results[rep[labels]]
        results.labels = self._unified_index.to(labels.device)[results.labels]
        return results

    # ------------------------------------------------------------------
    # dataset ranges of the concatenated space
    # ------------------------------------------------------------------
    def label_dataset_ids(self,
                          batch_data_samples: OptSampleList,
                          domain_logits: Optional[Tensor] = None
                          ) -> Optional[Tensor]:
        """The dataset whose label range each image is trained / tested in.

        - training with ``dataset_aware``: the true dataset (metainfo);
        - test with ``test_label_space='unified'``: None (no dataset
          decision on labels);
        - test with ``restrict_test_labels`` and ``test_dataset_known``: the
          true dataset;
        - test with ``restrict_test_labels``, dataset unknown: the domain
          classifier's prediction (the metainfo is not read);
        - otherwise None (all classes), also at test time without data
          samples (``mode='tensor'``).

        Args:
            batch_data_samples (list[DetDataSample], optional): The batch.
            domain_logits (Tensor, optional): ``(bs, num_datasets)`` domain
                classifier logits; needed only when the dataset is unknown.

        Returns:
            Tensor or None: ``(bs,)`` int64 dataset ids, or None.
        """
        if self.training:
            use_known = self.dataset_aware
        elif self.test_label_space == 'unified' or not self.restrict_test_labels:
            return None
        else:
            use_known = self.test_dataset_known
        if use_known:
            if batch_data_samples is None:
                if not self.training:  # tensor mode without samples
                    return None
                raise ValueError(
                    'GEMDINO needs the batch data samples (dataset_id) to '
                    'restrict each image to its dataset\'s labels')
            return dataset_ids_from_samples(batch_data_samples,
                                            self.num_datasets)
        if self.training or domain_logits is None:
            return None
        return domain_logits.argmax(dim=1)

    def label_ranges(self, dataset_ids: Optional[Tensor]) -> Optional[Tensor]:
        """Label range of each image from its dataset id.

        Args:
            dataset_ids (Tensor, optional): ``(bs,)`` dataset ids.

        Returns:
            Tensor or None: ``(bs, 2)`` int64 ``[low, high)`` ranges on the
            model's device; None if ``dataset_ids`` is None.

        Raises:
            RuntimeError: If the label offsets are not set.
        """
        if dataset_ids is None:
            return None
        if not self.has_label_offsets():
            raise RuntimeError(
                'label_offsets are not set, so images cannot be restricted '
                'to their dataset\'s labels: give the model `label_offsets` '
                '(UODBDataset.label_offsets) in the config or let '
                'GEMPlannerHook install them; or set dataset_aware=False and '
                'restrict_test_labels=False')
        return label_ranges_of(self.label_offsets, dataset_ids)

    @staticmethod
    def _check_gt_labels(batch_data_samples: SampleList,
                         label_ranges: Tensor) -> None:
        """Raise if a ground-truth label is outside its image's range."""
        labels = [s.gt_instances.labels for s in batch_data_samples]
        counts = torch.tensor([len(x) for x in labels])
        if int(counts.sum()) == 0:
            return
        all_labels = torch.cat(labels).to(label_ranges.device)
        ranges = torch.repeat_interleave(
            label_ranges, counts.to(label_ranges.device), dim=0)
        bad = (all_labels < ranges[:, 0]) | (all_labels >= ranges[:, 1])
        if not bool(bad.any()):
            return
        first = int(bad.nonzero()[0])
        image = int((counts.cumsum(0) <= first).sum())
        meta = batch_data_samples[image].metainfo
        low, high = label_ranges[image].tolist()
        raise ValueError(
            f'image {meta.get("img_path", meta.get("img_id", image))} of '
            f'dataset_id {meta.get("dataset_id")} has ground-truth label '
            f'{int(all_labels[first])} outside its dataset\'s label range '
            f'[{low}, {high}): check the model\'s label_offsets against '
            'UODBDataset.label_offsets')

    def restrict_class_scores(self, cls_scores: Tensor,
                              dataset_ids: Tensor) -> Tensor:
        """Set class logits outside each image's dataset range to ``-inf``.

        Args:
            cls_scores (Tensor): ``(..., bs, num_queries, num_classes)``
                logits.
            dataset_ids (Tensor): ``(bs,)`` dataset of each image.

        Returns:
            Tensor: The masked logits.
        """
        ranges = self.label_ranges(dataset_ids).to(cls_scores.device)
        allowed = label_range_mask(ranges, cls_scores.size(-1))
        return cls_scores.masked_fill(~allowed[:, None, :], float('-inf'))

    def test_class_scores(self, cls_scores: Tensor,
                          dataset_ids: Optional[Tensor]) -> Tensor:
        """The test logits in this model's test label space.

        Args:
            cls_scores (Tensor): ``(..., bs, num_queries, num_classes)``
                logits.
            dataset_ids (Tensor, optional): ``(bs,)`` dataset of each image
                (:meth:`label_dataset_ids`), None for no restriction.

        Returns:
            Tensor: Restricted to the dataset ranges, or merged by name.
        """
        if dataset_ids is not None:
            return self.restrict_class_scores(cls_scores, dataset_ids)
        if self.pred_label_space == 'unified':
            return self.unify_class_scores(cls_scores)
        return cls_scores

    def test_results(self, results_list: list,
                     dataset_ids: Optional[Tensor]) -> list:
        """Post-processed predictions in this model's test label space:
        boxes outside their image's range dropped, or relabelled unified.

        Args:
            results_list (list[InstanceData]): The head's predictions.
            dataset_ids (Tensor, optional): As in :meth:`test_class_scores`.

        Returns:
            list[InstanceData]: The predictions.
        """
        if dataset_ids is not None:
            ranges = self.label_ranges(dataset_ids).tolist()
            out = []
            for (low, high), results in zip(ranges, results_list):
                keep = (results.labels >= low) & (results.labels < high)
                out.append(results[keep])
            return out
        if self.pred_label_space == 'unified':
            return [self.to_unified_labels(r) for r in results_list]
        return results_list

    def unified_class_names(self) -> Optional[tuple]:
        """tuple[str] or None: The unified names, if the space has names."""
        space = self.unified_label_space
        return None if space is None else space.names

