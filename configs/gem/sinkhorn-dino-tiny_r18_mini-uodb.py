# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb.py with the balanced Sinkhorn router (BASE / S-BASE,
# mmgem/models/routers/README.md): only the router differs.
_base_ = './moe-dino-tiny_r18_mini-uodb.py'

model = dict(router=dict(type='SinkhornRouter'))
