# Copyright (c) mmgem contributors. All rights reserved.
# GEM-DINO-4scale R-50 on UODB with expert parallelism: on 8 GPUs each GPU
# holds one of the 8 experts of every MoE layer (on 4 GPUs two each; with 16
# GPUs set expert_parallel_size=8 and every expert has two replicas whose
# gradients are averaged). Images go to the GPU of their expert through
# all_to_all; the locality sampler puts them there in the first place, so
# the exchange moves only the surplus of over-full GPUs (train/exchange_MB in
# the log). Checkpoints hold all experts and load with any number of GPUs, in
# either mode. --amp works (the constructor picks GlobalNormAmpOptimWrapper).
#
#   bash tools/dist_train.sh configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb_ep.py 8
#   bash tools/dist_train.sh configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb_ep.py 8 --amp
_base_ = './gem-dino-4scale_r50_8xb2-36e_uodb.py'

model_wrapper_cfg = dict(
    type='GEMDistributedDataParallel',
    expert_parallel=True,
    expert_parallel_size=None)  # None: the world size
optim_wrapper = dict(
    type='GlobalNormOptimWrapper',
    constructor='ExpertParallelOptimWrapperConstructor')
default_hooks = dict(checkpoint=dict(type='ExpertParallelCheckpointHook'))
train_dataloader = dict(sampler=dict(type='ExpertLocalitySampler'))

custom_hooks = [
    dict(
        type='GEMPlannerHook',
        capacity_factor=1.25,
        beta=0.0,
        similarity=dict(sources=dict(labels=0.5, features=0.5), prior=None),
        num_probe_images=8,
        solver='ECOS'),
    dict(type='ExpertParallelExchangeHook'),
    # random states and data position in every checkpoint: exact resume
    dict(type='ResumeStateHook'),
]
