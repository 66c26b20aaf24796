#!/usr/bin/env bash
# Distributed testing with torchrun and MMEngine's pytorch launcher:
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [extra args of tools/test.py]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$GPUS" "$CONFIG" "$CHECKPOINT" "${@:4}"
