# Copyright (c) mmgem contributors. All rights reserved.
"""Small trees in the native formats of UODB's 11 datasets, for tests.

Each writer lays out one dataset as its download unpacks (see the
importers' docstrings in ``mmgem/datasets/converters``), with a few images
drawn here and annotations written from the format's documentation. The
values are chosen so that the expected COCO boxes can be worked out by hand;
the tests hold those expected values as literals.

Import with ``import native_fixtures`` (``tests/`` is on ``sys.path``).
"""
import hashlib
import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from PIL import Image

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')


def image(path: Path, size: Tuple[int, int], seed: int = 0, mode: str = 'RGB') -> Path:
    """Write a small noise image (JPEG or PNG by extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    shape = (h, w, 3) if mode == 'RGB' else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def voc_xml(filename: str, size: Tuple[int, int], objects, folder: str = 'VOC2007') -> str:
    """A Pascal VOC annotation (devkit format): objects are (name, (xmin,
    ymin, xmax, ymax), difficult)."""
    objs = ''.join(
        f'<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>'
        f'<difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>'
        f'<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>' for n, b, d in objects)
    return (f'<annotation><folder>{folder}</folder><filename>{filename}</filename>'
            f'<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>'
            f'<segmented>0</segmented>{objs}</annotation>')


def _voc_folder(ddir: Path, images: Dict[str, tuple], splits: Dict[str, list],
                folder: str, ext: str = '.jpg') -> None:
    """images: stem -> (real size, written size, objects)."""
    for i, (stem, (real, written, objects)) in enumerate(images.items()):
        image(ddir / 'JPEGImages' / f'{stem}{ext}', real, seed=i)
        (ddir / 'Annotations').mkdir(parents=True, exist_ok=True)
        (ddir / 'Annotations' / f'{stem}.xml').write_text(
            voc_xml(f'{stem}{ext}', written, objects, folder))
    (ddir / 'ImageSets' / 'Main').mkdir(parents=True, exist_ok=True)
    for split, stems in splits.items():
        (ddir / 'ImageSets' / 'Main' / f'{split}.txt').write_text(
            ''.join(f'{s}\n' for s in stems))


def write_voc(root: Path) -> Path:
    """``VOCdevkit/VOC2007`` (trainval 000001, test 000002) and
    ``VOCdevkit/VOC2012`` (trainval 2008_000001, whose XML has a wrong
    size)."""
    devkit = root / 'VOCdevkit'
    _voc_folder(devkit / 'VOC2007', {
        '000001': ((40, 30), (40, 30), [('dog', (2, 3, 11, 13), 0),
                                        ('person', (1, 1, 40, 30), 1)]),
        '000002': ((40, 30), (40, 30), [('car', (5, 5, 15, 25), 0)]),
    }, {'trainval': ['000001'], 'test': ['000002']}, 'VOC2007')
    _voc_folder(devkit / 'VOC2012', {
        '2008_000001': ((50, 20), (999, 999), [('cat', (10, 5, 20, 15), 0)]),
    }, {'trainval': ['2008_000001']}, 'VOC2012')
    return devkit




def coco_categories(classes):
    """COCO's category ids: 1..90 with gaps (id = index + 1, + 1 after 11)."""
    return [dict(id=i + 1 if i < 11 else i + 2, name=c, supercategory='x')
            for i, c in enumerate(classes)]


def write_coco(root: Path, classes) -> Path:
    """``coco/annotations/instances_val{2014,2017}.json`` and ``val2014/``:
    val2014 has images 1, 2, 3; val2017 (= minival) has image 2."""
    coco = root / 'coco'
    (coco / 'annotations').mkdir(parents=True)
    images14 = []
    for i, (w, h) in zip((1, 2, 3), ((20, 20), (20, 20), (30, 30))):
        name = f'COCO_val2014_{i:012d}.jpg'
        image(coco / 'val2014' / name, (20, 20), seed=i)  # image 3 is really 20x20
        images14.append(dict(id=i, file_name=name, width=w, height=h))
    anns = [
        dict(id=10, image_id=1, category_id=1, bbox=[1, 2, 3, 4], area=12, iscrowd=0,
             segmentation=[[1, 2, 4, 2, 4, 6]]),
        dict(id=11, image_id=2, category_id=18, bbox=[5, 5, 10, 10], area=100, iscrowd=0),
        dict(id=12, image_id=3, category_id=1, bbox=[0, 0, 0, 5], area=0, iscrowd=0),
        dict(id=13, image_id=2, category_id=1, bbox=[0, 0, 4, 4], area=16, iscrowd=1),
    ]
    cats = coco_categories(classes)
    (coco / 'annotations' / 'instances_val2014.json').write_text(
        json.dumps(dict(images=images14, annotations=anns, categories=cats)))
    (coco / 'annotations' / 'instances_val2017.json').write_text(json.dumps(dict(
        images=[dict(id=2, file_name='000000000002.jpg', width=20, height=20)],
        annotations=[a for a in anns if a['image_id'] == 2], categories=cats)))
    return coco


KITTI_LABELS = {
    '000000': [
        'Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59',
        'Pedestrian 0.00 0 0.21 423.17 173.67 433.17 224.03 1.87 0.50 0.80 -5.13 1.55 27.71 0.03',
        'DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10',
        'Person_sitting 0.00 1 1.00 100.00 150.00 140.50 220.00 1.2 0.6 0.8 1 1 10 1',
        'Van 0.50 2 -1.00 0.00 180.00 60.00 250.00 2.0 1.8 4.5 -8 1.7 12 -1.5',
        'Misc 0.00 0 0.00 650.00 160.00 690.00 200.00 1 1 1 1 1 30 0',
    ],
}


def write_kitti(root: Path, num_images: int = 8) -> Path:
    """``kitti/training/{image_2,label_2}``: image 000000 holds the objects
    of :data:`KITTI_LABELS`; the others one cyclist each."""
    kitti = root / 'kitti'
    (kitti / 'training' / 'label_2').mkdir(parents=True)
    for i in range(num_images):
        stem = f'{i:06d}'
        image(kitti / 'training' / 'image_2' / f'{stem}.png', (700, 300), seed=i)
        lines = KITTI_LABELS.get(stem, [
            f'Cyclist 0.00 0 0.00 {10 + i}.00 20.00 {40 + i}.00 80.00 1.7 0.6 1.8 1 1 9 0'])
        (kitti / 'training' / 'label_2' / f'{stem}.txt').write_text('\n'.join(lines) + '\n')
    return kitti


def write_dota(root: Path) -> Path:
    """``dota/{train,val}/{images,labelTxt}``: P0001 (300 x 200) with five
    objects placed around the patch borders of 128 px patches with a 28 px
    gap; P0002 (50 x 50, smaller than a patch) in val."""
    dota = root / 'dota'
    image(dota / 'train' / 'images' / 'P0001.png', (300, 200), seed=1)
    image(dota / 'val' / 'images' / 'P0002.png', (50, 50), seed=2)
    (dota / 'train' / 'labelTxt').mkdir(parents=True)
    (dota / 'val' / 'labelTxt').mkdir(parents=True)
    (dota / 'train' / 'labelTxt' / 'P0001.txt').write_text(
        'imagesource:GoogleEarth\ngsd:0.146343590398\n'
        '10 10 50 10 50 50 10 50 plane 0\n'                   # A
        '150 80 170 100 150 120 130 100 ship 0\n'             # B (a diamond)
        '120 20 140 20 140 40 120 40 small-vehicle 0\n'       # C
        '165 150 185 150 185 170 165 170 harbor 0\n'          # D
        '95 150 115 150 115 170 95 170 storage-tank 0\n')     # E
    (dota / 'val' / 'labelTxt' / 'P0002.txt').write_text(
        '5 5 25 5 25 15 5 15 large-vehicle 1\n')
    return dota


def _hu_png(path: Path, hu: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((hu + 32768).astype(np.uint16)).save(path)


#: HU values of the DeepLesion slices' first row of pixels, and the 8-bit
#: values the default window [-1024, 3071] gives them.
DEEPLESION_HU = np.array([-2000, -1024, -205, 3071, 4000], dtype=np.int32)
DEEPLESION_8BIT = np.array([0, 0, 51, 255, 255], dtype=np.uint8)


def write_deeplesion(root: Path) -> Path:
    """``deeplesion/DL_info.csv`` and ``Images_png``: three key slices of
    32 x 32 (one with two lesions, one noisy row), one per split code."""
    dl = root / 'deeplesion'
    rows = [
        # File_name, box, size, window, noisy, split
        ('000001_01_01_005.png', '3.5, 4.0, 10.25, 12.0', '-175, 275', 0, 1),
        ('000001_01_01_005.png', '20, 20, 30, 31', '-175, 275', 1, 1),
        ('000002_01_01_010.png', '0, 0, 8, 8', '-1500, 500', 0, 3),
        ('000003_02_01_007.png', '5, 6, 7, 9', '-160, 240', 0, 2),
    ]
    header = ('File_name,Patient_index,Study_index,Series_ID,Key_slice_index,'
              'Measurement_coordinates,Bounding_boxes,Lesion_diameters_Pixel_,'
              'Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,'
              'Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,'
              'Train_Val_Test')
    lines = [header]
    for name, box, window, noisy, split in rows:
        p, s, r, k = name[:-4].split('_')
        lines.append(f'{name},{int(p)},{int(s)},{int(r)},{int(k)},"1, 2, 3, 4","{box}",'
                     f'"5.0, 3.0","0.5, 0.5, 0.5",-1,{noisy},"{int(k) - 1}, {int(k) + 1}",'
                     f'"0.8, 0.8, 5","32, 32","{window}",M,50,{split}')
        hu = np.full((32, 32), 40, dtype=np.int32)
        hu[0, :5] = DEEPLESION_HU
        _hu_png(dl / 'Images_png' / f'{p}_{s}_{r}' / f'{k}.png', hu)
    (dl / 'DL_info.csv').write_text('\n'.join(lines) + '\n')
    return dl


def lisa_video(test: bool, test_fraction: float = 0.2) -> str:
    """A video name that LISA's documented hash rule puts in ``test`` (or
    ``train``)."""
    for i in range(1000):
        name = f'vid{i}.avi'
        digest = hashlib.blake2b(f'lisa/{name}'.encode(), digest_size=8).digest()
        if (int.from_bytes(digest, 'big') % 10000 < round(10000 * test_fraction)) == test:
            return name
    raise RuntimeError('no video name found')


def write_lisa(root: Path) -> Path:
    """``lisa/allAnnotations.csv`` and three frames (640 x 480 and
    1024 x 522): two from a train video, one from a test video."""
    lisa = root / 'lisa'
    train_video, test_video = lisa_video(False), lisa_video(True)
    frames = [
        ('aiua120214-0/frameAnnotations-a/stop_1.png', (64, 48), train_video, [
            ('stop', (10, 12, 30, 32), '0,0'), ('noLeftTurn', (40, 5, 50, 15), '0,0')]),
        ('aiua120214-0/frameAnnotations-a/speedLimit25_2.png', (64, 48), train_video, [
            ('speedLimit25', (1, 2, 11, 22), '0,0'), ('keepRight', (20, 20, 30, 30), '0,0')]),
        ('aiua120214-1/frameAnnotations-b/curveLeft_3.png', (80, 40), test_video, [
            ('curveLeft', (60, 10, 90, 30), '1,0')]),
    ]
    lines = ['Filename;Annotation tag;Upper left corner X;Upper left corner Y;'
             'Lower right corner X;Lower right corner Y;Occluded,On another road;'
             'Origin file;Origin frame number;Origin track;Origin track frame number']
    for i, (name, size, video, signs) in enumerate(frames):
        image(lisa / name, size, seed=i)
        for tag, (x1, y1, x2, y2), flags in signs:
            lines.append(f'{name};{tag};{x1};{y1};{x2};{y2};{flags};{video};{i};{tag}_1;{i}')
    (lisa / 'allAnnotations.csv').write_text('\n'.join(lines) + '\n')
    return lisa


def write_widerface(root: Path) -> Path:
    """``widerface/WIDER_{train,val}/images`` and the two ``bbx_gt`` files:
    a zero-size face, an invalid face and an image without faces."""
    wf = root / 'widerface'
    image(wf / 'WIDER_train' / 'images' / '0--Parade' / '0_Parade_a.jpg', (100, 80), 1)
    image(wf / 'WIDER_train' / 'images' / '1--Handshaking' / '1_b.jpg', (60, 40), 2)
    image(wf / 'WIDER_val' / 'images' / '0--Parade' / '0_Parade_c.jpg', (100, 80), 3)
    (wf / 'wider_face_split').mkdir(parents=True)
    (wf / 'wider_face_split' / 'wider_face_train_bbx_gt.txt').write_text(
        '0--Parade/0_Parade_a.jpg\n3\n'
        '10 20 30 40 0 0 0 0 0 0 \n'
        '5 5 0 0 2 0 0 0 0 0 \n'
        '50 10 8 8 2 0 0 1 0 0 \n'
        '1--Handshaking/1_b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n')
    (wf / 'wider_face_split' / 'wider_face_val_bbx_gt.txt').write_text(
        '0--Parade/0_Parade_c.jpg\n1\n70 50 40 40 0 0 0 0 1 0 \n')
    return wf


def write_kitchen(root: Path) -> Path:
    """``kitchen/gmu_scene_00{1,2,4,5}/{Images,Annotations}``, one frame per
    scene (PNG, VOC XML with the scene as ``<folder>``)."""
    kitchen = root / 'kitchen'
    objects = {
        1: [('coca_cola_glass_bottle', (11, 21, 30, 60), 0), ('red_bull', (40, 5, 50, 25), 0)],
        2: [('pringles_bbq', (1, 1, 20, 20), 0)],
        4: [('hunts_sauce', (5, 6, 25, 36), 0)],
        5: [('mahatma_rice', (30, 10, 60, 40), 0)],
    }
    for k, objs in objects.items():
        scene = kitchen / f'gmu_scene_00{k}'
        image(scene / 'Images' / 'rgb_1.png', (64, 64), seed=k)
        (scene / 'Annotations').mkdir(parents=True)
        (scene / 'Annotations' / 'rgb_1.xml').write_text(
            voc_xml('rgb_1.png', (64, 64), objs, folder=f'gmu_scene_00{k}'))
    return kitchen


def write_cross_domain(root: Path, name: str, classes) -> Path:
    """A VOC-style folder as Inoue et al.'s download (train/test one image
    each)."""
    ddir = root / name
    _voc_folder(ddir, {
        f'{name}_1': ((48, 32), (48, 32), [(classes[0], (3, 4, 20, 30), 0)]),
        f'{name}_2': ((48, 32), (48, 32), [(classes[-1], (10, 10, 40, 20), 1)]),
    }, {'train': [f'{name}_1'], 'test': [f'{name}_2']}, name)
    return ddir


def write_native_uodb(root: Path) -> Path:
    """All 11 datasets' native trees under ``root``, in the default places
    of :data:`mmgem.datasets.converters.NATIVE_SOURCES`."""
    from mmgem.datasets import UODB_CLASSES
    root.mkdir(parents=True, exist_ok=True)
    write_voc(root)
    write_coco(root, UODB_CLASSES['coco'])
    write_kitti(root)
    write_dota(root)
    write_deeplesion(root)
    write_lisa(root)
    write_widerface(root)
    write_kitchen(root)
    for name in ('comic', 'clipart', 'watercolor'):
        write_cross_domain(root, name, UODB_CLASSES[name])
    return root
