# Copyright (c) mmgem contributors. All rights reserved.
# GEM-DINO on mini-UODB with expert parallelism: the 4 experts of every MoE
# layer are split over the ranks (2 ranks: experts 0-1 on rank 0, 2-3 on
# rank 1; the world size must divide num_experts), images travel to the
# rank of their expert with all_to_all and back, and the locality sampler
# puts every image on the rank of its planned expert so that (almost)
# nothing has to travel. Checkpoints hold all experts, whatever the world
# size, and resume exactly (ResumeStateHook).
#
#   bash tools/dist_train.sh configs/gem/gem-dino-tiny_r18_mini-uodb_ep.py 2
#
# With one process it trains as gem-dino-tiny_r18_mini-uodb.py.
_base_ = './gem-dino-tiny_r18_mini-uodb.py'

# split the experts (GEMDistributedDataParallel converts every MoEFFN to an
# ExpertParallelMoEFFN and keeps the expert shards out of DDP)
model_wrapper_cfg = dict(
    type='GEMDistributedDataParallel',
    expert_parallel=True,
    expert_parallel_size=None)  # None: the world size
# clip with the gradient norm of the whole model, across ranks (and, with
# tools/train.py --amp, check overflows across ranks: the constructor turns the
# AmpOptimWrapper that --amp asks for into GlobalNormAmpOptimWrapper)
optim_wrapper = dict(
    type='GlobalNormOptimWrapper',
    constructor='ExpertParallelOptimWrapperConstructor')
# gather the experts before rank 0 saves
default_hooks = dict(checkpoint=dict(type='ExpertParallelCheckpointHook'))
# every image on the rank of its expert, each image once per epoch in the
# planned proportions; only the surplus of over-full ranks is exchanged
# (strict=True moves nothing but drops/repeats images: see the README)
train_dataloader = dict(sampler=dict(type='ExpertLocalitySampler'))

custom_hooks = [
    dict(
        type='GEMPlannerHook',
        capacity_factor=1.25,
        beta=0.0,
        similarity=dict(sources=dict(labels=0.5, features=0.5), prior=None),
        num_probe_images=8,
        solver='ECOS'),
    # hands the plan to the sampler, logs train/exchange_MB per iteration
    dict(type='ExpertParallelExchangeHook'),
    # random states and data position in every checkpoint: exact resume
    dict(type='ResumeStateHook'),
]
