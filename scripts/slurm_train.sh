#!/usr/bin/env bash
# Distributed training under SLURM: srun starts one task per GPU, each with --launcher slurm.
# Inside an sbatch script (see docs/distributed.md) it uses the job's allocation; from a login
# node it asks for one.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/slurm_train.sh OPTIONS_YML [NUM_GPUS] [train.py arguments...]

  OPTIONS_YML   option file; batch_size_per_gpu is per GPU (per task)
  NUM_GPUS      total tasks = GPUs (default: $SLURM_NTASKS inside a job, else 8)

Environment: GPUS_PER_NODE (default 8, or all GPUs when NUM_GPUS is smaller), CPUS_PER_TASK (default 4),
PARTITION, JOB_NAME (default basicsr_ext), SRUN_ARGS (more srun options).
--auto_resume is always passed, so a requeued or resubmitted job continues from its newest checkpoint.
Example: PARTITION=gpu scripts/slurm_train.sh options/train/SRResNet/x4.yml 16
USAGE
    exit 2
}

[[ $# -ge 1 && $1 != -h && $1 != --help ]] || usage
options=$1
shift
[[ -f $options ]] || { echo "slurm_train.sh: option file '$options' not found" >&2; usage; }
gpus=${SLURM_NTASKS:-8}
if [[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]]; then
    gpus=$1
    shift
fi
per_node=${GPUS_PER_NODE:-8}
((per_node > gpus)) && per_node=$gpus
command -v srun >/dev/null || { echo 'slurm_train.sh: srun not found; use scripts/dist_train.sh without SLURM' >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# --kill-on-bad-exit: if one task fails, srun ends the others instead of leaving them in a collective
args=(--ntasks="$gpus" --ntasks-per-node="$per_node" --gres=gpu:"$per_node" --cpus-per-task="${CPUS_PER_TASK:-4}"
      --kill-on-bad-exit=1 --job-name="${JOB_NAME:-basicsr_ext}")
[[ -n ${PARTITION:-} ]] && args+=(--partition="$PARTITION")
read -r -a extra <<<"${SRUN_ARGS:-}"

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec srun "${args[@]}" ${extra[@]+"${extra[@]}"} "${PYTHON:-python}" -u "$root/train.py" -opt "$options" --launcher slurm --auto_resume "$@"
