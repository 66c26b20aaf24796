# Copyright (c) mmgem contributors. All rights reserved.
"""The converters against bad input: the image file is the truth, errors
name their file, bad samples can be skipped and counted, a failed run writes
nothing."""
import json
import os
from pathlib import Path

import pytest

from mmgem.datasets.converters import SampleError, convert_native, convert_uodb


@pytest.fixture(scope='module')
def nf():
    import native_fixtures

    return native_fixtures


def _uodb_folder(root: Path, name: str, split: str, xmls: dict, images: dict) -> Path:
    ddir = root / name
    (ddir / 'Annotations').mkdir(parents=True)
    (ddir / 'ImageSets' / 'Main').mkdir(parents=True)
    for stem, xml in xmls.items():
        (ddir / 'Annotations' / f'{stem}.xml').write_text(xml)
    (ddir / 'ImageSets' / 'Main' / f'{split}.txt').write_text(''.join(f'{s}\n' for s in xmls))
    return ddir


def test_filename_of_another_image_does_not_duplicate_it(tmp_path, nf):
    """a.xml names b.jpg: the image is still a.jpg (its own stem), and the
    disagreement is counted; without a.jpg, taking b.jpg would give two
    entries of one file, which is an error naming both XMLs."""
    face = [('face', (2, 2, 10, 10), 0)]
    ddir = _uodb_folder(tmp_path, 'widerface', 'val', {
        'a': nf.voc_xml('b.jpg', (40, 30), face), 'b': nf.voc_xml('b.jpg', (40, 30), face)}, {})
    nf.image(ddir / 'JPEGImages' / 'a.jpg', (40, 30))
    nf.image(ddir / 'JPEGImages' / 'b.jpg', (64, 48))  # b's XML size is wrong
    stats, = convert_uodb(str(tmp_path), datasets=['widerface'], splits=['val'])
    coco = json.loads((ddir / 'annotations' / 'val.json').read_text())
    assert [(i['file_name'], i['width'], i['height']) for i in coco['images']] == \
        [('a.jpg', 40, 30), ('b.jpg', 64, 48)]
    assert stats.filename_fixed == 1 and stats.size_fixed == 1
    assert "a.xml: <filename> is 'b.jpg', using 'a.jpg'" in stats.examples['filename_fixed'][0]
    (ddir / 'JPEGImages' / 'a.jpg').unlink()
    with pytest.raises(SampleError, match=r'b\.xml: image b\.jpg is already the image of '
                       r'.*a\.xml'):
        convert_uodb(str(tmp_path), datasets=['widerface'], splits=['val'])


def test_non_numeric_difficult_names_the_file(tmp_path, nf):
    xml = nf.voc_xml('a.jpg', (40, 30), [('face', (2, 2, 10, 10), 'yes')])
    _uodb_folder(tmp_path, 'widerface', 'val', {'a': xml}, {})
    with pytest.raises(ValueError, match=r"a\.xml: <difficult> of object 'face' is 'yes', "
                       'not 0 or 1'):
        convert_uodb(str(tmp_path), datasets=['widerface'], splits=['val'], check_images=False)


def test_skip_bad_counts_what_it_skipped(tmp_path, nf):
    face = [('face', (2, 2, 10, 10), 0)]
    ddir = _uodb_folder(tmp_path, 'widerface', 'val', {
        'ok': nf.voc_xml('ok.jpg', (40, 30), face),
        'noimage': nf.voc_xml('noimage.jpg', (40, 30), face),
        'broken': '<annotation><size>',
        'alien': nf.voc_xml('alien.jpg', (40, 30), [('person', (1, 1, 5, 5), 0)])}, {})
    for stem in ('ok', 'broken', 'alien'):
        nf.image(ddir / 'JPEGImages' / f'{stem}.jpg', (40, 30))
    (ddir / 'JPEGImages' / 'corrupt.jpg').write_bytes(b'not a jpeg')
    (ddir / 'Annotations' / 'corrupt.xml').write_text(nf.voc_xml('corrupt.jpg', (40, 30), face))
    with open(ddir / 'ImageSets' / 'Main' / 'val.txt', 'a') as f:
        f.write('corrupt\n')
    with pytest.raises(FileNotFoundError, match=r'image of .*noimage\.xml not found'):
        convert_uodb(str(tmp_path), datasets=['widerface'], splits=['val'])
    stats, = convert_uodb(str(tmp_path), datasets=['widerface'], splits=['val'], skip_bad=True)
    assert stats.images == 1 and stats.annotations == 1
    assert stats.skipped_images == {'missing image': 1, 'bad annotation': 1,
                                    'unknown class': 1, 'unreadable image': 1}
    assert any('corrupt.jpg: cannot read the image' in m for m in stats.examples['skipped'])


def test_failed_run_writes_nothing(tmp_path, nf):
    """Converting VOC and then a broken KITTI: VOC's outputs are not moved
    into place, no staging folder is left, and the caller still gets VOC's
    counts."""
    src = tmp_path / 'src'
    nf.write_voc(src)
    nf.write_kitti(src)
    (src / 'kitti' / 'training' / 'label_2' / '000004.txt').write_text('Car 0 0 0 1 2\n')
    out = tmp_path / 'out'
    done = []
    with pytest.raises(SampleError, match=r'000004\.txt:1: 6 fields, a KITTI label line has 15'):
        convert_native(str(src), out=str(out), datasets=['voc', 'kitti'], done=done)
    assert [(s.dataset, s.split) for s in done] == [('voc', 'trainval'), ('voc', 'test')]
    assert os.listdir(out) == []
    stats = convert_native(str(src), out=str(out), datasets=['voc', 'kitti'], skip_bad=True)
    assert sum(s.skipped_images['bad annotation'] for s in stats) == 1
    assert sorted(os.listdir(out)) == ['kitti', 'voc']


def test_replaces_own_outputs_but_not_foreign_folders(tmp_path, nf):
    src = tmp_path / 'src'
    nf.write_widerface(src)
    out = tmp_path / 'out'
    convert_native(str(src), out=str(out), datasets=['widerface'])
    stale = out / 'widerface' / 'JPEGImages' / 'stale.jpg'
    stale.write_bytes(b'x')
    convert_native(str(src), out=str(out), datasets=['widerface'])  # a re-run replaces it
    assert not stale.exists()
    assert (out / 'widerface' / 'JPEGImages' / 'WIDER_val' / '0--Parade' /
            '0_Parade_c.jpg').exists()
    foreign = tmp_path / 'out2' / 'widerface' / 'JPEGImages'
    foreign.mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r'out2/widerface/JPEGImages exists and was not '
                       'written by mmgem'):
        convert_native(str(src), out=str(tmp_path / 'out2'), datasets=['widerface'])
    assert sorted(os.listdir(tmp_path / 'out2')) == ['widerface']
    assert os.listdir(tmp_path / 'out2' / 'widerface') == ['JPEGImages']


def test_unknown_dataset_options_and_missing_download(tmp_path):
    with pytest.raises(ValueError, match=r"dota: unknown importer option\(s\) \['size'\]"):
        convert_native(str(tmp_path), datasets=['dota'], options=dict(dota=dict(size=3)))
    with pytest.raises(FileNotFoundError, match=r'lisa: download folder not found: .*lisa'):
        convert_native(str(tmp_path), datasets=['lisa'])
