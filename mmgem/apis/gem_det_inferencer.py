# Copyright (c) mmgem contributors. All rights reserved.
"""mmdet's ``DetInferencer`` for GEM-DINO: dataset known or unknown."""
import copy
import os.path as osp
from typing import Dict, Optional, Tuple

import mmengine
import torch.nn as nn
from mmdet.apis import DetInferencer
from mmdet.registry import DATASETS, MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import ConfigType
from mmengine.dataset import Compose

from mmgem.engine.runner.checkpoint_loading import load_checkpoint_file

#: ``dataset=`` of a call not given: use the inferencer's default.
_DEFAULT = object()
#: Metainfo keys the model reads to route an image.
ROUTING_META_KEYS = ('img_id', 'dataset_id', 'dataset_name')


class InferenceDatasetInfo:
    """Pipeline step giving inference inputs what a UODB sample carries.

    Sets ``dataset_id`` / ``dataset_name`` when a dataset is selected
    (``self.dataset``), and an ``img_id`` (the image path, or
    ``'input_<n>'`` for arrays) that GEM hashes to the image's expert shard.
    """

    def __init__(self) -> None:
        self.dataset: Optional[Tuple[int, str]] = None
        self.num_arrays = 0

    def __call__(self, results: dict) -> dict:
        if self.dataset is not None:
            results['dataset_id'], results['dataset_name'] = self.dataset
        if results.get('img_id') is None:
            if results.get('img_path'):
                results['img_id'] = results['img_path']
            else:
                results['img_id'] = f'input_{self.num_arrays}'
                self.num_arrays += 1
        return results


class GEMDetInferencer(DetInferencer):
    """``DetInferencer`` for multi-dataset models such as ``GEMDINO``.

    mmdet's ``DetInferencer`` on a GEM config fails: its images carry no
    ``dataset_id``, which the model needs to route them and to restrict its
    labels, and without weights it labels the classes with COCO's names.
    This subclass

    - with the dataset unknown (``dataset=None``:
      ``test_dataset_known=False``, the dataset-unknown protocol) labels the
      detections in the model's unified label space by class name (no
      dataset decision on labels; GEM's domain classifier only picks the
      plan row that routes the image), or with a given dataset
      (``dataset='natural'``: the dataset-known protocol, UODB's
      per-dataset evaluation) routes by it and labels in its classes, per
      inferencer or per call;
    - takes the class and dataset names from the checkpoint's
      ``dataset_meta`` or, without one, from the config's test dataset
      (no COCO fallback);
    - adds ``dataset_id``, ``dataset_name`` (given, else the domain
      classifier's guess, which routed the image; ``dataset_predicted``
      says which), ``label_space`` (``'concat'`` or ``'unified'``) and
      ``label_names`` (``'<dataset>/<class>'``, or the unified class names)
      to each prediction dict, and draws unified labels by their names.

    Models without MoE routing (dense DINO) work alike, without the routing.

    Args:
        model (str, optional): Config path, or None to read the config
            from ``weights``.
        weights (str, optional): Checkpoint path. Without weights, the model
            needs ``model.plan_file`` to route (``routing='gem'``).
        dataset (str | int, optional): Default dataset of the images (name
            or id); None: unknown, predicted. Defaults to None.
        device (str, optional): Device; None picks one.
        scope (str, optional): Registry scope. Defaults to ``'mmdet'``.
        palette (str): Palette of the drawn boxes. Defaults to ``'none'``.
        show_progress (bool): Show a progress bar. Defaults to True.

    Examples:
        >>> from mmgem.apis import GEMDetInferencer
        >>> inferencer = GEMDetInferencer(
        ...     'configs/gem/gem-dino-tiny_r18_mini-uodb.py', 'iter_400.pth')
        >>> inferencer('img.jpg', dataset='natural', out_dir='outputs/')
    """

    def __init__(self,
                 model: Optional[str] = None,
                 weights: Optional[str] = None,
                 dataset=None,
                 device: Optional[str] = None,
                 scope: Optional[str] = 'mmdet',
                 palette: str = 'none',
                 show_progress: bool = True) -> None:
        self._dataset_info = InferenceDatasetInfo()
        super().__init__(model=model, weights=weights, device=device, scope=scope,
                         palette=palette, show_progress=show_progress)
        self.dataset = self.resolve_dataset(dataset)

    # ------------------------------------------------------------------
    # set-up
    # ------------------------------------------------------------------
    def _init_model(self, cfg: ConfigType, weights: Optional[str],
                    device: str = 'cpu') -> nn.Module:
        """Build the model and load ``weights`` without unsafe unpickling.

        As mmengine's ``BaseInferencer._init_model``, but the checkpoint is
        read by :func:`~mmgem.engine.runner.load_checkpoint_file`
        (``weights_only=True`` with mmgem's allow-list) and the config must
        be given.

        Args:
            cfg (ConfigType): The config.
            weights (str, optional): The checkpoint.
            device (str): Device of the model.

        Returns:
            nn.Module: The model, in eval mode.
        """
        if not cfg:
            raise ValueError('GEMDetInferencer needs the config (model=...)')
        checkpoint = None if weights is None else load_checkpoint_file(
            weights, map_location='cpu')
        if cfg.model.get('pretrained') is not None:
            del cfg.model.pretrained
        model = MODELS.build(cfg.model)
        model.cfg = cfg
        self._load_weights_to_model(model, checkpoint, cfg)
        model.to(device)
        model.eval()
        return model

    def _load_weights_to_model(self, model: nn.Module, checkpoint: Optional[dict],
                               cfg: Optional[ConfigType]) -> None:
        """As ``DetInferencer``'s, with the config's UODB names as fallback."""
        super()._load_weights_to_model(model, checkpoint, cfg)
        if 'dataset_names' not in model.dataset_meta:
            test_dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
            test_dataset_cfg['lazy_init'] = True  # metainfo only
            metainfo = DATASETS.build(test_dataset_cfg).metainfo
            if 'dataset_names' in metainfo:
                palette = model.dataset_meta.get('palette')
                model.dataset_meta = copy.deepcopy(dict(metainfo))
                if palette is not None:
                    model.dataset_meta['palette'] = palette

    def _init_pipeline(self, cfg: ConfigType) -> Compose:
        """``DetInferencer``'s pipeline, with :class:`InferenceDatasetInfo`
        before the packing step and the routing keys in its ``meta_keys``."""
        pipeline = super()._init_pipeline(cfg)
        pack = pipeline.transforms[-1]
        if hasattr(pack, 'meta_keys'):
            pack.meta_keys = tuple(pack.meta_keys) + tuple(
                k for k in ROUTING_META_KEYS if k not in pack.meta_keys)
        pipeline.transforms.insert(len(pipeline.transforms) - 1, self._dataset_info)
        return pipeline

    @property
    def dataset_names(self) -> Tuple[str, ...]:
        """tuple[str]: The model's datasets, in id order (empty if unknown)."""
        return tuple((self.model.dataset_meta or {}).get('dataset_names', ()))

    def resolve_dataset(self, dataset) -> Optional[Tuple[int, str]]:
        """``'natural'`` or ``0`` -> ``(0, 'natural')``; None stays None.

        Args:
            dataset (str | int | None): A dataset name or id.

        Returns:
            tuple[int, str] | None: Its id and name.
        """
        if dataset is None:
            return None
        names = self.dataset_names
        if isinstance(dataset, str) and dataset in names:
            return names.index(dataset), dataset
        if isinstance(dataset, int) and 0 <= dataset < len(names):
            return dataset, names[dataset]
        raise ValueError(f'GEMDetInferencer: unknown dataset {dataset!r}; the model knows '
                         f'{list(names) or "no dataset names"} (names or ids 0..{len(names) - 1})')

    # ------------------------------------------------------------------
    # calls
    # ------------------------------------------------------------------
    def __call__(self, inputs, dataset=_DEFAULT, **kwargs) -> dict:
        """Run ``DetInferencer.__call__`` with the images' dataset set.

        Args:
            inputs: Image paths, arrays or a folder, as ``DetInferencer``.
            dataset (str | int | None): Dataset of these images; None:
                unknown (unified labels; GEM routes by the domain
                classifier's guess); not given:
                the inferencer's ``dataset``.
            **kwargs: ``DetInferencer.__call__``'s arguments (``out_dir``,
                ``pred_score_thr``, ``batch_size``, ...).

        Returns:
            dict: ``predictions`` and ``visualization``, as ``DetInferencer``.
        """
        selected = self.dataset if dataset is _DEFAULT else self.resolve_dataset(dataset)
        model = self.model
        plan_at_test = getattr(getattr(model, 'router_cls', None), 'needs_plan_at_test', False)
        if selected is None and plan_at_test and getattr(
                model, 'domain_classifier', None) is None:
            raise ValueError(
                'GEMDetInferencer: the dataset of the images is unknown and the model has no '
                'domain classifier to predict it; pass dataset=<one of '
                f'{list(self.dataset_names)}>')
        had_known = getattr(model, 'test_dataset_known', None)
        self._dataset_info.dataset = selected
        if had_known is not None:
            model.test_dataset_known = selected is not None
        try:
            return super().__call__(inputs, **kwargs)
        finally:
            self._dataset_info.dataset = None
            if had_known is not None:
                model.test_dataset_known = had_known

    def pred2dict(self, data_sample: DetDataSample, pred_out_dir: str = '') -> Dict:
        """``DetInferencer.pred2dict`` plus the image's dataset and label names.

        Args:
            data_sample (DetDataSample): A prediction.
            pred_out_dir (str): Where to save it (as ``DetInferencer``).

        Returns:
            dict: ``labels``, ``scores``, ``bboxes``, and ``dataset_id``,
            ``dataset_name`` (given, else predicted, else None),
            ``dataset_predicted``, ``label_space`` and ``label_names``.
        """
        result = super().pred2dict(data_sample, '')
        names = self.dataset_names
        given = data_sample.metainfo.get('dataset_id')
        dataset_id = given if given is not None else data_sample.get('pred_dataset_id')
        result['dataset_id'] = None if dataset_id is None else int(dataset_id)
        result['dataset_name'] = (names[result['dataset_id']]
                                  if dataset_id is not None and names else None)
        result['dataset_predicted'] = given is None and dataset_id is not None
        result['label_space'] = data_sample.get('pred_label_space', 'concat')
        classes = self._class_names(result['label_space'])
        if classes is not None and 'labels' in result:
            result['label_names'] = [classes[i] for i in result['labels']]
        if pred_out_dir:
            self._save_pred(data_sample, result, pred_out_dir)
        return result

    def _class_names(self, label_space: str) -> Optional[Tuple[str, ...]]:
        """The names of the labels of ``label_space`` (None if unknown)."""
        if label_space == 'unified':
            return self.model.unified_class_names()
        return (self.model.dataset_meta or {}).get('classes')

    def visualize(self, inputs, preds, **kwargs):
        """``DetInferencer.visualize``, drawing unified labels by their names.

        Args:
            inputs, preds, **kwargs: As ``DetInferencer.visualize``.

        Returns:
            As ``DetInferencer.visualize``.
        """
        unified = any(p.get('pred_label_space') == 'unified' for p in preds)
        if self.visualizer is None or not unified:
            return super().visualize(inputs, preds, **kwargs)
        meta = self.visualizer.dataset_meta
        classes = self._class_names('unified')
        palette = (meta or {}).get('palette')
        self.visualizer.dataset_meta = dict(
            meta or {}, classes=classes,
            palette=palette if isinstance(palette, str) else 'random')
        try:
            return super().visualize(inputs, preds, **kwargs)
        finally:
            self.visualizer.dataset_meta = meta

    def _save_pred(self, data_sample: DetDataSample, result: Dict, pred_out_dir: str) -> None:
        """Write the prediction dict as ``DetInferencer`` names it, in
        ``preds/<dataset>/`` when the dataset was given."""
        if 'img_path' in data_sample:
            stem = osp.splitext(osp.basename(data_sample.img_path))[0]
        else:
            stem = str(self.num_predicted_imgs)
            self.num_predicted_imgs += 1
        if data_sample.metainfo.get('dataset_name'):
            stem = osp.join(data_sample.metainfo['dataset_name'], stem)
        mmengine.dump(result, osp.join(pred_out_dir, 'preds', stem + '.json'))
