# Copyright (c) mmgem contributors. All rights reserved.
"""Importers that turn UODB's datasets into the COCO JSON ``UODBDataset``
reads.

Two entry points (``tools/dataset_converters/uodb2coco.py`` is the CLI):

- :func:`convert_uodb`: UODB's own VOC-style layout (one folder per
  dataset), as UODB was once distributed, and mini-UODB;
- :func:`convert_native`: the 11 datasets' own downloads (VOC devkits,
  official COCO files, KITTI ``label_2``, DOTA ``labelTxt``, DeepLesion's
  csv and 16-bit slices, LISA's csv, WIDER FACE's ground-truth files, the
  GMU Kitchen scenes, the cross-domain VOC-style sets).

Both write into a staging folder and move everything into place only when
every dataset converted. The importers use only the standard library, Pillow
and numpy.
"""
from .check import REFERENCE_COUNTS, ReferenceCount, check_counts, format_check
from .coco import convert_coco_json, import_coco
from .common import (
    ClassMap,
    CocoBuilder,
    ConversionStats,
    ImageLinker,
    MissingImageError,
    SampleError,
    UnsafePathError,
    confined_path,
    format_examples,
    format_stats,
    image_size,
)
from .deeplesion import import_deeplesion, window_hu
from .dota import clip_polygon, import_dota, polygon_area, window_starts
from .kitchen import import_kitchen
from .kitti import import_kitti
from .lisa import LISA_TAG_TO_CLASS, import_lisa
from .native import NATIVE_OPTIONS, NATIVE_SOURCES, convert_native
from .uodb import PRESETS, coco_json_source, convert_uodb, output_file
from .voc import convert_voc_split, import_voc_devkit, parse_voc_xml, read_split
from .widerface import import_widerface, parse_bbx_gt

__all__ = [
    'convert_uodb', 'convert_native', 'convert_voc_split', 'convert_coco_json',
    'import_voc_devkit', 'import_coco', 'import_kitti', 'import_dota', 'import_deeplesion',
    'import_lisa', 'import_widerface', 'import_kitchen', 'parse_voc_xml', 'read_split',
    'parse_bbx_gt', 'ConversionStats', 'ClassMap', 'CocoBuilder', 'ImageLinker', 'SampleError',
    'MissingImageError', 'format_stats', 'format_examples', 'image_size', 'check_counts',
    'format_check', 'REFERENCE_COUNTS', 'ReferenceCount', 'LISA_TAG_TO_CLASS', 'PRESETS',
    'NATIVE_SOURCES', 'NATIVE_OPTIONS', 'coco_json_source', 'output_file', 'window_hu',
    'clip_polygon', 'polygon_area', 'window_starts', 'UnsafePathError', 'confined_path'
]
