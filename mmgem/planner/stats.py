# Copyright (c) mmgem contributors. All rights reserved.
"""Dataset statistics files: what the planner needs to know of each dataset.

A statistics file (JSON, or YAML with PyYAML installed) looks like::

    {
      "benchmark": "UODB",
      "datasets": [
        {"name": "voc", "split": "07+12 trainval", "num_images": 16551,
         "exact": true, "classes": ["aeroplane", ...]},
        {"name": "dota", "num_images": 14348, "exact": false,
         "note": "approximate: ...", "classes": [...], "load": 7000}
      ],
      "prior": [["voc", "coco", "comic"], ["kitti", "lisa"]]
    }

``load`` (optional) is the expected number of images drawn per epoch when a
sampler does not draw every image once; it defaults to ``num_images``.
``features`` (optional) is a per-dataset vector for the feature similarity.
"""
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .errors import PlanError


@dataclass
class DatasetStats:
    """Statistics of the datasets of one plan.

    Attributes:
        names (list[str]): Dataset names, in file order.
        loads (list[float]): Expected images per epoch of each dataset.
        labels (dict[str, list[str]]): Class names per dataset (may be
            empty when the file gives none).
        prior (list[list[str]], optional): Prior groups, if the file has any.
        features (dict[str, list[float]], optional): Feature vectors.
        meta (dict): Everything else of the file (benchmark, notes...).
    """

    names: List[str]
    loads: List[float]
    labels: Dict[str, List[str]] = field(default_factory=dict)
    prior: Optional[List[List[str]]] = None
    features: Optional[Dict[str, List[float]]] = None
    meta: Dict = field(default_factory=dict)


def parse_dataset_stats(data: Dict, source: str = 'statistics') -> DatasetStats:
    """Validate a statistics mapping.

    Args:
        data (dict): The parsed file.
        source (str): Where it came from, for error messages.

    Returns:
        DatasetStats: The statistics.
    """
    if not isinstance(data, dict) or not isinstance(data.get('datasets'), list):
        raise PlanError(f'{source}: expected a mapping with a "datasets" list')
    names, loads, labels, feats = [], [], {}, {}
    for i, entry in enumerate(data['datasets']):
        if not isinstance(entry, dict) or 'name' not in entry:
            raise PlanError(f'{source}: datasets[{i}] needs a "name"')
        name = str(entry['name'])
        if name in names:
            raise PlanError(f'{source}: dataset {name!r} is listed twice')
        if 'load' in entry:
            load = entry['load']
        elif 'num_images' in entry:
            load = entry['num_images']
        else:
            raise PlanError(f'{source}: dataset {name!r} has neither "num_images" nor "load"')
        if isinstance(load, bool) or not isinstance(load, (int, float)):
            raise PlanError(f'{source}: dataset {name!r} has load {load!r}; expected a number')
        names.append(name)
        loads.append(float(load))
        if 'classes' in entry:
            labels[name] = [str(c) for c in entry['classes']]
        if 'features' in entry:
            feats[name] = [float(v) for v in entry['features']]
    if not names:
        raise PlanError(f'{source}: the "datasets" list is empty')
    prior = data.get('prior')
    if prior is not None:
        if not isinstance(prior, list):
            raise PlanError(f'{source}: "prior" must be a list of groups of dataset names')
        prior = [[str(n) for n in g] for g in prior]
    meta = {k: v for k, v in data.items() if k not in ('datasets', 'prior')}
    return DatasetStats(names=names, loads=loads, labels=labels, prior=prior,
                        features=feats if len(feats) == len(names) else None, meta=meta)


def load_dataset_stats(path: str) -> DatasetStats:
    """Read a statistics file (``.json``, ``.yaml`` or ``.yml``).

    Args:
        path (str): The file.

    Returns:
        DatasetStats: The statistics.
    """
    if not osp.isfile(path):
        raise PlanError(f'statistics file {path!r} does not exist')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if path.endswith(('.yaml', '.yml')):
        try:
            import yaml
        except ImportError as err:  # pragma: no cover
            raise PlanError(f'reading {path!r} needs PyYAML') from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise PlanError(f'statistics file {path!r} is not valid YAML: {err}') from err
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f'statistics file {path!r} is not valid JSON: {err}') from err
    return parse_dataset_stats(data, source=f'statistics file {path!r}')
