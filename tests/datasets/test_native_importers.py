# Copyright (c) mmgem contributors. All rights reserved.
"""Each native importer on a small tree in its dataset's own format.

The trees come from ``tests/native_fixtures.py`` (annotations
written from each format's documentation); the expected COCO values below
are worked out by hand from those annotations (comments give the
arithmetic).
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgem.datasets import UODB_CLASSES
from mmgem.datasets.converters import (
    LISA_TAG_TO_CLASS,
    SampleError,
    clip_polygon,
    convert_native,
    polygon_area,
    window_starts,
)


@pytest.fixture(scope='module')
def nf():
    import native_fixtures

    return native_fixtures


def _coco(out: Path, name: str, split: str) -> dict:
    return json.loads((out / name / 'annotations' / f'{split}.json').read_text())


def _boxes(coco: dict) -> list:
    """(file name, category name, bbox, iscrowd) per annotation."""
    files = {i['id']: i['file_name'] for i in coco['images']}
    names = {c['id']: c['name'] for c in coco['categories']}
    return [(files[a['image_id']], names[a['category_id']], a['bbox'], a['iscrowd'])
            for a in coco['annotations']]


def _convert(tmp_path, name, writer, **kwargs):
    src = tmp_path / 'src'
    writer(src)
    out = tmp_path / 'out'
    stats = convert_native(str(src), out=str(out), datasets=[name], **kwargs)
    return src, out, {s.split: s for s in stats}


def test_voc_devkits_07_12(tmp_path, nf):
    _, out, stats = _convert(tmp_path, 'voc', nf.write_voc)
    trainval = _coco(out, 'voc', 'trainval')
    # 07 trainval then 12 trainval; the 2012 XML says 999x999, the image is 50x20
    assert [(i['id'], i['file_name'], i['width'], i['height']) for i in trainval['images']] == \
        [(1, '000001.jpg', 40, 30), (2, '2008_000001.jpg', 50, 20)]
    # VOC corners are 1-based: [xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]
    assert _boxes(trainval) == [('000001.jpg', 'dog', [1, 2, 9, 10], 0),
                                ('000001.jpg', 'person', [0, 0, 39, 29], 1),  # difficult
                                ('2008_000001.jpg', 'cat', [9, 4, 10, 10], 0)]
    assert [c['name'] for c in trainval['categories']] == list(UODB_CLASSES['voc'])
    assert trainval['annotations'][0]['category_id'] == 12  # dog is VOC's 12th class
    assert stats['trainval'].size_fixed == 1 and stats['trainval'].difficult == 1
    assert _boxes(_coco(out, 'voc', 'test')) == [('000002.jpg', 'car', [4, 4, 10, 20], 0)]
    link = out / 'voc' / 'JPEGImages' / '2008_000001.jpg'
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    with Image.open(link) as im:
        assert im.size == (50, 20)


def test_coco_minival_from_val2014_and_val2017(tmp_path, nf):
    _, out, stats = _convert(tmp_path, 'coco', lambda r: nf.write_coco(r, UODB_CLASSES['coco']))
    vmm, mini = _coco(out, 'coco', 'valminusminival'), _coco(out, 'coco', 'minival')
    # val2017 holds image 2 only: minival = {2}, valminusminival = {1, 3}
    assert [i['id'] for i in vmm['images']] == [1, 3]
    assert [i['id'] for i in mini['images']] == [2]
    assert mini['images'][0]['file_name'] == 'COCO_val2014_000000000002.jpg'  # 2014 names
    # image 3's json says 30x30, the file is 20x20; its only box has width 0
    assert (vmm['images'][1]['width'], vmm['images'][1]['height']) == (20, 20)
    assert stats['valminusminival'].size_fixed == 1 and stats['valminusminival'].zero_area == 1
    assert [a['id'] for a in vmm['annotations']] == [10]
    assert 'segmentation' not in vmm['annotations'][0]
    # COCO's ids are kept: annotation 11 is a dog (category 18), 13 a crowd
    assert [(a['id'], a['category_id'], a['bbox'], a['iscrowd'])
            for a in mini['annotations']] == [(11, 18, [5, 5, 10, 10], 0),
                                              (13, 1, [0, 0, 4, 4], 1)]
    assert [c['name'] for c in mini['categories']] == list(UODB_CLASSES['coco'])


def _kitti_in_test(image_id: str) -> bool:
    # the rule as documented: blake2b('kitti/<id>') mod 10000 < 5000 -> test
    digest = hashlib.blake2b(f'kitti/{image_id}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'big') % 10000 < 5000


def test_kitti_label_2_class_map_and_split(tmp_path, nf):
    _, out, stats = _convert(tmp_path, 'kitti', nf.write_kitti)
    ids = [f'{i:06d}' for i in range(8)]
    for split in ('trainval', 'test'):
        coco = _coco(out, 'kitti', split)
        want = [i for i in ids if _kitti_in_test(i) == (split == 'test')]
        assert [i['file_name'] for i in coco['images']] == [f'{i}.png' for i in want]
        assert all((i['width'], i['height']) == (700, 300) for i in coco['images'])
    both = _boxes(_coco(out, 'kitti', 'trainval')) + _boxes(_coco(out, 'kitti', 'test'))
    first = [b[1:] for b in both if b[0] == '000000.png']
    # Car, Pedestrian, (DontCare dropped), Person_sitting -> pedestrian, Van -> car,
    # (Misc dropped); box = [left, top, right - left, bottom - top]
    assert first == [('car', [587.01, 173.33, 27.11, 26.79], 0),
                     ('pedestrian', [423.17, 173.67, 10, 50.36], 0),
                     ('pedestrian', [100, 150, 40.5, 70], 0),
                     ('car', [0, 180, 60, 70], 0)]
    assert ('000003.png', 'cyclist', [13, 20, 30, 60], 0) in both
    merged = stats['trainval'].mapped + stats['test'].mapped
    dropped = stats['trainval'].ignored + stats['test'].ignored
    assert merged == {'person_sitting': 1, 'van': 1} and dropped == {'dontcare': 1, 'misc': 1}
    assert 'blake2b' in stats['test'].split_rule


def test_kitti_list_files_and_person_sitting_ignored(tmp_path, nf):
    src = tmp_path / 'src'
    nf.write_kitti(src)
    (src / 'kitti' / 'ImageSets').mkdir()
    (src / 'kitti' / 'ImageSets' / 'trainval.txt').write_text('000000\n000001\n')
    (src / 'kitti' / 'ImageSets' / 'test.txt').write_text('000002\n')
    out = tmp_path / 'out'
    stats = convert_native(str(src), out=str(out), datasets=['kitti'],
                           options=dict(kitti=dict(person_sitting='ignore')))
    assert [i['file_name'] for i in _coco(out, 'kitti', 'trainval')['images']] == \
        ['000000.png', '000001.png']
    assert [i['file_name'] for i in _coco(out, 'kitti', 'test')['images']] == ['000002.png']
    assert stats[0].ignored['person_sitting'] == 1 and stats[0].annotations == 4
    (src / 'kitti' / 'ImageSets' / 'test.txt').write_text('000001\n')
    with pytest.raises(ValueError, match="'000001' is in both"):
        convert_native(str(src), out=str(out), datasets=['kitti'])


def test_dota_patches_like_the_devkit(tmp_path, nf):
    src, out, stats = _convert(tmp_path, 'dota', nf.write_dota,
                               options=dict(dota=dict(patch_size=128, gap=28)))
    train = _coco(out, 'dota', 'train')
    # 300 x 200 px, patches of 128 px with stride 100: x starts 0, 100, 172
    # (the last moved back to end at 300), y starts 0, 72; the (172, 0) patch
    # holds no object and is dropped
    assert [(i['id'], i['file_name'], i['width'], i['height']) for i in train['images']] == [
        (1, 'P0001__1__0___0.png', 128, 128), (2, 'P0001__1__100___0.png', 128, 128),
        (3, 'P0001__1__0___72.png', 128, 128), (4, 'P0001__1__100___72.png', 128, 128),
        (5, 'P0001__1__172___72.png', 128, 128)]
    assert _boxes(train) == [
        ('P0001__1__0___0.png', 'plane', [10, 10, 40, 40], 0),            # A whole
        ('P0001__1__0___0.png', 'small-vehicle', [120, 20, 8, 20], 1),     # C: 8/20 inside
        ('P0001__1__100___0.png', 'ship', [30, 80, 40, 40], 0),            # B diamond's hbb
        ('P0001__1__100___0.png', 'small-vehicle', [20, 20, 20, 20], 0),   # C whole
        ('P0001__1__0___72.png', 'storage-tank', [95, 78, 20, 20], 0),     # E whole
        ('P0001__1__100___72.png', 'ship', [30, 8, 40, 40], 0),            # B whole
        ('P0001__1__100___72.png', 'harbor', [65, 78, 20, 20], 0),         # D whole
        ('P0001__1__100___72.png', 'storage-tank', [0, 78, 15, 20], 0),    # E: 15/20 > 0.7
        ('P0001__1__172___72.png', 'harbor', [0, 78, 13, 20], 1),          # D: 13/20 <= 0.7
    ]
    assert stats['train'].notes['cut'] == 1 and stats['train'].notes['cut_difficult'] == 2
    with Image.open(src / 'dota' / 'train' / 'images' / 'P0001.png') as im:
        full = np.asarray(im)
    with Image.open(out / 'dota' / 'JPEGImages' / 'P0001__1__100___72.png') as im:
        np.testing.assert_array_equal(np.asarray(im), full[72:200, 100:228])
    # val: a 50 x 50 image is one 50 x 50 patch; its object is difficult (flag 1)
    assert _boxes(_coco(out, 'dota', 'val')) == \
        [('P0002__1__0___0.png', 'large-vehicle', [5, 5, 20, 10], 1)]


def test_polygon_clipping_and_windows():
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert polygon_area(square) == 100
    assert polygon_area(clip_polygon(square, 5, -1, 20, 20)) == 50
    diamond = [(5, 0), (10, 5), (5, 10), (0, 5)]  # area 50
    assert polygon_area(clip_polygon(diamond, 0, 0, 5, 10)) == pytest.approx(25)
    assert clip_polygon(square, 20, 20, 30, 30) == []
    assert window_starts(300, 128, 100) == [0, 100, 172]
    assert window_starts(50, 128, 100) == [0]
    assert window_starts(228, 128, 100) == [0, 100]


def test_deeplesion_windowing_and_splits(tmp_path, nf):
    _, out, stats = _convert(tmp_path, 'deeplesion', nf.write_deeplesion)
    # Train_Val_Test: 1 -> train, 2 -> val, 3 -> test, trainval = 1 + 2
    files = {s: [i['file_name'] for i in _coco(out, 'deeplesion', s)['images']]
             for s in ('train', 'val', 'trainval', 'test')}
    assert files == {'train': ['000001_01_01_005.png'], 'val': ['000003_02_01_007.png'],
                     'trainval': ['000001_01_01_005.png', '000003_02_01_007.png'],
                     'test': ['000002_01_01_010.png']}
    # two rows of one key slice -> one image with two boxes [x1, y1, x2 - x1, y2 - y1]
    assert _boxes(_coco(out, 'deeplesion', 'train')) == [
        ('000001_01_01_005.png', 'lesion', [3.5, 4, 6.75, 8], 0),
        ('000001_01_01_005.png', 'lesion', [20, 20, 10, 11], 0)]
    assert stats['train'].notes['possibly noisy'] == 1
    with Image.open(out / 'deeplesion' / 'JPEGImages' / '000001_01_01_005.png') as im:
        assert im.mode == 'L' and im.size == (32, 32)
        pixels = np.asarray(im)
    # HU -2000, -1024, -205, 3071, 4000 in the window [-1024, 3071]:
    # 0 (clipped), 0, (-205 + 1024) / 4095 * 255 = 51, 255, 255 (clipped)
    assert pixels[0, :5].tolist() == [0, 0, 51, 255, 255]
    assert pixels[5, 5] == round((40 + 1024) / 4095 * 255)  # HU 40 -> 66


def test_lisa_tag_table_and_video_split(tmp_path, nf):
    _, out, stats = _convert(tmp_path, 'lisa', nf.write_lisa)
    train, test = _coco(out, 'lisa', 'train'), _coco(out, 'lisa', 'test')
    # the two frames of the train video, the one of the test video
    assert [i['file_name'] for i in train['images']] == [
        'aiua120214-0/frameAnnotations-a/stop_1.png',
        'aiua120214-0/frameAnnotations-a/speedLimit25_2.png']
    assert [(i['width'], i['height']) for i in train['images']] == [(64, 48), (64, 48)]
    assert [b[1:] for b in _boxes(train)] == [('stop', [10, 12, 20, 20], 0),
                                              ('noturn', [40, 5, 10, 10], 0),
                                              ('speedlimit', [1, 2, 10, 20], 0)]
    assert stats['train'].ignored == {'keepright': 1}  # a tag UODB does not use
    # curveLeft is a warning; its box (60..90) is clipped to the 80 px frame
    assert [b[1:] for b in _boxes(test)] == [('warning', [60, 10, 20, 20], 0)]
    assert stats['test'].clipped == 1 and stats['test'].notes['occluded'] == 1
    assert len(LISA_TAG_TO_CLASS) == 47
    assert set(LISA_TAG_TO_CLASS.values()) == {'stop', 'speedlimit', 'warning', 'noturn', None}


def test_lisa_unknown_tag_names_the_line(tmp_path, nf):
    src = tmp_path / 'src'
    nf.write_lisa(src)
    csv_file = src / 'lisa' / 'allAnnotations.csv'
    lines = csv_file.read_text().splitlines()
    lines[2] = lines[2].replace(';noLeftTurn;', ';unicornCrossing;')
    csv_file.write_text('\n'.join(lines) + '\n')
    with pytest.raises(SampleError, match=r"allAnnotations\.csv:3: class 'unicornCrossing'"):
        convert_native(str(src), out=str(tmp_path / 'out'), datasets=['lisa'])
    stats = convert_native(str(src), out=str(tmp_path / 'out'), datasets=['lisa'],
                           drop_unknown=True)
    assert stats[0].ignored['unicorncrossing'] == 1


def test_widerface_bbx_gt(tmp_path, nf):
    _, out, stats = _convert(tmp_path, 'widerface', nf.write_widerface)
    train = _coco(out, 'widerface', 'train')
    # the image without faces (N = 0, then a line of zeros) is kept
    assert [(i['file_name'], i['width'], i['height']) for i in train['images']] == [
        ('WIDER_train/0--Parade/0_Parade_a.jpg', 100, 80),
        ('WIDER_train/1--Handshaking/1_b.jpg', 60, 40)]
    # x1 y1 w h as written; the 0 x 0 face is skipped; invalid=1 -> iscrowd
    assert [b[1:] for b in _boxes(train)] == [('face', [10, 20, 30, 40], 0),
                                              ('face', [50, 10, 8, 8], 1)]
    assert stats['train'].zero_area == 1 and stats['train'].notes['invalid'] == 1
    # val: 70 + 40 > 100 -> clipped to [70, 50, 30, 30]
    assert [b[1:] for b in _boxes(_coco(out, 'widerface', 'val'))] == \
        [('face', [70, 50, 30, 30], 0)]


def test_kitchen_gmu_scenes(tmp_path, nf):
    _, out, stats = _convert(tmp_path, 'kitchen', nf.write_kitchen)
    # default test scenes 2, 4, 5; image names <scene>_<frame> as DAMEX names them
    assert [i['file_name'] for i in _coco(out, 'kitchen', 'train')['images']] == \
        ['gmu_scene_001_rgb_1.png']
    assert [i['file_name'] for i in _coco(out, 'kitchen', 'test')['images']] == [
        'gmu_scene_002_rgb_1.png', 'gmu_scene_004_rgb_1.png', 'gmu_scene_005_rgb_1.png']
    assert [b[1:] for b in _boxes(_coco(out, 'kitchen', 'train'))] == [
        ('coca_cola_glass_bottle', [10, 20, 19, 39], 0), ('red_bull', [39, 4, 10, 20], 0)]
    assert (out / 'kitchen' / 'JPEGImages' / 'gmu_scene_004_rgb_1.png').is_file()
    with pytest.raises(ValueError, match=r'test scene\(s\) \[7\]'):
        convert_native(str(tmp_path / 'src'), out=str(out), datasets=['kitchen'],
                       options=dict(kitchen=dict(test_scenes=(2, 7))))


@pytest.mark.parametrize('name', ['clipart', 'comic', 'watercolor'])
def test_cross_domain_voc_style(tmp_path, nf, name):
    classes = UODB_CLASSES[name]
    src, out, _ = _convert(tmp_path, name, lambda r: nf.write_cross_domain(r, name, classes))
    assert _boxes(_coco(out, name, 'train')) == [(f'{name}_1.jpg', classes[0], [2, 3, 17, 26], 0)]
    assert _boxes(_coco(out, name, 'test')) == [(f'{name}_2.jpg', classes[-1], [9, 9, 30, 10], 1)]
    # converting in place (OUT = the download's root) keeps its own JPEGImages
    stats = convert_native(str(src), datasets=[name])
    assert stats[0].out_file == str(src / name / 'annotations' / 'train.json')
    assert not (src / name / 'JPEGImages').is_symlink()
    assert sorted(p.name for p in (src / name / 'JPEGImages').iterdir()) == \
        [f'{name}_1.jpg', f'{name}_2.jpg']


def test_real_voc2007_xml_through_the_devkit_importer(tmp_path, nf, uodb_xml_dir):
    """A real VOC2007 annotation (000002.xml, from mmdet's test data) in a
    devkit tree gives what mmdet's own XMLDataset reads from it."""
    import shutil

    from mmdet.datasets import XMLDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    devkit = tmp_path / 'src' / 'VOCdevkit'
    nf.write_voc(tmp_path / 'src')
    year = devkit / 'VOC2007'
    shutil.copy(uodb_xml_dir / 'voc_000002.xml', year / 'Annotations' / '000002.xml')
    nf.image(year / 'JPEGImages' / '000002.jpg', (335, 500))
    out = tmp_path / 'out'
    convert_native(str(tmp_path / 'src'), out=str(out), datasets=['voc'])
    coco = _coco(out, 'voc', 'test')
    ref = XMLDataset(ann_file='ImageSets/Main/test.txt', data_root=str(year),
                     data_prefix=dict(sub_data_root=''),
                     metainfo=dict(classes=UODB_CLASSES['voc']), test_mode=True)
    info = ref.get_data_info(0)
    assert (coco['images'][0]['width'], coco['images'][0]['height']) == \
        (info['width'], info['height']) == (335, 500)
    x, y, w, h = coco['annotations'][0]['bbox']
    np.testing.assert_allclose([x, y, x + w, y + h], info['instances'][0]['bbox'])
    assert coco['annotations'][0]['category_id'] - 1 == info['instances'][0]['bbox_label']
