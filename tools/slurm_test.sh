#!/usr/bin/env bash
# Distributed testing on a slurm cluster with MMEngine's slurm launcher:
#   GPUS=16 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [extra args]
exec bash "$(dirname "$0")/slurm_launch.sh" test.py "$1" "$2" "$3" "$4" "${@:5}"
