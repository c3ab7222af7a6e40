#!/usr/bin/env bash
# claim-gpus.sh N COMMAND [ARG ...]: run COMMAND on N GPUs of this machine that no other job holds.
# Snakemake's `gpus` resource already keeps the running jobs' GPUs within --resources gpus=<machine's count>;
# this only says which devices a job gets (CUDA_VISIBLE_DEVICES), with one lock file per GPU held until COMMAND
# exits. COMMAND runs unchanged with N=0, without nvidia-smi, or where CUDA_VISIBLE_DEVICES is already set
# (SLURM sets it for the GPUs it allocated).
set -euo pipefail
want=$1
shift
if [ "$want" -lt 1 ] || [ -n "${CUDA_VISIBLE_DEVICES:-}" ] || ! command -v nvidia-smi > /dev/null; then
  exec "$@"
fi
total=$(nvidia-smi -L | grep -c '^GPU ' || true)
locks=${EFFBERT_GPU_LOCKS:-/tmp/effbert-gpu-locks}
mkdir -p "$locks"
while true; do
  claimed=()
  for ((gpu = 0; gpu < total && ${#claimed[@]} < want; gpu++)); do
    exec {fd}> "$locks/$gpu.lock"
    if flock --nonblock "$fd"; then
      claimed+=("$gpu")
    else
      exec {fd}>&-
    fi
  done
  if [ "${#claimed[@]}" -ge "$want" ]; then
    break
  fi
  # fewer free than asked (a job that just ended has not let go yet): give back what we hold, try again
  for held in /proc/$$/fd/*; do
    if [[ "$(readlink "$held")" == "$locks"/*.lock ]]; then
      eval "exec ${held##*/}>&-"
    fi
  done
  sleep 2
done
CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${claimed[*]}")
export CUDA_VISIBLE_DEVICES
exec "$@"
