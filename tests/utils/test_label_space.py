# Copyright (c) mmgem contributors. All rights reserved.
"""The unified label space by class name."""
import pytest

from mmgem.planner import normalize_class_name as planner_normalize
from mmgem.utils.label_space import UnifiedLabelSpace, normalize_class_name


def test_names_merge_by_normalised_name_and_table():
    space = UnifiedLabelSpace(
        [('Person', 'traffic_light', 'aeroplane'), ('person', 'Traffic-Light', 'airplane'),
         ('pedestrian', )],
        ['a', 'b', 'c'], merge_table={'Aeroplane': 'airplane', 'pedestrian': 'person'})
    assert space.names == ('person', 'traffic light', 'airplane')
    assert space.concat_to_unified.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert space.label_offsets.tolist() == [0, 3, 6, 7]
    assert space.unified_to_local(2).tolist() == [0, -1, -1]
    assert space.unified_to_local(1).tolist() == [0, 1, 2]
    assert space.representatives().tolist() == [0, 1, 2]
    assert space.merges() == {'person': ['a/Person', 'b/person', 'c/pedestrian'],
                              'traffic light': ['a/traffic_light', 'b/Traffic-Light'],
                              'airplane': ['a/aeroplane', 'b/airplane']}
    # no table: the default (none) keeps synonyms apart
    plain = UnifiedLabelSpace([('aeroplane', ), ('airplane', )])
    assert plain.names == ('aeroplane', 'airplane') and plain.merges() == {}


def test_merges_are_logged_once():
    lines = []

    class Logger:
        def info(self, msg):
            lines.append(msg)

    space = UnifiedLabelSpace([('dog', 'cat'), ('Dog', )], ['x', 'y'])
    space.log_merges(Logger())
    UnifiedLabelSpace([('dog', 'cat'), ('Dog', )], ['x', 'y']).log_merges(Logger())
    assert len(lines) == 1 and 'dog: x/dog, y/Dog' in lines[0]
    assert '3 dataset classes -> 2 names' in lines[0]


def test_bad_spaces_are_refused():
    with pytest.raises(ValueError, match="'car' and 'Car'"):
        UnifiedLabelSpace([('car', 'Car')])
    with pytest.raises(ValueError, match="'person' and 'pedestrian'"):
        UnifiedLabelSpace([('person', 'pedestrian')], merge_table={'pedestrian': 'person'})
    with pytest.raises(ValueError, match='cycle: a -> b -> a'):
        UnifiedLabelSpace([('a', )], merge_table={'a': 'b', 'b': 'a'})
    with pytest.raises(ValueError, match="dataset 'x' has no class"):
        UnifiedLabelSpace([()], ['x'])


def test_one_normalisation_for_planner_and_label_space():
    assert planner_normalize is normalize_class_name
    assert normalize_class_name('  Traffic__Light - Pole ') == 'traffic light pole'
