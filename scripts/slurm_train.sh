#!/usr/bin/env bash
# Distributed training under SLURM: srun starts one task per GPU, each with --launcher slurm.
# Inside a job (sbatch/salloc) the step takes the job's tasks and GPUs; from a login node
# it asks for them (see docs/distributed.md for an sbatch script with preemption handling).
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/slurm_train.sh OPTIONS_YML [NUM_GPUS] [train.py arguments...]

  OPTIONS_YML   option file; batch_size_per_gpu is per GPU (per task)
  NUM_GPUS      outside a job: tasks = GPUs to ask for (default 8); inside a job: ignored,
                the job's --ntasks is used

Outside a job: GPUS_PER_NODE (default 8, at most NUM_GPUS), CPUS_PER_TASK (default 4), PARTITION,
JOB_NAME (default basicsr_ext). Always: SRUN_ARGS (more srun options), PYTHON (default python).
--auto_resume is always passed, so a requeued or resubmitted job continues from its newest checkpoint.
Example: PARTITION=gpu scripts/slurm_train.sh options/train/SRResNet/x4.yml 16
USAGE
    exit 2
}

[[ $# -ge 1 && $1 != -h && $1 != --help ]] || usage
options=$1
shift
[[ -f $options ]] || { echo "slurm_train.sh: option file '$options' not found" >&2; usage; }
gpus=8
if [[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]]; then
    gpus=$1
    shift
fi
command -v srun >/dev/null || { echo 'slurm_train.sh: srun not found; without SLURM use scripts/dist_train.sh' >&2; exit 2; }

# --kill-on-bad-exit: if one task fails, srun ends the others instead of leaving them in a collective
args=(--kill-on-bad-exit=1)
if [[ -z ${SLURM_JOB_ID:-} ]]; then
    per_node=${GPUS_PER_NODE:-8}
    ((per_node > gpus)) && per_node=$gpus
    args+=(--ntasks="$gpus" --ntasks-per-node="$per_node" --gres=gpu:"$per_node"
           --cpus-per-task="${CPUS_PER_TASK:-4}" --job-name="${JOB_NAME:-basicsr_ext}")
    [[ -n ${PARTITION:-} ]] && args+=(--partition="$PARTITION")
fi
read -r -a extra <<<"${SRUN_ARGS:-}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec srun "${args[@]}" ${extra[@]+"${extra[@]}"} "${PYTHON:-python}" -u "$root/train.py" -opt "$options" \
    --launcher slurm --auto_resume "$@"
