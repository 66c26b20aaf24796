# Copyright (c) mmgem contributors. All rights reserved.
"""A multi-dataset wrapper that carries dataset ids and offset labels."""
import copy
import inspect
import json
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from mmdet.registry import DATASETS
from mmengine.dataset import BaseDataset, force_full_init
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from .box_audit import dropped_boxes, format_dropped
from .mini_uodb_meta import MINI_UODB_DISPLAY_NAMES
from .uodb_meta import UODB_DISPLAY_NAMES

#: Keys of the wrapper's config handed down to sub-dataset configs that do
#: not set them.
INHERITED_KEYS = ('data_root', 'test_mode', 'filter_cfg', 'backend_args')


@DATASETS.register_module()
class UODBDataset(BaseDataset):
    """K detection datasets behind one index, with one label space.

    Each sub-dataset (an mmdet ``CocoDataset`` or any ``BaseDataset`` whose
    data infos hold mmdet-style ``instances``) keeps its own annotation file
    and class list. The wrapper

    - concatenates the samples of all sub-datasets in order,
    - adds ``dataset_id`` (int) and ``dataset_name`` (str) to every data info
      (so they reach ``DetDataSample.metainfo`` when ``PackDetInputs`` lists
      them in ``meta_keys``); ``img_id`` stays the sub-dataset's COCO id,
    - shifts every ``bbox_label`` of dataset ``d`` by ``label_offsets[d]``,
      so the K label sets become one space of ``label_offsets[-1]`` classes,
      named ``'<dataset>/<class>'`` in ``metainfo['classes']``,
    - runs its own ``pipeline`` once per sample (the sub-datasets must have
      none), and
    - on a training sample the pipeline rejects, retries another sample of
      the *same* dataset, so per-dataset batches and loads stay exact.

    Sub-datasets are built with ``lazy_init=True`` and loaded only in
    :meth:`full_init`, so ``lazy_init`` of the wrapper works as in mmengine:
    ``metainfo`` (and so the label space) is known before any annotation is
    read. Before loading, each COCO JSON's category names are checked
    against the sub-dataset's classes: a class missing from the file, a
    category of the file missing from the classes, or a different order is an
    error naming the file (mmdet would silently mislabel or fail with a
    ``KeyError``).

    Args:
        datasets (Sequence[dict | BaseDataset]): Sub-dataset configs (or
            built datasets with an empty pipeline).
        dataset_names (Sequence[str], optional): A unique name per dataset;
            defaults to ``dataset0, dataset1, ...``.
        pipeline (list): The processing pipeline applied to every sample.
        data_root (str, optional): Default ``data_root`` of sub-dataset
            configs that do not set one (so a config override of the
            wrapper's ``data_root`` moves all of them).
        test_mode (bool): Test mode, also handed to the sub-datasets.
        filter_cfg (dict, optional): Default ``filter_cfg`` of sub-dataset
            configs that do not set one (e.g. ``filter_empty_gt``).
        backend_args (dict, optional): Default ``backend_args`` of
            sub-dataset configs.
        display_names (Mapping[str, str], optional): Column titles for result
            tables; UODB's and mini-UODB's are known.
        indices (int | Sequence[int], optional): Keep only these samples of
            the concatenation (see ``BaseDataset``).
        dataset_indices (Mapping[str, int | Sequence[int]], optional): Per
            dataset name, the ``indices`` of that sub-dataset (its first N
            images, or a list), e.g. ``dict(kitti=100)`` for the few-shot
            scenario; the other datasets are kept whole.
        select (Sequence[str], optional): Keep only these datasets, in this
            order (e.g. an ablation on 4 of UODB's 11); the others are never
            built. Defaults to None (all).
        serialize_data (bool): Serialize the data infos (see
            ``BaseDataset``). Defaults to True.
        lazy_init (bool): Do not load annotations in ``__init__``.
        max_refetch (int): Retries for a sample the pipeline rejects.
        max_load_retries (int): In training, how many samples in a row may
            fail to load (missing or unreadable image) before the error is
            raised; each is logged and replaced by another image of the
            same dataset. Defaults to 10.

    Examples:
        >>> dataset = UODBDataset(
        ...     datasets=[
        ...         dict(type='CocoDataset', ann_file='voc/annotations/test.json',
        ...              data_prefix=dict(img='voc/JPEGImages/'),
        ...              metainfo=dict(classes=VOC_CLASSES)),
        ...         dict(type='CocoDataset',
        ...              ann_file='widerface/annotations/val.json',
        ...              data_prefix=dict(img='widerface/JPEGImages/'),
        ...              metainfo=dict(classes=('face', )))],
        ...     dataset_names=['voc', 'widerface'], data_root='data/uodb/',
        ...     test_mode=True)
        >>> dataset.label_offsets
        array([ 0, 20, 21])
    """

    METAINFO: dict = dict()

    def __init__(self,
                 datasets: Sequence[Union[dict, BaseDataset]],
                 dataset_names: Optional[Sequence[str]] = None,
                 pipeline: Sequence[Union[dict, Any]] = (),
                 data_root: Optional[str] = None,
                 test_mode: bool = False,
                 filter_cfg: Optional[dict] = None,
                 backend_args: Optional[dict] = None,
                 display_names: Optional[Mapping[str, str]] = None,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 dataset_indices: Optional[Mapping[str, Union[int, Sequence[int]]]] = None,
                 select: Optional[Sequence[str]] = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 max_load_retries: int = 10) -> None:
        if not datasets:
            raise ValueError('UODBDataset needs at least one dataset')
        if max_load_retries < 0:
            raise ValueError(f'UODBDataset: max_load_retries={max_load_retries} must be >= 0')
        self.max_load_retries = int(max_load_retries)
        #: Samples that failed to load and were replaced (in this process).
        self.load_failures = 0
        if dataset_names is None:
            dataset_names = [f'dataset{i}' for i in range(len(datasets))]
        dataset_names = tuple(str(n) for n in dataset_names)
        if len(dataset_names) != len(datasets):
            raise ValueError(
                f'UODBDataset got {len(datasets)} datasets but '
                f'{len(dataset_names)} dataset_names {dataset_names}')
        if len(set(dataset_names)) != len(dataset_names):
            raise ValueError(
                f'UODBDataset: dataset_names must be unique: {dataset_names}')
        for name in dataset_names:
            if '/' in name:
                raise ValueError(
                    f'UODBDataset: dataset name {name!r} contains "/", which '
                    'separates dataset and class in the class names')
        if select is not None:
            missing = [n for n in select if n not in dataset_names]
            if missing or not select or len(set(select)) != len(select):
                raise ValueError(f'UODBDataset: select={list(select)} must name distinct '
                                 f'datasets among {list(dataset_names)}')
            datasets = [datasets[dataset_names.index(n)] for n in select]
            dataset_names = tuple(select)
        unknown = sorted(set(dataset_indices or {}) - set(dataset_names))
        if unknown:
            raise ValueError(f'UODBDataset: dataset_indices names {unknown}, which are not '
                             f'among the dataset_names {list(dataset_names)}')
        datasets = list(datasets)
        for name, value in (dataset_indices or {}).items():
            i = dataset_names.index(name)
            if not isinstance(datasets[i], Mapping):
                raise TypeError(f'UODBDataset: dataset_indices needs a config dict for '
                                f'dataset {name!r}, got a built {type(datasets[i]).__name__}')
            cfg = copy.deepcopy(dict(datasets[i]))
            leaves = _leaf_configs(cfg)
            if len(leaves) != 1:
                raise ValueError(f'UODBDataset: dataset_indices of {name!r} needs one '
                                 f'dataset inside its wrapper, it has {len(leaves)}')
            leaves[0]['indices'] = value
            datasets[i] = cfg
        defaults = dict(
            data_root=data_root,
            test_mode=test_mode,
            filter_cfg=filter_cfg,
            backend_args=backend_args)
        self.datasets: List[BaseDataset] = [
            self._build_dataset(cfg, name, defaults)
            for cfg, name in zip(datasets, dataset_names)
        ]
        self._dataset_names = dataset_names
        self._dataset_classes = {
            name: tuple(ds.metainfo['classes'])
            for name, ds in zip(dataset_names, self.datasets)
        }
        sizes = [len(c) for c in self._dataset_classes.values()]
        self._label_offsets = np.concatenate([[0], np.cumsum(sizes)
                                              ]).astype(np.int64)
        titles = dict(UODB_DISPLAY_NAMES)
        titles.update(MINI_UODB_DISPLAY_NAMES)
        titles.update(display_names or {})
        self._sample_dataset_ids = np.zeros(0, dtype=np.int64)
        self._sample_local_ids = np.zeros(0, dtype=np.int64)
        metainfo = dict(
            classes=tuple(f'{name}/{cls}'
                          for name, classes in self._dataset_classes.items()
                          for cls in classes),
            dataset_names=dataset_names,
            dataset_classes=copy.deepcopy(self._dataset_classes),
            label_offsets=tuple(int(v) for v in self._label_offsets),
            ann_files=tuple(_ann_file(ds) for ds in self.datasets),
            dataset_display_names=tuple(
                titles.get(name, name) for name in dataset_names))
        super().__init__(
            ann_file='',
            metainfo=metainfo,
            data_root='',
            data_prefix=dict(),
            filter_cfg=None,
            indices=indices,
            serialize_data=serialize_data,
            pipeline=list(pipeline),
            test_mode=test_mode,
            lazy_init=lazy_init,
            max_refetch=max_refetch)

    @staticmethod
    def _build_dataset(cfg: Union[dict, BaseDataset], name: str,
                       defaults: dict) -> BaseDataset:
        """Build one sub-dataset lazily, with the wrapper's defaults.

        A sub-dataset may itself be a dataset wrapper (mmengine's
        ``RepeatDataset``, ``ClassBalancedDataset``, ``ConcatDataset``, or
        any config with a ``dataset`` / ``datasets`` entry): the defaults,
        the empty pipeline and lazy loading go to the datasets inside it.
        """
        if not isinstance(cfg, Mapping):
            leaves = _leaves(cfg)
            if not leaves:
                raise TypeError(
                    f'UODBDataset: dataset {name!r} must be a config dict or a '
                    f'BaseDataset (or a wrapper of one), got {type(cfg)}')
            for leaf in leaves:
                if len(leaf.pipeline.transforms) > 0:
                    raise ValueError(
                        f'UODBDataset: dataset {name!r} has its own pipeline; '
                        'give the pipeline to UODBDataset instead')
            return cfg
        cfg = copy.deepcopy(dict(cfg))
        serialize = []
        for leaf in _leaf_configs(cfg):
            if leaf.get('pipeline'):
                raise ValueError(
                    f'UODBDataset: dataset {name!r} has its own pipeline; give '
                    'the pipeline to UODBDataset instead')
            for key, value in defaults.items():
                if value is not None and leaf.get(key) is None:
                    leaf[key] = copy.deepcopy(value)
            leaf['pipeline'] = []
            leaf['lazy_init'] = True
            # Serialized later by the wrapper: mmengine cannot serialize an
            # empty data list, and an empty dataset must give a clear error.
            serialize.append(leaf.get('serialize_data', True))
            leaf['serialize_data'] = False
        for wrapper in _wrapper_configs(cfg):
            if _accepts(wrapper.get('type'), 'lazy_init'):
                wrapper['lazy_init'] = True
            if defaults.get('test_mode') is not None and _accepts(wrapper.get('type'),
                                                                  'test_mode'):
                wrapper.setdefault('test_mode', defaults['test_mode'])
        dataset = DATASETS.build(cfg)
        leaves = _leaves(dataset)
        for leaf, flag in zip(leaves, serialize if len(serialize) == len(leaves) else
                              [True] * len(leaves)):
            leaf._uodb_serialize = flag
        return dataset

    # ------------------------------------------------------------------
    # Public description of the datasets
    # ------------------------------------------------------------------
    @property
    def dataset_names(self) -> Tuple[str, ...]:
        """tuple[str]: The dataset names, in dataset-id order."""
        return self._dataset_names

    @property
    def dataset_classes(self) -> Dict[str, Tuple[str, ...]]:
        """dict[str, tuple[str]]: Each dataset's own class names."""
        return copy.deepcopy(self._dataset_classes)

    @property
    def label_offsets(self) -> np.ndarray:
        """np.ndarray: int64 array of length K + 1; dataset ``d``'s labels
        are ``[label_offsets[d], label_offsets[d + 1])``."""
        return self._label_offsets.copy()

    @property
    def num_datasets(self) -> int:
        """int: The number of datasets K."""
        return len(self.datasets)

    @property
    @force_full_init
    def dataset_lengths(self) -> List[int]:
        """list[int]: Samples of each dataset in the wrapper (after
        filtering and ``indices``)."""
        return np.bincount(
            self._sample_dataset_ids,
            minlength=self.num_datasets).astype(int).tolist()

    @property
    @force_full_init
    def sample_dataset_ids(self) -> np.ndarray:
        """np.ndarray: The dataset id of every sample (int64, read-only)."""
        ids = self._sample_dataset_ids.view()
        ids.flags.writeable = False
        return ids

    @force_full_init
    def dataset_index(self, idx: int) -> Tuple[int, int]:
        """Map a wrapper index to ``(dataset id, index in that dataset)``.

        Args:
            idx (int): Index into the wrapper (negative counts from the end).

        Returns:
            tuple[int, int]: The dataset id and the sample's index in the
            sub-dataset (``self.datasets[d].get_data_info(local)`` is the
            same image).
        """
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f'index {idx} out of range for UODBDataset of '
                             f'length {n}')
        idx %= n
        return (int(self._sample_dataset_ids[idx]),
                int(self._sample_local_ids[idx]))

    @force_full_init
    def get_cat_ids(self, idx: int) -> List[int]:
        """The (offset) labels of a sample, for class-aware samplers.

        Args:
            idx (int): Index into the wrapper.

        Returns:
            list[int]: The labels of its instances.
        """
        return [
            inst['bbox_label']
            for inst in self.get_data_info(idx).get('instances', [])
        ]

    # ------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------
    def _check_categories(self, d: int) -> None:
        """Compare a COCO JSON's categories with the sub-dataset's classes."""
        for leaf in _leaves(self.datasets[d]):
            self._check_leaf_categories(leaf, self._dataset_names[d])

    def _check_leaf_categories(self, ds: BaseDataset, name: str) -> None:
        ann_file = getattr(ds, 'ann_file', '')
        if not ann_file or not str(ann_file).endswith('.json'):
            return
        try:
            with get_local_path(
                    ann_file,
                    backend_args=getattr(ds, 'backend_args',
                                         None)) as local_path:
                with open(local_path, encoding='utf-8') as f:
                    content = json.load(f)
                    categories = content.get('categories', [])
                    annotations = content.get('annotations', [])
        except FileNotFoundError:
            raise FileNotFoundError(
                f'UODBDataset: annotation file of dataset {name!r} not '
                f'found: {ann_file}') from None
        except json.JSONDecodeError as err:
            raise ValueError(
                f'UODBDataset: cannot parse {ann_file} of dataset {name!r}: '
                f'{err}') from None
        counts = dropped_boxes(content)
        dropped = sum(v for k, v in counts.items() if k != 'total')
        print_log(f'UODBDataset: dataset {name!r} ({ann_file}): mmdet '
                  f'{format_dropped(counts)} at load time',
                  logger='current',
                  level=logging.WARNING if dropped else logging.INFO)
        in_file = [c['name'] for c in categories]
        classes = list(self._dataset_classes[name])
        missing = [c for c in classes if c not in in_file]
        if missing:
            raise ValueError(
                f'UODBDataset: class(es) {missing} of dataset {name!r} are '
                f'not categories of {ann_file} (it has {in_file})')
        extra = [c for c in in_file if c not in classes]
        if extra:
            raise ValueError(
                f'UODBDataset: category(ies) {extra} of {ann_file} are not '
                f'in the class list of dataset {name!r} {tuple(classes)}')
        declared = {c['id'] for c in categories}
        for ann in annotations:
            if ann.get('category_id') not in declared:
                raise ValueError(
                    f'UODBDataset: annotation {ann.get("id")} (image '
                    f'{ann.get("image_id")}) of {ann_file} has category_id '
                    f'{ann.get("category_id")!r}, which the file does not declare '
                    f'(its categories are {sorted(declared)}); mmdet would drop '
                    'it silently')
        if in_file != classes:
            raise ValueError(
                f'UODBDataset: the categories of {ann_file} are in the order '
                f'{in_file}, but dataset {name!r} lists its classes as '
                f'{classes}; mmdet labels follow the file order, so give the '
                'classes in that order')

    def load_data_list(self) -> List[dict]:
        """Load every sub-dataset and concatenate their data infos.

        Returns:
            list[dict]: Data infos with ``dataset_id``, ``dataset_name`` and
            offset ``bbox_label``\\ s.
        """
        data_list = []
        for d, (name, ds) in enumerate(zip(self._dataset_names,
                                           self.datasets)):
            self._check_categories(d)
            try:
                ds.full_init()
            except FileNotFoundError as err:
                raise FileNotFoundError(
                    f'UODBDataset: dataset {name!r}: {err}') from err
            if len(ds) == 0:
                raise ValueError(
                    f'UODBDataset: dataset {name!r} '
                    f'({_ann_file(ds)}) has no samples (after '
                    'filtering)')
            for leaf in _leaves(ds):
                if getattr(leaf, '_uodb_serialize', False):
                    leaf.data_bytes, leaf.data_address = leaf._serialize_data()
                    leaf.serialize_data = True
                    leaf._uodb_serialize = False
            offset = int(self._label_offsets[d])
            num_classes = len(self._dataset_classes[name])
            for local in range(len(ds)):
                info = ds.get_data_info(local)
                info['dataset_id'] = d
                info['dataset_name'] = name
                info['dataset_local_idx'] = local
                for inst in info.get('instances', []):
                    label = int(inst['bbox_label'])
                    if not 0 <= label < num_classes:
                        raise ValueError(
                            f'UODBDataset: dataset {name!r} sample {local} '
                            f'({info.get("img_path")}) has label {label} '
                            f'outside its {num_classes} classes')
                    inst['bbox_label'] = label + offset
                data_list.append(info)
        return data_list

    def full_init(self) -> None:
        """Load the sub-datasets, then filter, slice and serialize."""
        if self._fully_initialized:
            return
        self.data_list = self.load_data_list()
        self.data_list = self.filter_data()
        if self._indices is not None:
            self.data_list = self._get_unserialized_subset(self._indices)
        self._index_datasets(self.data_list)
        if self.serialize_data:
            self.data_bytes, self.data_address = self._serialize_data()
        self._fully_initialized = True

    def _index_datasets(self, infos: Sequence[dict]) -> None:
        self._sample_dataset_ids = np.array(
            [info['dataset_id'] for info in infos], dtype=np.int64)
        self._sample_local_ids = np.array(
            [info['dataset_local_idx'] for info in infos], dtype=np.int64)

    def _reindex(self) -> None:
        self._index_datasets(
            [BaseDataset.get_data_info(self, i) for i in range(len(self))])

    def get_subset_(self, indices: Union[Sequence[int], int]) -> None:
        """In-place subset (see ``BaseDataset.get_subset_``), keeping the
        dataset ids in step."""
        super().get_subset_(indices)
        self._reindex()

    def get_subset(self, indices: Union[Sequence[int], int]) -> 'UODBDataset':
        """A subset (see ``BaseDataset.get_subset``), keeping the dataset ids
        in step.

        Args:
            indices (int | Sequence[int]): See ``BaseDataset.get_subset``.

        Returns:
            UODBDataset: The subset.
        """
        sub = super().get_subset(indices)
        sub._reindex()
        return sub

    def __getitem__(self, idx: int) -> dict:
        """Get the ``idx``-th sample after the pipeline.

        In training, a sample the pipeline rejects (returns None) is
        replaced by a random sample of the same dataset (mmengine would take
        one of any dataset), up to ``max_refetch`` times; a sample whose
        loading fails (a missing or unreadable image: the pipeline raises)
        is logged with its file and replaced the same way, up to
        ``max_load_retries`` times in a row, after which the last error is
        raised. In testing both are errors naming the sample's image.

        Args:
            idx (int): Index into the wrapper.

        Returns:
            dict: The pipeline's output.
        """
        if not self._fully_initialized:
            print_log(
                'Please call `full_init()` before using UODBDataset to '
                'avoid loading annotations in every worker.',
                logger='current')
            self.full_init()
        if self.test_mode:
            try:
                data = self.prepare_data(idx)
            except Exception as err:
                raise RuntimeError(
                    f'UODBDataset: cannot load test sample {idx} '
                    f'({self._describe(idx)}): {type(err).__name__}: {err}') from err
            if data is None:
                raise RuntimeError(
                    f'UODBDataset: the test pipeline returned None for '
                    f'sample {idx} ({self._describe(idx)})')
            return data
        same = None
        failures = 0
        for _ in range(self.max_refetch + self.max_load_retries + 1):
            try:
                data = self.prepare_data(idx)
            except Exception as err:
                failures += 1
                self.load_failures += 1
                if failures > self.max_load_retries:
                    raise RuntimeError(
                        f'UODBDataset: {failures} samples of dataset '
                        f'{self._dataset_names[self._sample_dataset_ids[idx]]!r} failed to '
                        f'load in a row (max_load_retries={self.max_load_retries}); the last '
                        f'was {self._describe(idx)}: {type(err).__name__}: {err}') from err
                print_log(
                    f'UODBDataset: cannot load sample {idx} ({self._describe(idx)}): '
                    f'{type(err).__name__}: {err}; using another image of the same dataset',
                    logger='current', level=logging.WARNING)
                data = None
            else:
                failures = 0
                if data is not None:
                    return data
            if same is None:
                same = np.flatnonzero(
                    self._sample_dataset_ids == self._sample_dataset_ids[idx])
            idx = int(same[np.random.randint(len(same))])
        raise RuntimeError(
            f'UODBDataset: no valid sample of dataset '
            f'{self._dataset_names[self._sample_dataset_ids[idx]]!r} after '
            f'{self.max_refetch} retries; check its images and pipeline')

    def _describe(self, idx: int) -> str:
        """Dataset name and image path of a sample, for messages."""
        info = BaseDataset.get_data_info(self, idx)
        return f'dataset {info.get("dataset_name")!r}, image {info.get("img_path")}'

    def __repr__(self) -> str:
        lines = [f'{self.__class__.__name__}(']
        lengths = self.dataset_lengths if self._fully_initialized else None
        for d, name in enumerate(self._dataset_names):
            n = '?' if lengths is None else lengths[d]
            lines.append(
                f'  {d}: {name}: {n} samples, '
                f'{len(self._dataset_classes[name])} classes '
                f'[{self._label_offsets[d]}, {self._label_offsets[d + 1]}) '
                f'from {_ann_file(self.datasets[d])}')
        lines.append(')')
        return '\n'.join(lines)


def _wrapped_config(cfg: Mapping) -> List[dict]:
    """The dataset configs directly inside a wrapper config (none for a
    plain dataset)."""
    inner = cfg.get('dataset')
    if isinstance(inner, Mapping):
        return [inner]
    inner = cfg.get('datasets')
    if isinstance(inner, (list, tuple)) and all(isinstance(c, Mapping) for c in inner):
        return list(inner)
    return []


def _leaf_configs(cfg: dict) -> List[dict]:
    """The plain dataset configs of a (possibly nested) wrapper config."""
    inner = _wrapped_config(cfg)
    if not inner:
        return [cfg]
    return [leaf for c in inner for leaf in _leaf_configs(c)]


def _wrapper_configs(cfg: dict) -> List[dict]:
    """The wrapper configs of a (possibly nested) wrapper config, outer
    first."""
    inner = _wrapped_config(cfg)
    if not inner:
        return []
    return [cfg] + [w for c in inner for w in _wrapper_configs(c)]


def _accepts(type_name: Any, arg: str) -> bool:
    """Whether the registered dataset class ``type_name`` takes ``arg``."""
    cls = DATASETS.get(type_name) if isinstance(type_name, str) else type_name
    if cls is None:
        return False
    try:
        return arg in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


def _leaves(dataset: Any) -> List[BaseDataset]:
    """The ``BaseDataset``\\ s inside a (possibly wrapped) dataset."""
    if isinstance(dataset, BaseDataset):
        return [dataset]
    inner = getattr(dataset, 'datasets', None)
    if isinstance(inner, (list, tuple)):
        return [leaf for d in inner for leaf in _leaves(d)]
    inner = getattr(dataset, 'dataset', None)
    return _leaves(inner) if inner is not None else []


def _ann_file(dataset: Any) -> str:
    """The annotation file of a sub-dataset (of the one dataset inside a
    wrapper; empty for several)."""
    leaves = _leaves(dataset)
    return str(getattr(leaves[0], 'ann_file', '')) if len(leaves) == 1 else ''
