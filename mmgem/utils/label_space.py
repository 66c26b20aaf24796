# Copyright (c) mmgem contributors. All rights reserved.
"""One label space of K datasets by class name (torch-free).

The datasets' label sets are concatenated (dataset ``d`` owns the labels
``[label_offsets[d], label_offsets[d + 1])``, ``UODBDataset.label_offsets``)
for training, where every image is scored over its own dataset's classes.
With the dataset of a test image unknown, labels are read in the *unified*
space instead: one label per normalised class name
(:func:`normalize_class_name`), so ``photo_full/person`` and
``photo_part/person`` are the one unified class ``person``.

Synonyms are merged only through an explicit merge table
(:data:`DEFAULT_MERGE_TABLE`, empty; give your own as ``merge_table``): a
mapping from a normalised name to the normalised name it is read as, e.g.
``{'pedestrian': 'person'}``. Every merge of more than one dataset's class
into one unified class is logged once (:meth:`UnifiedLabelSpace.log_merges`).

The model (:class:`mmgem.models.GEMDINO`) and the metric
(:class:`mmgem.evaluation.UODBMetric`) both build their unified space with
:class:`UnifiedLabelSpace`, so the two read a label alike.
"""
import re
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

#: The default synonym table: none. Keys and values are normalised class
#: names; a key is read as its value (chains are followed).
DEFAULT_MERGE_TABLE: Dict[str, str] = {}

_LOGGED: Set[Tuple[str, ...]] = set()


def normalize_class_name(name: str) -> str:
    """Normalise a class name (lower case, ``_``/``-`` as spaces, runs of
    spaces collapsed).

    Args:
        name (str): A class name such as ``'Traffic_Light'``.

    Returns:
        str: ``'traffic light'``.
    """
    return re.sub(r'\s+', ' ', re.sub(r'[_\-]+', ' ', str(name))).strip().lower()


def _resolve(name: str, table: Mapping[str, str]) -> str:
    """Follow the merge table from ``name`` to its final name."""
    seen = [name]
    while name in table:
        name = table[name]
        if name in seen:
            raise ValueError(f'label merge table has a cycle: {" -> ".join(seen + [name])}')
        seen.append(name)
    return name


class UnifiedLabelSpace:
    """Concatenated and unified (by class name) label spaces of K datasets.

    Args:
        dataset_classes (Sequence[Sequence[str]]): The class names of every
            dataset, in dataset order (the concatenated space is their
            concatenation).
        dataset_names (Sequence[str], optional): Names of the datasets, for
            messages. Defaults to ``dataset<d>``.
        merge_table (Mapping[str, str], optional): Synonyms, normalised
            name -> the normalised name it is read as (keys and values are
            normalised here too). None uses :data:`DEFAULT_MERGE_TABLE`.

    Raises:
        ValueError: If a dataset has no class, two classes of one dataset
            share a unified name, or the merge table has a cycle.

    Examples:
        >>> space = UnifiedLabelSpace([('person', 'car'), ('Car', 'bus')])
        >>> space.names
        ('person', 'car', 'bus')
        >>> space.concat_to_unified.tolist()
        [0, 1, 1, 2]
        >>> space.unified_to_local(1).tolist()
        [-1, 0, 1]
    """

    def __init__(self,
                 dataset_classes: Sequence[Sequence[str]],
                 dataset_names: Optional[Sequence[str]] = None,
                 merge_table: Optional[Mapping[str, str]] = None) -> None:
        classes = [tuple(str(c) for c in cs) for cs in dataset_classes]
        names = ([str(n) for n in dataset_names] if dataset_names is not None
                 else [f'dataset{d}' for d in range(len(classes))])
        if len(names) != len(classes):
            raise ValueError(f'{len(names)} dataset names {names} for '
                             f'{len(classes)} class lists')
        table = DEFAULT_MERGE_TABLE if merge_table is None else merge_table
        table = {normalize_class_name(k): normalize_class_name(v) for k, v in table.items()}
        self.dataset_names: Tuple[str, ...] = tuple(names)
        self.dataset_classes: Tuple[Tuple[str, ...], ...] = tuple(classes)
        self.merge_table: Dict[str, str] = table
        unified: Dict[str, int] = {}
        concat: List[int] = []
        offsets = [0]
        for d, cs in enumerate(classes):
            if not cs:
                raise ValueError(f'dataset {names[d]!r} has no class')
            seen: Dict[int, str] = {}
            for c in cs:
                u = unified.setdefault(_resolve(normalize_class_name(c), table), len(unified))
                if u in seen:
                    raise ValueError(
                        f'dataset {names[d]!r} has the classes {seen[u]!r} and {c!r}, which '
                        'read as one unified class; rename one or edit the merge table')
                seen[u] = c
                concat.append(u)
            offsets.append(offsets[-1] + len(cs))
        self.names: Tuple[str, ...] = tuple(unified)
        self.label_offsets = np.asarray(offsets, dtype=np.int64)
        self.concat_to_unified = np.asarray(concat, dtype=np.int64)

    @classmethod
    def from_dataset_meta(cls, meta: Mapping,
                          merge_table: Optional[Mapping[str, str]] = None
                          ) -> 'UnifiedLabelSpace':
        """Build from a :class:`UODBDataset` metainfo (``dataset_names`` and
        ``dataset_classes``).

        Args:
            meta (Mapping): The metainfo.
            merge_table (Mapping[str, str], optional): As in the constructor.

        Returns:
            UnifiedLabelSpace: The space.
        """
        names = list(meta['dataset_names'])
        return cls([meta['dataset_classes'][n] for n in names], names, merge_table)

    @property
    def num_datasets(self) -> int:
        """int: K."""
        return len(self.dataset_classes)

    @property
    def num_concat(self) -> int:
        """int: Size of the concatenated space."""
        return int(self.label_offsets[-1])

    @property
    def num_unified(self) -> int:
        """int: Size of the unified space."""
        return len(self.names)

    def local_to_unified(self, d: int) -> np.ndarray:
        """Unified id of each of dataset ``d``'s classes.

        Args:
            d (int): Dataset index.

        Returns:
            np.ndarray: ``(num_classes_d,)`` int64.
        """
        return self.concat_to_unified[self.label_offsets[d]:self.label_offsets[d + 1]]

    def unified_to_local(self, d: int) -> np.ndarray:
        """Dataset ``d``'s class of each unified id, -1 where ``d`` does not
        annotate that name.

        Args:
            d (int): Dataset index.

        Returns:
            np.ndarray: ``(num_unified,)`` int64.
        """
        out = np.full(self.num_unified, -1, dtype=np.int64)
        local = self.local_to_unified(d)
        out[local] = np.arange(len(local))
        return out

    def representatives(self) -> np.ndarray:
        """The first concatenated label of every unified class.

        Returns:
            np.ndarray: ``(num_unified,)`` int64.
        """
        _, first = np.unique(self.concat_to_unified, return_index=True)
        return first.astype(np.int64)

    def merges(self) -> Dict[str, List[str]]:
        """Unified names that more than one dataset class reads as.

        Returns:
            dict[str, list[str]]: unified name -> ``'<dataset>/<class>'`` of
            its members, for the names with at least two members.
        """
        members: Dict[int, List[str]] = {}
        for d, cs in enumerate(self.dataset_classes):
            for c, u in zip(cs, self.local_to_unified(d)):
                members.setdefault(int(u), []).append(f'{self.dataset_names[d]}/{c}')
        return {self.names[u]: m for u, m in members.items() if len(m) > 1}

    def log_merges(self, logger=None) -> None:
        """Log what is merged, once per distinct space in a process.

        Args:
            logger: Has ``info``; None uses mmengine's current logger.
        """
        key = tuple(self.names) + tuple(
            f'{n}={"|".join(cs)}' for n, cs in zip(self.dataset_names, self.dataset_classes))
        if key in _LOGGED:
            return
        _LOGGED.add(key)
        if logger is None:
            from mmengine.logging import MMLogger
            logger = MMLogger.get_current_instance()
        merges = self.merges()
        lines = [f'  {name}: {", ".join(m)}' for name, m in merges.items()]
        synonyms = [f'{k} -> {v}' for k, v in self.merge_table.items()]
        logger.info(
            f'unified label space: {self.num_concat} dataset classes -> {self.num_unified} '
            f'names; merge table: {synonyms or "none"}; merged by name:\n' +
            ('\n'.join(lines) if lines else '  nothing'))
