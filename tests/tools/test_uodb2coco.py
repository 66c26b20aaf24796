# Copyright (c) mmgem contributors. All rights reserved.
"""Tests of the UODB-layout converter (mmgem.datasets.converters.convert_uodb)
and of its CLI tools/dataset_converters/uodb2coco.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from PIL import Image

import mmgem  # noqa: F401
from mmgem.datasets import MINI_UODB_CLASSES, UODB_CLASSES


@pytest.fixture(scope='module')
def conv():
    from mmgem.datasets import converters
    return converters


@pytest.fixture(scope='module')
def cli():
    from tools.dataset_converters import uodb2coco

    return uodb2coco


def _voc_dataset(root: Path, name: str, split: str, xmls: dict) -> Path:
    """Write a VOC-style dataset folder from {stem: xml text or path}."""
    ddir = root / name
    (ddir / 'Annotations').mkdir(parents=True)
    (ddir / 'ImageSets' / 'Main').mkdir(parents=True)
    (ddir / 'JPEGImages').mkdir()
    for stem, xml in xmls.items():
        if isinstance(xml, Path):
            shutil.copy(xml, ddir / 'Annotations' / f'{stem}.xml')
        else:
            (ddir / 'Annotations' / f'{stem}.xml').write_text(xml)
    (ddir / 'ImageSets' / 'Main' / f'{split}.txt').write_text(
        ''.join(f'{s}\n' for s in xmls))
    return ddir


def _xml(width, height, objects, filename='a.jpg'):
    objs = ''.join(
        f'<object><name>{n}</name><difficult>{d}</difficult><bndbox>'
        f'<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>'
        f'<ymax>{b[3]}</ymax></bndbox></object>' for n, b, d in objects)
    return (f'<annotation><filename>{filename}</filename><size><width>{width}'
            f'</width><height>{height}</height><depth>3</depth></size>{objs}'
            '</annotation>')


@pytest.mark.parametrize('dataset,split,stem,fixture', [
    ('voc', 'test', '000002', 'voc_000002.xml'),
    ('widerface', 'val', '0_Parade_marchingband_1_5',
     'widerface_0_Parade_marchingband_1_5.xml'),
])
def test_real_uodb_xml_matches_mmdet_voc_reader(conv, uodb_xml_dir, tmp_path,
                                                dataset, split, stem,
                                                fixture):
    """The real XMLs convert to what mmdet's own VOC reader (XMLDataset)
    reads from them, through mmdet's CocoDataset."""
    from mmdet.datasets import CocoDataset, XMLDataset
    init_default_scope('mmdet')
    _voc_dataset(tmp_path, dataset, split, {stem: uodb_xml_dir / fixture})
    stats = conv.convert_uodb(
        str(tmp_path), datasets=[dataset], splits=[split],
        check_images=False)
    out = tmp_path / dataset / 'annotations' / f'{split}.json'
    assert stats[0].out_file == str(out) and out.is_file()
    classes = UODB_CLASSES[dataset]
    ours = CocoDataset(
        ann_file=str(out), data_root=str(tmp_path / dataset),
        data_prefix=dict(img='JPEGImages/'), metainfo=dict(classes=classes),
        test_mode=True)
    ref = XMLDataset(
        ann_file=f'ImageSets/Main/{split}.txt',
        data_root=str(tmp_path / dataset), data_prefix=dict(sub_data_root=''),
        metainfo=dict(classes=classes), test_mode=True)
    assert len(ours) == len(ref) == 1
    a, b = ours.get_data_info(0), ref.get_data_info(0)
    assert (a['width'], a['height']) == (b['width'], b['height'])
    assert Path(a['img_path']).name == Path(b['img_path']).name
    boxes_a = np.array([i['bbox'] for i in a['instances']])
    boxes_b = np.array([i['bbox'] for i in b['instances']])
    np.testing.assert_allclose(boxes_a, boxes_b)
    assert [i['bbox_label'] for i in a['instances']] == \
        [i['bbox_label'] for i in b['instances']]
    assert [i['ignore_flag'] for i in a['instances']] == \
        [i['ignore_flag'] for i in b['instances']]
    n_objects = len(ET.parse(uodb_xml_dir / fixture).findall('object'))
    assert stats[0].annotations == n_objects and stats[0].skipped == 0


def test_generated_mini_uodb_converts_to_drawn_boxes(mini_uodb_root):
    """The converted JSON of every domain and split holds exactly the boxes
    the generator drew, with the image sizes of the written JPEGs."""
    manifest = json.loads((mini_uodb_root / 'mini_uodb.json').read_text())
    for domain, entry in manifest['domains'].items():
        for split, content in entry['splits'].items():
            coco = json.loads(
                (mini_uodb_root / domain / 'annotations' /
                 f'{split}.json').read_text())
            names = {c['id']: c['name'] for c in coco['categories']}
            assert tuple(names[i] for i in sorted(names)) == \
                MINI_UODB_CLASSES[domain]
            assert [Path(i['file_name']).stem for i in coco['images']] == \
                content['stems']
            for img in coco['images'][:3]:
                with Image.open(mini_uodb_root / domain / 'JPEGImages' /
                                img['file_name']) as im:
                    assert im.size == (img['width'], img['height'])
            got = {}
            stem_of = {i['id']: Path(i['file_name']).stem
                       for i in coco['images']}
            for ann in coco['annotations']:
                x, y, w, h = ann['bbox']
                got.setdefault(stem_of[ann['image_id']], []).append(
                    [names[ann['category_id']], [x, y, x + w, y + h]])
            want = {s: o for s, o in content['objects'].items() if o}
            assert got == want, f'{domain}/{split}'


def test_broken_boxes_are_skipped_and_counted(conv, tmp_path):
    xml = _xml(100, 80, [
        ('face', (11, 11, 30, 30), 0),     # fine
        ('face', (50, 20, 50, 40), 0),     # zero width
        ('face', (60, 40, 70, 30), 0),     # negative height
        ('face', (120, 10, 130, 20), 0),   # right of the image
        ('face', (91, 71, 111, 91), 0),    # sticks out: clipped
        ('face', (21, 21, 41, 41), 1),     # difficult
    ])
    _voc_dataset(tmp_path, 'widerface', 'val', {'a': xml})
    stats, = conv.convert_uodb(str(tmp_path), datasets=['widerface'],
                               splits=['val'], check_images=False)
    assert (stats.annotations, stats.zero_area, stats.outside,
            stats.clipped, stats.difficult) == (3, 2, 1, 1, 1)
    coco = json.loads(Path(stats.out_file).read_text())
    boxes = [a['bbox'] for a in coco['annotations']]
    assert boxes[1] == [90, 70, 10, 10]  # clipped at the 100 x 80 border
    assert [a['iscrowd'] for a in coco['annotations']] == [0, 0, 1]


def test_kitti_names_are_merged_and_dontcare_dropped(conv, tmp_path):
    xml = _xml(200, 100, [('Car', (1, 1, 20, 20), 0),
                          ('Van', (30, 1, 50, 20), 0),
                          ('truck', (60, 1, 80, 20), 0),
                          ('Tram', (90, 1, 110, 20), 0),
                          ('Pedestrian', (120, 1, 130, 30), 0),
                          ('DontCare', (140, 1, 150, 30), 0)])
    _voc_dataset(tmp_path, 'kitti', 'test', {'000001': xml})
    stats, = conv.convert_uodb(str(tmp_path), datasets=['kitti'],
                               splits=['test'], check_images=False)
    coco = json.loads(Path(stats.out_file).read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    assert [names[a['category_id']] for a in coco['annotations']] == \
        ['car', 'car', 'car', 'car', 'pedestrian']
    assert stats.mapped == {'van': 1, 'truck': 1, 'tram': 1}
    assert stats.ignored == {'dontcare': 1}


def test_coco_json_source_is_filtered_and_keeps_ids(conv, tmp_path):
    classes = UODB_CLASSES['coco']
    src = dict(
        images=[dict(id=42, file_name='COCO_val2014_42.jpg', width=50,
                     height=40)],
        annotations=[
            dict(id=7, image_id=42, category_id=18, bbox=[1, 2, 10, 10],
                 area=100, iscrowd=0, segmentation=[[1, 2, 3, 4]]),
            dict(id=8, image_id=42, category_id=1, bbox=[5, 5, 0, 4],
                 area=0, iscrowd=0),
        ],
        categories=[dict(id=i + 1 if i < 11 else i + 2, name=c)
                    for i, c in enumerate(classes)])
    (tmp_path / 'coco' / 'annotations').mkdir(parents=True)
    (tmp_path / 'coco' / 'annotations' /
     'instances_minival2014.json').write_text(json.dumps(src))
    stats, = conv.convert_uodb(str(tmp_path), datasets=['coco'],
                               splits=['minival'], check_images=False)
    out = json.loads(
        (tmp_path / 'coco' / 'annotations' / 'minival.json').read_text())
    assert [a['id'] for a in out['annotations']] == [7]
    assert 'segmentation' not in out['annotations'][0]
    assert [c['name'] for c in out['categories']] == list(classes)
    assert out['images'][0]['id'] == 42 and stats.zero_area == 1
    src['categories'].append(dict(id=99, name='unicorn'))
    (tmp_path / 'coco' / 'annotations' /
     'instances_minival2014.json').write_text(json.dumps(src))
    with pytest.raises(ValueError, match="instances_minival2014.json.*'unicorn'"):
        conv.convert_uodb(str(tmp_path), datasets=['coco'],
                          splits=['minival'], check_images=False)


def test_bad_inputs_name_the_file_or_class(conv, tmp_path):
    good = _xml(64, 64, [('face', (1, 1, 10, 10), 0)])
    ddir = _voc_dataset(tmp_path, 'widerface', 'val', {'a': good, 'b': good})
    convert = dict(datasets=['widerface'], splits=['val'],
                   check_images=False)
    with pytest.raises(FileNotFoundError,
                       match=r'split file not found: .*Main/train\.txt'):
        conv.convert_uodb(str(tmp_path), datasets=['widerface'],
                          splits=['train'], check_images=False)
    with pytest.raises(FileNotFoundError, match=r'JPEGImages/a\.jpg'):
        conv.convert_uodb(str(tmp_path), datasets=['widerface'],
                          splits=['val'])
    (ddir / 'Annotations' / 'b.xml').write_text(
        _xml(64, 64, [('person', (1, 1, 10, 10), 0)]))
    with pytest.raises(ValueError, match=r"b\.xml: class 'person' is not in"):
        conv.convert_uodb(str(tmp_path), **convert)
    (ddir / 'Annotations' / 'b.xml').write_text('<annotation><size>')
    with pytest.raises(ValueError, match=r'b\.xml: cannot parse XML'):
        conv.convert_uodb(str(tmp_path), **convert)
    (ddir / 'Annotations' / 'b.xml').unlink()
    with pytest.raises(FileNotFoundError,
                       match=r'annotation file not found: .*b\.xml'):
        conv.convert_uodb(str(tmp_path), **convert)
    (ddir / 'ImageSets' / 'Main' / 'val.txt').write_text('\n')
    with pytest.raises(ValueError, match=r'val\.txt: empty split'):
        conv.convert_uodb(str(tmp_path), **convert)
    (ddir / 'ImageSets' / 'Main' / 'val.txt').write_text('a\nc\na\n')
    with pytest.raises(ValueError, match=r"line 3 repeats image 'a'"):
        conv.convert_uodb(str(tmp_path), **convert)
    assert not (ddir / 'annotations').exists()  # nothing half-written


def test_output_is_atomic_and_deterministic(cli, tmp_path, capsys):
    xml = _xml(64, 48, [('face', (3, 4, 20, 30), 0)], filename='x.png')
    ddir = _voc_dataset(tmp_path, 'widerface', 'val', {'x': xml})
    Image.new('RGB', (64, 48)).save(ddir / 'JPEGImages' / 'x.png')
    assert cli.main([str(tmp_path), '--datasets', 'widerface',
                      '--splits', 'val']) == 0
    assert '| widerface | val | 1 | 1 |' in capsys.readouterr().out
    out = ddir / 'annotations' / 'val.json'
    first = out.read_bytes()
    assert json.loads(first)['images'][0]['file_name'] == 'x.png'
    assert cli.main([str(tmp_path), '--datasets', 'widerface',
                      '--splits', 'val']) == 0
    assert out.read_bytes() == first
    assert sorted(p.name for p in out.parent.iterdir()) == ['val.json']
    assert cli.main([str(tmp_path / 'nowhere'), '--datasets', 'voc']) == 1
    assert 'split file not found' in capsys.readouterr().err


# --------------------------------------------------------------------------
# --from native: the 11 datasets' own formats
# --------------------------------------------------------------------------
DEBUG_GEM_CONFIG = 'configs/gem/gem-dino-4scale_r18_debug-2it_uodb.py'


@pytest.fixture(scope='module')
def native_fixtures():
    import native_fixtures

    return native_fixtures


def test_native_tree_converts_and_trains_the_full_uodb_gem_config(
        cli, native_fixtures, repo_root, tmp_path, capsys):
    """Done criterion of the native importers: a tree holding all 11 native
    fixtures converts with --from native, and tools/train.py on the full-UODB
    GEM config's documented debug override (DEBUG_GEM_CONFIG) builds its
    loaders, plans, trains 2 iterations on CPU and evaluates every dataset."""
    import subprocess
    import sys
    src = native_fixtures.write_native_uodb(tmp_path / 'downloads')
    out = tmp_path / 'uodb'
    assert cli.main([str(src), '--from', 'native', '--out', str(out), '--check']) == 0
    printed = capsys.readouterr().out
    assert '| deeplesion | trainval | 2 | 3 |' in printed
    assert 'counts against published figures' in printed
    assert '| voc | test | 1 | 4952 | -4951 |' in printed
    from mmgem.datasets import UODB_DATASETS, UODB_SPLITS
    for name in UODB_DATASETS:
        for split in UODB_SPLITS[name]:
            assert (out / name / 'annotations' / f'{split}.json').is_file(), (name, split)
    cfg = repo_root / DEBUG_GEM_CONFIG
    data = [f'{loader}.dataset.data_root={out}/'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS='1')
    env = {k: v for k, v in env.items() if not k.startswith('PYTEST')}
    proc = subprocess.run(
        [sys.executable, str(repo_root / 'tools' / 'train.py'), str(cfg), '--work-dir',
         str(work_dir), '--cfg-options', *data],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'Iter(train) [2/2]' in log
    plan = json.loads((work_dir / 'gem_plan.json').read_text())
    assert plan['dataset_names'] == list(UODB_DATASETS)
    table = (work_dir / 'uodb_table.md').read_text()
    header = table.splitlines()[0]
    for title in ('KITTI', 'VOC', 'WiderFace', 'LISA', 'Kitchen', 'COCO', 'DOTA',
                  'DeepLesion', 'Comic', 'Clipart', 'Watercolor', 'Mean'):
        assert f'| {title} |' in header
    assert '| VOC07 AP50 |' in table
    # Comic's test image holds only a difficult box: pycocotools' -1 is shown
    # as '-' and left out of the mean, not averaged in as -100
    assert '-100.0' not in table
    comic = header.split(' | ').index('Comic')
    ap_table = table.split('Domain classification')[0]  # the domain table follows
    ap_rows = [row for row in ap_table.splitlines()[2:] if row.startswith('|')]
    assert ap_rows and all(row.split(' | ')[comic] == '-' for row in ap_rows)


def test_cli_native_failure_prints_what_converted_and_writes_nothing(
        cli, native_fixtures, tmp_path, capsys):
    src = tmp_path / 'downloads'
    native_fixtures.write_voc(src)
    native_fixtures.write_widerface(src)
    (src / 'widerface' / 'WIDER_train' / 'images' / '1--Handshaking' / '1_b.jpg').unlink()
    out = tmp_path / 'uodb'
    args = [str(src), '--from', 'native', '--out', str(out), '--datasets', 'voc', 'widerface']
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert re.search(r'error: .*wider_face_train_bbx_gt\.txt:6: image not found: .*1_b\.jpg',
                     err)
    assert 'these splits had converted before the error; nothing was written' in err
    assert '| voc | trainval | 2 | 3 |' in err and '| voc | test | 1 | 1 |' in err
    assert os.listdir(out) == []
    assert cli.main(args + ['--skip-bad']) == 0
    printed = capsys.readouterr().out
    assert re.search(r'\| widerface \| train \| 1 \| 2 \|.*\| missing image:1 \|', printed)
    assert '[skipped]' in printed and '1_b.jpg' in printed
    assert sorted(os.listdir(out)) == ['voc', 'widerface']


# --- hostile paths in annotations: confined to the dataset's folder ---------

def _comic_with_filename(nf, tmp_path: Path, filename: str):
    """A native Comic download whose first XML names ``filename`` (its own
    image absent), and a victim file outside the download and OUT."""
    src = tmp_path / 'downloads'
    ddir = nf.write_cross_domain(src, 'comic', UODB_CLASSES['comic'])
    xml = ddir / 'Annotations' / 'comic_1.xml'
    xml.write_text(re.sub(r'<filename>[^<]*</filename>', f'<filename>{filename}</filename>',
                          xml.read_text()))
    (ddir / 'JPEGImages' / 'comic_1.jpg').unlink()
    victim = nf.image(tmp_path / 'victim' / 'precious.jpg', (48, 32), seed=7)
    return src, xml, victim


@pytest.mark.parametrize('link', ['symlink', 'copy'])
@pytest.mark.parametrize('kind', ['absolute', 'dotdot'])
def test_cli_refuses_image_paths_outside_the_download(cli, native_fixtures, tmp_path, capsys,
                                                      kind, link):
    """An XML naming an image outside its folder (absolute or ``../``) is
    refused with the XML, the field and the value; the outside file keeps
    its bytes and OUT stays empty (before: the victim was replaced by a
    symlink to itself, or deleted with ``--link copy``)."""
    victim_path = tmp_path / 'victim' / 'precious.jpg'
    value = str(victim_path) if kind == 'absolute' else '../../../victim/precious.jpg'
    src, xml, victim = _comic_with_filename(native_fixtures, tmp_path, value)
    before = victim.read_bytes()
    out = tmp_path / 'uodb'
    args = [str(src), '--from', 'native', '--datasets', 'comic', '--out', str(out),
            '--link', link]
    rc = cli.main(args)
    assert victim.read_bytes() == before and not victim.is_symlink()
    assert rc == 1
    err = capsys.readouterr().err
    assert f'{xml}: <filename> {value!r} is ' in err, err
    assert ('an absolute path' if kind == 'absolute' else "a '..' component") in err
    assert os.listdir(out) == []
    assert not (out / 'victim').exists()


def test_cli_refuses_a_symlink_resolving_outside(cli, native_fixtures, tmp_path, capsys):
    """An image of the download that is a symlink to a file outside it is
    refused like an absolute path."""
    src, xml, victim = _comic_with_filename(native_fixtures, tmp_path, 'comic_1.jpg')
    link = src / 'comic' / 'JPEGImages' / 'comic_1.jpg'
    link.symlink_to(victim)
    out = tmp_path / 'uodb'
    assert cli.main([str(src), '--from', 'native', '--datasets', 'comic', '--out',
                     str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{xml}: <filename> 'comic_1.jpg' is a link that resolves to" in err \
        and str(victim) in err, err
    assert os.listdir(out) == []
    # found by its stem (no <filename>), the link is refused all the same
    xml.write_text(re.sub(r'<filename>[^<]*</filename>', '', xml.read_text()))
    assert cli.main([str(src), '--from', 'native', '--datasets', 'comic', '--out',
                     str(out)]) == 1
    assert f"{xml}: image file 'comic_1.jpg' is a link that resolves to" in \
        capsys.readouterr().err


def test_cli_skip_bad_skips_and_counts_unsafe_paths(cli, native_fixtures, tmp_path, capsys):
    src, xml, victim = _comic_with_filename(native_fixtures, tmp_path,
                                            '../../../victim/precious.jpg')
    ddir = src / 'comic'  # a good second train image, so train is not empty
    (ddir / 'Annotations' / 'comic_3.xml').write_text(
        (ddir / 'Annotations' / 'comic_2.xml').read_text().replace('comic_2', 'comic_3'))
    shutil.copy(ddir / 'JPEGImages' / 'comic_2.jpg', ddir / 'JPEGImages' / 'comic_3.jpg')
    (ddir / 'ImageSets' / 'Main' / 'train.txt').write_text('comic_1\ncomic_3\n')
    before = victim.read_bytes()
    out = tmp_path / 'uodb'
    assert cli.main([str(src), '--from', 'native', '--datasets', 'comic', '--out', str(out),
                     '--skip-bad']) == 0
    printed = capsys.readouterr().out
    assert re.search(r'\| comic \| train \| 1 \| 1 \|.*\| unsafe path:1 \|', printed), printed
    assert '[skipped]' in printed and 'comic_1.xml' in printed
    assert victim.read_bytes() == before
    train = json.loads((out / 'comic' / 'annotations' / 'train.json').read_text())
    assert [i['file_name'] for i in train['images']] == ['comic_3.jpg']
    assert sorted(os.listdir(out / 'comic' / 'JPEGImages')) == [
        '.mmgem_staged', 'comic_2.jpg', 'comic_3.jpg']


@pytest.mark.parametrize('check', [True, False])
def test_cli_from_uodb_never_writes_an_absolute_file_name(cli, tmp_path, capsys, check):
    """``--from uodb`` (with or without image checks) refuses an absolute
    ``<filename>`` instead of writing it into the JSON."""
    victim = tmp_path / 'victim.jpg'
    Image.new('RGB', (40, 30)).save(victim)
    ddir = _voc_dataset(tmp_path / 'uodb', 'widerface', 'val',
                        {'a': _xml(40, 30, [('face', (2, 2, 10, 10), 0)], str(victim))})
    args = [str(tmp_path / 'uodb'), '--datasets', 'widerface', '--splits', 'val']
    if not check:
        args.append('--no-check-images')
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert f"a.xml: <filename> '{victim}' is an absolute path" in err, err
    assert not (ddir / 'annotations').exists()


def test_stale_staging_of_a_killed_run_is_removed(cli, native_fixtures, tmp_path):
    """A run killed while staging leaves ``.uodb2coco-staging-*``; the next
    run removes it (a live run's staging folder is kept)."""
    src = tmp_path / 'downloads'
    native_fixtures.write_cross_domain(src, 'comic', UODB_CLASSES['comic'])
    out = tmp_path / 'uodb'
    out.mkdir()
    code = ('import os, sys; from mmgem.utils import StagingDir; '
            's = StagingDir(sys.argv[1], prefix=".uodb2coco-staging-"); '
            'open(os.path.join(s.path, "half.json"), "w").write("{"); '
            'print(s.path, flush=True); os.kill(os.getpid(), 9)')
    proc = subprocess.run([sys.executable, '-c', code, str(out)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == -9
    stale = Path(proc.stdout.strip())
    assert stale.is_dir() and stale.name.startswith('.uodb2coco-staging-')
    live = out / '.uodb2coco-staging-live'
    live.mkdir()
    (live / '.mmgem_owner').write_text(f'{os.uname().nodename} {os.getpid()}\n')
    assert cli.main([str(src), '--from', 'native', '--datasets', 'comic', '--out',
                     str(out)]) == 0
    assert not stale.exists()
    assert sorted(os.listdir(out)) == ['.uodb2coco-staging-live', 'comic']
