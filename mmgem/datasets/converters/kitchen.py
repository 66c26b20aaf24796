# Copyright (c) mmgem contributors. All rights reserved.
"""Kitchen: the GMU Kitchen Scenes dataset.

UODB's "Kitchen" is the GMU Kitchen Scenes dataset (Georgakis et al.,
"Multiview RGB-D Dataset for Object Instance Detection", 3DV 2016): nine
kitchen scenes filmed with a Kinect v2, 11 product instances of the BigBird
set annotated with 2D boxes. UODB's loader (``lib/datasets/kitchen_voc.py``
of the UODB code) lists exactly these 11 product names as its classes and
reads ``.png`` images; DAMEX's ``voc_to_coco.py`` names a Kitchen image
``<folder>_<filename>``, the scene folder and the frame, as in GMU's
annotations.

The download (``gmu_scene_001.zip`` ... ``gmu_scene_009.zip``) unpacks to::

    <kitchen>/gmu_scene_00<k>/Images/rgb_<n>.png
    <kitchen>/gmu_scene_00<k>/Annotations/rgb_<n>.xml     (Pascal VOC XML)

(plus depth maps and 3D annotations, which are not used). The XML files are
read with :func:`~.voc.parse_voc_xml` (1-based corners, as VOC); images are
named ``gmu_scene_00<k>_rgb_<n>.png`` in the output.

Split (GMU has no official train/test file for detection; it evaluates on
scene-disjoint folds): ``test`` is the frames of ``test_scenes`` (default
scenes 2, 4 and 5, the fold-1 test scenes of a public Cut-and-Paste
reimplementation), ``train`` the frames of the other scenes, so no scene
appears on both sides.
"""
import os
import os.path as osp
from typing import List, Sequence

from .common import (
    ClassMap,
    ConversionStats,
    ImageLinker,
    SampleError,
    skip_or_raise,
    split_builder,
)
from .voc import add_voc_images

KITCHEN_SPLITS = ('train', 'test')
KITCHEN_TEST_SCENES = (2, 4, 5)


def kitchen_scenes(root: str) -> List[str]:
    """The scene folders of a GMU Kitchen download.

    Args:
        root (str): The folder holding ``gmu_scene_00<k>/``.

    Returns:
        list[str]: Scene folder names, sorted.

    Raises:
        FileNotFoundError: If there is none.
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f'Kitchen: folder not found: {root}')
    scenes = sorted(d for d in os.listdir(root)
                    if d.startswith('gmu_scene_') and osp.isdir(osp.join(root, d)))
    if not scenes:
        raise FileNotFoundError(f'Kitchen: no gmu_scene_* folder in {root}')
    return scenes


def scene_number(scene: str) -> int:
    """``gmu_scene_004`` -> 4.

    Args:
        scene (str): Scene folder name.

    Returns:
        int: Its number.
    """
    try:
        return int(scene.rsplit('_', 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f'Kitchen: {scene!r} is not a gmu_scene_<number> folder') from None


def import_kitchen(root: str,
                   out_dir: str,
                   final_dir: str,
                   classes: Sequence[str],
                   splits: Sequence[str] = KITCHEN_SPLITS,
                   dataset: str = 'kitchen',
                   test_scenes: Sequence[int] = KITCHEN_TEST_SCENES,
                   check_images: bool = True,
                   drop_unknown: bool = False,
                   skip_bad: bool = False,
                   link_mode: str = 'symlink') -> List[ConversionStats]:
    """Import the GMU Kitchen scenes as UODB's Kitchen train/test.

    Args:
        root (str): The folder holding ``gmu_scene_00<k>/``.
        out_dir (str): The dataset's output folder being written.
        final_dir (str): Where ``out_dir`` ends up.
        classes (Sequence[str]): The 11 product names.
        splits (Sequence[str]): Of ``'train'`` and ``'test'``.
        dataset (str): Output dataset name.
        test_scenes (Sequence[int]): Scene numbers of ``test``.
        check_images (bool): See :func:`~.voc.add_voc_images`.
        drop_unknown (bool): Drop names outside the 11 classes.
        skip_bad (bool): Skip and count bad samples.
        link_mode (str): How images get into ``JPEGImages/``.

    Returns:
        list[ConversionStats]: One per split.
    """
    scenes = kitchen_scenes(root)
    numbers = {s: scene_number(s) for s in scenes}
    unknown = sorted(set(test_scenes) - set(numbers.values()))
    if unknown:
        raise ValueError(f'Kitchen: test scene(s) {unknown} are not in {root} '
                         f'(has {sorted(numbers.values())})')
    linker = ImageLinker.for_dataset(out_dir, final_dir, link_mode)
    rule = f'test: scenes {sorted(test_scenes)}; train: the other scenes'
    results = []
    for split in splits:
        if split not in KITCHEN_SPLITS:
            raise ValueError(f'Kitchen: unknown split {split!r}, expected one of '
                             f'{KITCHEN_SPLITS}')
        builder = split_builder(dataset, split, final_dir,
                                ClassMap(dataset, classes, drop_unknown=drop_unknown),
                                'GMU Kitchen Scenes', rule)
        stats = builder.stats
        for scene in scenes:
            if (numbers[scene] in test_scenes) != (split == 'test'):
                continue
            scene_dir = osp.join(root, scene)
            ann_dir = osp.join(scene_dir, 'Annotations')
            if not osp.isdir(ann_dir):
                skip_or_raise(SampleError(f'Kitchen: no Annotations folder in {scene_dir}',
                                          reason='bad scene'), skip_bad, stats)
                continue
            stems = sorted(osp.splitext(f)[0] for f in os.listdir(ann_dir) if f.endswith('.xml'))
            before = stats.images
            add_voc_images(builder, scene_dir, stems, check_images, skip_bad, linker,
                           file_name_of=lambda stem, found, ann, s=scene: f'{s}_{found}',
                           image_folder='Images')
            stats.notes[f'scene {numbers[scene]}'] = stats.images - before
        builder.write_split(out_dir, 'GMU Kitchen Scenes')
        results.append(stats)
    return results

