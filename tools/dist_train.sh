#!/usr/bin/env bash
# Distributed training with torchrun and MMEngine's pytorch launcher:
#   bash tools/dist_train.sh CONFIG GPUS [extra args of tools/train.py]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
CONFIG=$1
GPUS=$2
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$GPUS" "$CONFIG" "${@:3}"
