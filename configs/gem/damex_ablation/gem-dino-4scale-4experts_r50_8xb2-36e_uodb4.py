# Copyright (c) mmgem contributors. All rights reserved.
# DAMEX's ablation subset of UODB: Clipart, DOTA, KITTI and VOC (two
# natural-image sets sharing VOC's 20 classes, an aerial and a driving
# one), GEM-DINO-4scale R-50 with 4 experts in decoder layers 0, 2, 4.
# The 2- and 8-expert variants and the DAMEX / map ablations inherit this.
#
#   bash tools/dist_train.sh \
#       configs/gem/damex_ablation/gem-dino-4scale-4experts_r50_8xb2-36e_uodb4.py 8
_base_ = '../gem-dino-4scale_r50_8xb2-36e_uodb.py'

ablation_names = ['clipart', 'dota', 'kitti', 'voc']
# clipart 20, dota 15, kitti 3, voc 20 (checked by tests/models/test_configs.py)
num_classes = 58
label_offsets = [0, 20, 35, 38, 58]

model = dict(
    num_experts=4,
    num_datasets=4,
    label_offsets=label_offsets,
    dataset_classes=[_base_.uodb_classes[n] for n in ablation_names],
    bbox_head=dict(num_classes=num_classes))

train_dataloader = dict(dataset=dict(select=ablation_names))
val_dataloader = dict(dataset=dict(select=ablation_names))
test_dataloader = val_dataloader
