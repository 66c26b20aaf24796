# Copyright (c) mmgem contributors. All rights reserved.
# Map ablation, random map: as the human-prior map, but with the fixed
# random grouping {clipart, dota}, {kitti, voc} (each group mixes a VOC-class
# dataset with an unrelated one).
_base_ = './damex-dino-4scale-2experts-prior-map_r50_8xb2-36e_uodb4.py'

custom_hooks = [
    dict(
        _base_.custom_hooks[0],
        similarity=dict(
            sources=dict(prior=1.0), prior=[['clipart', 'dota'],
                                            ['kitti', 'voc']])),
    *_base_.custom_hooks[1:]
]
