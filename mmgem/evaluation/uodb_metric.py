# Copyright (c) mmgem contributors. All rights reserved.
"""Per-dataset COCO box AP on UODB, with the DAMEX Table 1 summary."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..utils.choices import check_choice
from ..utils.fileio import atomic_write
from ..utils.label_space import UnifiedLabelSpace
from .domain_confusion import domain_accuracy, domain_routing_shares, format_domain_confusion
from .functional import coco_box_ap, voc07_map
from .uodb_table import format_uodb_table

#: Values of ``UODBMetric(label_mapping=...)``.
LABEL_MAPPINGS = ('offset', 'name')


def _to_int(value) -> int:
    if hasattr(value, 'item'):
        value = value.item()
    return int(value)


@METRICS.register_module()
class UODBMetric(BaseMetric):
    """COCO box AP and AP50 of each UODB dataset, and their mean.

    Predictions are split by ``dataset_id`` and their labels mapped to
    dataset ``d``'s own label space (``label_mapping``):

    - ``'offset'`` (dataset known): labels of the concatenated space minus
      ``label_offsets[d]``; labels outside ``[label_offsets[d],
      label_offsets[d + 1])`` are dropped.
    - ``'name'`` (dataset unknown): every predicted label is read as its
      class name in the unified space (:class:`~mmgem.utils.label_space.
      UnifiedLabelSpace` of the datasets' class lists and ``merge_table``;
      a sample's ``pred_label_space`` says whether its labels are unified
      ids, as ``GEMDINO`` gives with the dataset unknown, or concatenated
      ones) and mapped to dataset ``d``'s class of that name; names that
      ``d`` does not annotate are dropped. A right box labelled with a
      sibling dataset's same-named class therefore scores.

    Each dataset is
    then evaluated by its own mmdet ``CocoMetric`` (pycocotools) against its
    own annotation file and class list, so the numbers are exactly what
    ``CocoMetric`` reports on that dataset alone.

    Everything about the datasets (names, class lists, offsets, annotation
    files, column titles) comes from the dataset's metainfo, which the runner
    hands over as ``dataset_meta`` (:class:`UODBDataset` puts it there).

    AP is COCO's AP@[.5:.95] (DAMEX Table 1); AP50 is COCO's AP at IoU 0.5
    (101-point interpolation, pycocotools). Both use at most ``max_dets``
    detections per image (100 by default, pycocotools' default, which DAMEX
    evaluates with; mmdet's ``CocoMetric`` default is 1000). Beside them,
    ``voc07_AP50`` is the VOC2007 11-point AP at IoU 0.5 with which UODB's
    own code scores every dataset (:mod:`mmgem.evaluation.functional.
    voc07_ap`; ``iscrowd`` boxes count as difficult). The table header
    names the protocol.

    Keys (with the default prefix ``uodb``), in this order: ``uodb/bbox_mAP``,
    ``uodb/bbox_mAP_50`` and (with ``voc07``) ``uodb/voc07_AP50`` (means over
    the datasets seen), then ``uodb/<name>_bbox_mAP``,
    ``uodb/<name>_bbox_mAP_50`` and ``uodb/<name>_voc07_AP50`` for every
    dataset seen. The mean comes first, so
    ``CheckpointHook(save_best='auto')`` (which takes the first key) keeps the
    best mean; each key has a single ``/``, so mmdet's ``analyze_logs.py
    plot_curve --keys bbox_mAP`` (which keeps the part after the last ``/``)
    plots the mean, and ``--keys <name>_bbox_mAP`` one dataset.

    Unseen domains (the leave-one-domain-out scenario): when the evaluated
    datasets are not the model's (a domain held out of training), give the
    model's datasets as ``model_dataset_names`` / ``model_dataset_classes``.
    Predicted labels and ``pred_dataset_id`` are then read in the *model's*
    label space (the labels must be unified ones, ``pred_label_space``
    ``'unified'``: a model testing with the dataset known would have indexed
    its tables with the sample's ``dataset_id``), and each evaluated dataset's
    classes are matched to it by name (so ``label_mapping`` must be
    ``'name'``): the unified space is built over the model's datasets
    followed by the evaluated ones, so the model's unified ids stay the same
    and a name only the held-out domain has never scores. A sample's
    ``dataset_id`` indexes the evaluated datasets only and is never read as
    one of the model's. The domain table then has one row per evaluated
    dataset and one column per model dataset (where the classifier routes
    the unseen domain), and the keys ``<name>_routed_<model dataset>``
    (percent of the images of ``name`` predicted as that dataset, for the
    datasets predicted at least once) replace ``domain_acc``.

    When the data samples carry ``pred_dataset_id`` (the domain classifier's
    guess of each image's dataset), also ``uodb/domain_acc`` (all images)
    and ``uodb/<name>_domain_acc`` (images of each dataset), in percent as
    the ``domain_acc`` GEMDINO logs in training, and the domain confusion
    matrix (true dataset x predicted dataset, image counts) is logged and
    written below the AP table.

    At the end it logs a markdown table in the layout of DAMEX Table 1 (one
    column per dataset and a ``Mean`` column, AP in percent) and writes it
    atomically to ``table_file``; by default to ``<work_dir>/uodb_table.md``,
    where ``work_dir`` is found from the runner's log file
    (``<work_dir>/<timestamp>/<timestamp>.log``). Without a runner and
    without ``table_file``, the table is only logged.

    Args:
        method_name (str): Label of the table rows (``'<method> AP'``,
            ``'<method> AP50'``); empty gives ``AP`` and ``AP50``.
        table_file (str, optional): Where to write the table.
        classwise (bool): Also log per-class AP (``CocoMetric``'s option).
        max_dets (int): Detections per image COCO AP and AP50 consider. 100
            (default) is pycocotools' default, as DAMEX; other values are
            read from the COCO evaluation at that many detections
            (:func:`~.functional.coco_box_ap`; pycocotools' summary reports
            AP at 100 only).
        voc07 (bool): Also compute the VOC07 11-point AP50. Defaults to
            True.
        label_mapping (str): ``'offset'`` (dataset-known protocol) or
            ``'name'`` (dataset-unknown protocol), see above. Defaults to
            ``'offset'``.
        merge_table (dict, optional): Synonyms of the unified space of
            ``'name'`` mapping (normalised name -> the name it is read as);
            use the model's ``label_merge_table``. None: the default (none).
        model_dataset_names (Sequence[str], optional): The datasets of the
            model's label space, in its dataset order, when they are not the
            evaluated ones (unseen domains, see above). None: the evaluated
            datasets are the model's.
        model_dataset_classes (Sequence[Sequence[str]], optional): The class
            names of each of ``model_dataset_names`` (the model's
            ``dataset_classes``); given with it.
        backend_args (dict, optional): For reading the annotation files.
        collect_device (str): ``'cpu'`` or ``'gpu'``.
        prefix (str, optional): Key prefix; defaults to ``'uodb'``.
    """
    default_prefix: Optional[str] = 'uodb'

    def __init__(self,
                 method_name: str = '',
                 table_file: Optional[str] = None,
                 classwise: bool = False,
                 max_dets: int = 100,
                 voc07: bool = True,
                 label_mapping: str = 'offset',
                 merge_table: Optional[Dict[str, str]] = None,
                 model_dataset_names: Optional[Sequence[str]] = None,
                 model_dataset_classes: Optional[Sequence[Sequence[str]]] = None,
                 backend_args: Optional[dict] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.method_name = method_name
        self.table_file = table_file
        self.classwise = classwise
        if int(max_dets) < 10:
            raise ValueError(f'UODBMetric: max_dets={max_dets} must be >= 10 (pycocotools '
                             'reports AR at 1, 10 and max_dets)')
        self.max_dets = int(max_dets)
        self.voc07 = voc07
        check_choice('label_mapping', label_mapping, LABEL_MAPPINGS)
        self.label_mapping = label_mapping
        self.merge_table = merge_table
        self._label_space: Optional[UnifiedLabelSpace] = None
        if (model_dataset_names is None) != (model_dataset_classes is None):
            raise ValueError('UODBMetric: give model_dataset_names and model_dataset_classes '
                             'together (the model\'s datasets and their classes)')
        if model_dataset_names is not None:
            if label_mapping != 'name':
                raise ValueError("UODBMetric: model_dataset_names (unseen domains) need "
                                 "label_mapping='name': the evaluated datasets' labels are "
                                 'matched to the model\'s by class name')
            if len(model_dataset_names) != len(model_dataset_classes):
                raise ValueError(
                    f'UODBMetric: {len(model_dataset_names)} model_dataset_names for '
                    f'{len(model_dataset_classes)} model_dataset_classes')
            model_dataset_names = tuple(str(n) for n in model_dataset_names)
            model_dataset_classes = tuple(tuple(str(c) for c in cs)
                                          for cs in model_dataset_classes)
        self.model_dataset_names = model_dataset_names
        self.model_dataset_classes = model_dataset_classes
        self.backend_args = backend_args
        self._coco_metrics: Dict[int, CocoMetric] = {}
        self.last_table: Optional[str] = None

    def _meta(self, key: str):
        if self.dataset_meta is None or key not in self.dataset_meta:
            raise KeyError(
                f'UODBMetric needs {key!r} in dataset_meta; evaluate a '
                'UODBDataset (the runner passes its metainfo)')
        return self.dataset_meta[key]

    @property
    def num_model_datasets(self) -> int:
        """int: Datasets of the model's label space placed before the
        evaluated ones in :attr:`label_space` (0 when they are the same)."""
        return 0 if self.model_dataset_names is None else len(self.model_dataset_names)

    @property
    def label_space(self) -> UnifiedLabelSpace:
        """UnifiedLabelSpace: Of the model's datasets (when given) followed
        by the evaluated datasets (built once)."""
        if self._label_space is None:
            names = list(self._meta('dataset_names'))
            classes = [self._meta('dataset_classes')[n] for n in names]
            if self.model_dataset_names is not None:
                names = [f'model:{n}' for n in self.model_dataset_names] + names
                classes = list(self.model_dataset_classes) + classes
            self._label_space = UnifiedLabelSpace(classes, names, self.merge_table)
            self._label_space.log_merges()
        return self._label_space

    def _pred_space_size(self, pred_label_space: str) -> int:
        """int: Labels of the predictions' space (the model's datasets'
        part of :attr:`label_space` when they are given)."""
        space = self.label_space
        k = self.num_model_datasets or space.num_datasets
        concat = int(space.label_offsets[k])
        if pred_label_space != 'unified':
            return concat
        return int(space.concat_to_unified[:concat].max()) + 1

    def local_labels(self, d: int, labels: np.ndarray,
                     pred_label_space: str) -> np.ndarray:
        """Dataset ``d``'s label of every predicted label, -1 to drop.

        Args:
            d (int): The image's true dataset.
            labels (np.ndarray): Predicted labels.
            pred_label_space (str): ``'concat'`` or ``'unified'``.

        Returns:
            np.ndarray: int64 local labels, -1 where the label is dropped.
        """
        if self.label_mapping == 'offset':
            if pred_label_space != 'concat':
                raise ValueError(
                    f'UODBMetric: predictions labelled in the {pred_label_space!r} '
                    "space (dataset-unknown test) need label_mapping='name'")
            offsets = np.asarray(self._meta('label_offsets'), dtype=np.int64)
            keep = (labels >= offsets[d]) & (labels < offsets[d + 1])
            return np.where(keep, labels - offsets[d], -1)
        if self.model_dataset_names is not None and pred_label_space != 'unified':
            raise ValueError(
                f'UODBMetric: a prediction of an unseen domain (model_dataset_names) is '
                f'labelled in the {pred_label_space!r} space; test the model with '
                'test_dataset_known=False and its dataset_classes (labels by name), so it '
                "never reads the sample's dataset_id, which is not one of the model's")
        space = self.label_space
        size = self._pred_space_size(pred_label_space)
        if labels.size and (labels.min() < 0 or labels.max() >= size):
            raise ValueError(
                f'UODBMetric: predicted label {int(labels.max())} outside the '
                f'{pred_label_space} space of {size} labels of this dataset_meta')
        unified = labels if pred_label_space == 'unified' else space.concat_to_unified[labels]
        return space.unified_to_local(self.num_model_datasets + d)[unified]

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Split one batch by dataset and map labels to each dataset's own.

        Args:
            data_batch (dict): The batch (unused).
            data_samples (Sequence[dict]): Data samples with
                ``pred_instances``, ``dataset_id``, ``img_id`` and
                ``ori_shape`` (and ``pred_label_space``; absent is
                ``'concat'``).
        """
        for sample in data_samples:
            if 'dataset_id' not in sample:
                raise KeyError(
                    'UODBMetric: a data sample has no dataset_id; add '
                    "'dataset_id' to PackDetInputs' meta_keys")
            d = _to_int(sample['dataset_id'])
            pred = sample['pred_instances']
            labels = pred['labels'].cpu().numpy().astype(np.int64)
            local = self.local_labels(d, labels, sample.get('pred_label_space', 'concat'))
            keep = local >= 0
            result = dict(
                img_id=sample['img_id'],
                bboxes=pred['bboxes'].cpu().numpy()[keep],
                scores=pred['scores'].cpu().numpy()[keep],
                labels=local[keep])
            gt = dict(
                width=sample['ori_shape'][1],
                height=sample['ori_shape'][0],
                img_id=sample['img_id'])
            pred_d = sample.get('pred_dataset_id', None)
            self.results.append(
                (d, gt, result, None if pred_d is None else _to_int(pred_d)))

    def _coco_metric(self, d: int) -> CocoMetric:
        """The ``CocoMetric`` of dataset ``d``, built once."""
        if d not in self._coco_metrics:
            ann_file = self._meta('ann_files')[d]
            name = self._meta('dataset_names')[d]
            if not ann_file:
                raise ValueError(
                    f'UODBMetric: dataset {name!r} has no annotation file')
            metric = CocoMetric(
                ann_file=ann_file,
                metric='bbox',
                classwise=self.classwise,
                proposal_nums=(1, 10, self.max_dets),
                backend_args=self.backend_args)
            metric.dataset_meta = dict(
                classes=tuple(self._meta('dataset_classes')[name]))
            self._coco_metrics[d] = metric
        return self._coco_metrics[d]

    def _voc07_ap50(self, d: int, pairs: List[tuple]) -> float:
        """VOC07 11-point AP50 of dataset ``d`` against its annotation
        file (the ground truth ``CocoMetric`` loaded)."""
        coco = self._coco_metric(d)._coco_api
        classes = self._meta('dataset_classes')[self._meta('dataset_names')[d]]
        label_of = {cid: i for i, cid in enumerate(coco.get_cat_ids(cat_names=classes))}
        dets, gts = [], []
        for _, result in pairs:
            dets.append(result)
            anns = coco.load_anns(coco.get_ann_ids(img_ids=[result['img_id']]))
            boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                               a['bbox'][1] + a['bbox'][3]] for a in anns],
                             dtype=np.float64).reshape(-1, 4)
            gts.append(dict(bboxes=boxes,
                            labels=np.array([label_of[a['category_id']] for a in anns],
                                            dtype=np.int64),
                            ignore=np.array([bool(a.get('iscrowd', 0)) for a in anns])))
        return round(voc07_map(dets, gts, len(classes))['mAP'], 3)

    def _table_path(self) -> Optional[str]:
        if self.table_file:
            return self.table_file
        log_file = getattr(MMLogger.get_current_instance(), 'log_file', None)
        if log_file:
            return osp.join(
                osp.dirname(osp.dirname(osp.abspath(log_file))),
                'uodb_table.md')
        return None

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Evaluate every dataset with its own ``CocoMetric``.

        Args:
            results (list): What :meth:`process` collected (all ranks).

        Returns:
            dict[str, float]: Mean, then per-dataset AP / AP50 (fractions,
            rounded to 3 decimals as ``CocoMetric`` does), and, when predicted
            dataset ids were given, ``domain_acc`` and
            ``<name>_domain_acc`` (percent).
        """
        logger = MMLogger.get_current_instance()
        names = list(self._meta('dataset_names'))
        titles = list(self.dataset_meta.get('dataset_display_names', names))
        by_dataset: Dict[int, List[tuple]] = {}
        domain_pairs: List[tuple] = []
        for d, gt, result, pred_d in results:
            by_dataset.setdefault(d, []).append((gt, result))
            if pred_d is not None:
                domain_pairs.append((d, pred_d))

        per_dataset: Dict[str, float] = {}
        ap: List[Optional[float]] = [None] * len(names)
        ap50: List[Optional[float]] = [None] * len(names)
        voc: List[Optional[float]] = [None] * len(names)
        for d, name in enumerate(names):
            if d not in by_dataset:
                logger.warning(f'UODBMetric: no sample of dataset {name!r} '
                               'was evaluated; it is left out of the mean')
                continue
            logger.info(f'UODBMetric: evaluating {name} '
                        f'({len(by_dataset[d])} images)')
            res = self._coco_metric(d).compute_metrics(by_dataset[d])
            if 'bbox_mAP' not in res:  # pycocotools: no prediction at all
                res = dict(bbox_mAP=0.0, bbox_mAP_50=0.0)
            if self.max_dets != 100:  # pycocotools reports AP at 100 only
                coco = self._coco_metric(d)
                res['bbox_mAP'], res['bbox_mAP_50'] = coco_box_ap(
                    coco._coco_api, [r for _, r in by_dataset[d]], coco.cat_ids, self.max_dets)
            # -1 (pycocotools: no non-crowd ground truth) is left out of the mean
            ap[d], ap50[d] = (v if v >= 0 else None
                              for v in (res['bbox_mAP'], res['bbox_mAP_50']))
            per_dataset[f'{name}_bbox_mAP'] = res['bbox_mAP']
            per_dataset[f'{name}_bbox_mAP_50'] = res['bbox_mAP_50']
            if self.voc07:
                per_dataset[f'{name}_voc07_AP50'] = self._voc07_ap50(d, by_dataset[d])
                voc[d] = per_dataset[f'{name}_voc07_AP50']
                voc[d] = voc[d] if voc[d] >= 0 else None
        # the mean first: save_best='auto' takes the first key
        eval_results: Dict[str, float] = {}
        seen = [v for v in ap if v is not None]
        if seen:
            eval_results['bbox_mAP'] = float(np.mean(seen))
            eval_results['bbox_mAP_50'] = float(
                np.mean([v for v in ap50 if v is not None]))
            if self.voc07 and any(v is not None for v in voc):
                eval_results['voc07_AP50'] = float(np.mean([v for v in voc if v is not None]))
        eval_results.update(per_dataset)
        domain_table = None
        if domain_pairs:
            truth, guess = np.asarray(domain_pairs, dtype=np.int64).T
            if self.model_dataset_names is None:
                eval_results.update(domain_accuracy(names, truth, guess))
                domain_table = format_domain_confusion(titles, truth, guess)
            else:  # unseen domains: where the classifier routes them
                eval_results.update(
                    domain_routing_shares(names, self.model_dataset_names, truth, guess))
                domain_table = format_domain_confusion(titles, truth, guess,
                                                       self.model_dataset_names)
            logger.info('UODB domain classification (rows: true dataset, '
                        'columns: predicted; images):\n' + domain_table)

        method = self.method_name.strip()
        rows = {f'{method} AP'.strip(): ap, f'{method} AP50'.strip(): ap50}
        if self.voc07:
            rows[f'{method} VOC07 AP50'.strip()] = voc
        protocol = (f'AP, AP50: COCO box AP@[.5:.95] and @.5, maxDets={self.max_dets}'
                    + ('; VOC07 AP50: 11-point AP@.5' if self.voc07 else '')
                    + ('; labels mapped by class name' if self.label_mapping == 'name'
                       else ''))
        table = format_uodb_table(
            titles, rows,
            first_header=f'{"Method" if method else "Metric"} ({protocol})')
        logger.info('UODB per-dataset results (COCO box AP, %):\n' + table)
        if domain_table is not None:
            table = (f'{table}\nDomain classification (rows: true dataset, '
                     f'columns: predicted; images):\n\n{domain_table}')
        self.last_table = table
        path = self._table_path()
        if path is not None:
            atomic_write(path, table)
            logger.info(f'UODBMetric: wrote {path}')
        return eval_results
