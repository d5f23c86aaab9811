#!/usr/bin/env bash
# Distributed training with torchrun: one node with N GPUs, or one node of a multi-node run.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/dist_train.sh NUM_PROCS OPTIONS_YML [train.py arguments...]

  NUM_PROCS     processes on this node (one per GPU; on CPU any number, gloo backend)
  OPTIONS_YML   option file; batch_size_per_gpu is per process

Multi-node: run the same command on every node with
  NNODES=<nodes> NODE_RANK=<0..nodes-1> MASTER_ADDR=<host of node 0> [MASTER_PORT=29500]
or, with an elastic rendezvous instead of a fixed node rank,
  NNODES=<nodes> RDZV_ENDPOINT=<host>:<port> [RDZV_ID=<job id>]

Add --auto_resume to continue a stopped run from its newest checkpoint.
Example: scripts/dist_train.sh 4 options/train/SRResNet/x4.yml --auto_resume
USAGE
    exit 2
}

[[ $# -ge 2 && $1 =~ ^[1-9][0-9]*$ ]] || usage
nproc=$1
options=$2
shift 2
[[ -f $options ]] || { echo "dist_train.sh: option file '$options' not found" >&2; usage; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nnodes=${NNODES:-1}
launch=(--nproc_per_node="$nproc" --nnodes="$nnodes")
if [[ -n ${RDZV_ENDPOINT:-} ]]; then
    launch+=(--rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-basicsr_ext}")
elif [[ $nnodes -gt 1 ]]; then
    [[ -n ${MASTER_ADDR:-} && -n ${NODE_RANK:-} ]] || {
        echo 'dist_train.sh: NNODES > 1 needs NODE_RANK and MASTER_ADDR (or RDZV_ENDPOINT)' >&2
        exit 2
    }
    launch+=(--node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="${MASTER_PORT:-29500}")
else
    # a free port, so that two single-node runs on one machine do not collide
    launch+=(--standalone)
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "${PYTHON:-python}" -m torch.distributed.run "${launch[@]}" "$root/train.py" -opt "$options" --launcher pytorch "$@"
