# Copyright (c) mmgem contributors. All rights reserved.
"""A detection visualizer that keeps the images of K datasets apart."""
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from mmdet.registry import VISUALIZERS
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer


@VISUALIZERS.register_module()
class UODBLocalVisualizer(DetLocalVisualizer):
    """``DetLocalVisualizer`` for :class:`~mmgem.datasets.UODBDataset` samples.

    mmdet's tools name a drawn image by ``basename(img_path)``: mmdet's
    ``browse_dataset.py --output-dir D`` writes ``D/<file>``,
    ``DetVisualizationHook`` (``test.py --show-dir D``) writes
    ``<work_dir>/<timestamp>/D/<file>``, ``DetInferencer`` writes
    ``<out_dir>/vis/<file>``. UODB's datasets (and mini-UODB's) all name
    their images ``000000.jpg, 000001.jpg, ...``, so the images of one dataset
    silently overwrite another's. For a sample whose dataset is known (its
    metainfo has ``dataset_name``, or ``dataset_id`` and the visualizer's
    ``dataset_meta`` has ``dataset_names``), this visualizer

    - writes ``out_file`` one folder deeper, in a folder named after the
      dataset: ``D/<dataset>/<file>`` (so mmdet's own tools work unchanged,
      with this visualizer in the config's ``visualizer``);
    - labels boxes of that dataset's classes with the class name alone
      (``person``, not ``natural/person``); a box with another dataset's
      label (possible only with ``restrict_test_labels=False``) keeps the
      prefixed name, so it cannot be mistaken for one of the folder's.

    Samples without a known dataset (``GEMDetInferencer`` with the dataset
    unknown, plain mmdet datasets) are drawn exactly as by
    ``DetLocalVisualizer``.

    Args:
        name (str): The visualizer's instance name. Defaults to
            ``'visualizer'``.
        dataset_subdirs (bool): Put files in per-dataset folders. Defaults to
            True.
        strip_dataset_prefix (bool): Show the folder's class names without
            ``<dataset>/``. Defaults to True.
        *args, **kwargs: Those of ``DetLocalVisualizer``.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 *args,
                 dataset_subdirs: bool = True,
                 strip_dataset_prefix: bool = True,
                 **kwargs) -> None:
        super().__init__(name, *args, **kwargs)
        self.dataset_subdirs = dataset_subdirs
        self.strip_dataset_prefix = strip_dataset_prefix

    def sample_dataset(self, data_sample: Optional[DetDataSample]) -> Optional[str]:
        """The dataset name of a sample, or None when it is not known.

        Args:
            data_sample (DetDataSample, optional): The sample.

        Returns:
            str | None: ``metainfo['dataset_name']``, else the name of
            ``metainfo['dataset_id']`` in ``dataset_meta['dataset_names']``.
        """
        if data_sample is None:
            return None
        meta = data_sample.metainfo
        if meta.get('dataset_name'):
            return str(meta['dataset_name'])
        names = (self.dataset_meta or {}).get('dataset_names')
        if 'dataset_id' in meta and names is not None:
            dataset_id = int(meta['dataset_id'])
            if not 0 <= dataset_id < len(names):
                raise ValueError(
                    f'UODBLocalVisualizer: image {meta.get("img_path", "?")} has dataset_id '
                    f'{dataset_id}, but dataset_meta names {len(names)} datasets')
            return str(names[dataset_id])
        return None

    @staticmethod
    def dataset_out_file(out_file: str, dataset: str) -> str:
        """``D/<file>`` -> ``D/<dataset>/<file>``.

        Args:
            out_file (str): The path mmdet's tool chose.
            dataset (str): The dataset name.

        Returns:
            str: The path inside the dataset's folder.
        """
        return osp.join(osp.dirname(out_file), dataset, osp.basename(out_file))

    @staticmethod
    def display_classes(classes: Sequence[str], dataset: str) -> tuple:
        """Class names with ``<dataset>/`` removed from the dataset's own.

        Args:
            classes (Sequence[str]): The concatenated label space's names
                (``'<dataset>/<class>'``).
            dataset (str): The dataset whose prefix is removed.

        Returns:
            tuple[str]: Names for drawing, index for index.
        """
        prefix = f'{dataset}/'
        return tuple(c[len(prefix):] if c.startswith(prefix) else c for c in classes)

    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample: Optional[DetDataSample] = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       pred_score_thr: float = 0.3,
                       step: int = 0) -> None:
        """Draw a sample as ``DetLocalVisualizer`` does, in its dataset's folder.

        Args:
            name (str): The image identifier (for the vis backends).
            image (np.ndarray): The RGB image to draw on.
            data_sample (DetDataSample, optional): Annotations and/or
                predictions.
            draw_gt (bool): Draw the ground truth. Defaults to True.
            draw_pred (bool): Draw the predictions. Defaults to True.
            show (bool): Show in a window. Defaults to False.
            wait_time (float): Seconds to show. Defaults to 0.
            out_file (str, optional): Path mmdet's tool chose; written as
                ``dirname/<dataset>/basename`` for a sample of a known
                dataset.
            pred_score_thr (float): Score threshold of drawn predictions.
                Defaults to 0.3.
            step (int): Global step for the vis backends. Defaults to 0.
        """
        dataset = self.sample_dataset(data_sample)
        if dataset is not None and out_file is not None and self.dataset_subdirs:
            out_file = self.dataset_out_file(out_file, dataset)
        meta = self.dataset_meta
        if dataset is not None and self.strip_dataset_prefix and meta and meta.get('classes'):
            self.dataset_meta = dict(meta, classes=self.display_classes(meta['classes'], dataset))
        try:
            super().add_datasample(
                name,
                image,
                data_sample,
                draw_gt=draw_gt,
                draw_pred=draw_pred,
                show=show,
                wait_time=wait_time,
                out_file=out_file,
                pred_score_thr=pred_score_thr,
                step=step)
        finally:
            self.dataset_meta = meta
