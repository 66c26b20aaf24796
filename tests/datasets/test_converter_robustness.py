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


# --- paths read from annotations stay inside their dataset's folder ---------

def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _hostile_lisa(src, nf, victim):
    lisa = nf.write_lisa(src)
    value = '../../victim.png'
    _replace(lisa / 'allAnnotations.csv',
             'aiua120214-0/frameAnnotations-a/speedLimit25_2.png', value)
    return lisa / 'allAnnotations.csv', 'Filename', value


def _hostile_widerface(src, nf, victim):
    wf = nf.write_widerface(src)
    gt = wf / 'wider_face_split' / 'wider_face_train_bbx_gt.txt'
    value = '../../../../victim.png'
    _replace(gt, '1--Handshaking/1_b.jpg', value)
    return gt, 'image path', value


def _hostile_coco(src, nf, victim):
    from mmgem.datasets import UODB_CLASSES
    coco = nf.write_coco(src, UODB_CLASSES['coco'])
    ann = coco / 'annotations' / 'instances_val2014.json'
    _replace(ann, 'COCO_val2014_000000000001.jpg', str(victim))
    return ann, 'file_name', str(victim)


def _hostile_deeplesion(src, nf, victim):
    dl = nf.write_deeplesion(src)
    value = '../../../victim_01_01_010.png'
    csv = dl / 'DL_info.csv'  # one more lesion row, of a slice outside
    row = next(line for line in csv.read_text().splitlines() if line.startswith('000003'))
    csv.write_text(csv.read_text() + row.replace('000003_02_01_007.png', value) + '\n')
    return csv, 'File_name', value


def _hostile_kitti(src, nf, victim):
    kitti = nf.write_kitti(src)
    img = kitti / 'training' / 'image_2' / '000001.png'
    img.unlink()
    img.symlink_to(victim)
    return kitti / 'training' / 'label_2' / '000001.txt', 'image file', '000001.png'


def _hostile_kitchen(src, nf, victim):
    kitchen = nf.write_kitchen(src)
    scene = kitchen / 'gmu_scene_002'
    (scene / 'Images' / 'rgb_1.png').unlink()
    _replace(scene / 'Annotations' / 'rgb_1.xml', '<filename>rgb_1.png<', f'<filename>{victim}<')
    return scene / 'Annotations' / 'rgb_1.xml', '<filename>', str(victim)


def _hostile_voc(src, nf, victim):
    voc = nf.write_voc(src)
    split = voc / 'VOC2007' / 'ImageSets' / 'Main' / 'test.txt'
    split.write_text(split.read_text() + '../../../../victim\n')
    (victim.parent / 'victim.xml').write_text(nf.voc_xml('victim.png', (20, 20), []))
    return voc / 'VOC2007' / 'ImageSets' / 'Main', 'image id', '../../../../victim'


@pytest.mark.parametrize('name,make', [
    ('lisa', _hostile_lisa), ('widerface', _hostile_widerface), ('coco', _hostile_coco),
    ('deeplesion', _hostile_deeplesion), ('kitti', _hostile_kitti),
    ('kitchen', _hostile_kitchen), ('voc', _hostile_voc)])
def test_native_importers_refuse_paths_leaving_the_download(tmp_path, nf, name, make):
    """Every importer refuses an annotation path that leaves its folder
    (absolute, ``..`` or a symlink out), naming the annotation file, the
    field and the value; the outside file is untouched and OUT stays empty;
    with ``skip_bad`` the image is skipped and counted as ``unsafe path``."""
    from mmgem.datasets.converters import UnsafePathError
    victim = nf.image(tmp_path / 'victim.png', (20, 20), seed=9)
    before = victim.read_bytes()
    src, out = tmp_path / 'src', tmp_path / 'out'
    where, field, value = make(src, nf, victim)
    with pytest.raises(UnsafePathError) as info:
        convert_native(str(src), out=str(out), datasets=[name])
    message = str(info.value)
    assert str(where) in message and f'{field} {value!r} is ' in message, message
    assert victim.read_bytes() == before and not victim.is_symlink()
    assert os.listdir(out) == []
    results = convert_native(str(src), out=str(out), datasets=[name], skip_bad=True)
    assert sum(s.skipped_images['unsafe path'] for s in results) == 1
    assert victim.read_bytes() == before
    for stats in results:
        coco = json.loads(Path(stats.out_file).read_text())
        for img in coco['images']:
            assert not os.path.isabs(img['file_name']) and '..' not in img['file_name']


def test_image_linker_writes_only_inside_its_folder(tmp_path, nf):
    """``ImageLinker.link`` refuses an output name that leaves its folder
    (before: it removed the outside file and linked over it)."""
    from mmgem.datasets.converters import ImageLinker, UnsafePathError
    victim = nf.image(tmp_path / 'victim.png', (20, 20), seed=9)
    before = victim.read_bytes()
    src = nf.image(tmp_path / 'src' / 'a.png', (20, 20), seed=1)
    linker = ImageLinker(str(tmp_path / 'out' / 'JPEGImages'), str(tmp_path / 'final'), 'copy')
    for name in (str(victim), '../../victim.png'):
        with pytest.raises(UnsafePathError, match='output image name'):
            linker.link(str(src), name)
        assert victim.read_bytes() == before
    (tmp_path / 'out' / 'JPEGImages').mkdir(parents=True)
    (tmp_path / 'out' / 'JPEGImages' / 'sub').symlink_to(tmp_path)  # a folder link out
    with pytest.raises(UnsafePathError, match='resolves to'):
        linker.link(str(src), 'sub/victim.png')
    assert victim.read_bytes() == before
    linker.link(str(src), 'a.png')
    assert (tmp_path / 'out' / 'JPEGImages' / 'a.png').read_bytes() == src.read_bytes()
