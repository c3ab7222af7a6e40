#!/usr/bin/env bash
# The image's entrypoint: Snakemake targets in the workspace (the current directory, /workspace).
#   docker run --gpus all -v "$PWD:/workspace" effbert [TARGET ...] [SNAKEMAKE OPTION ...]
# Targets: all (the default), shards, pretrain, glue, lra, report, or a model folder's name (README "Docker").
# A first word that is a program (effbert, snakemake, torchrun, python, bash, sh) runs that program instead.
# A workspace without a Snakefile first gets the bundled workflow, configs, model folders and demo inputs
# (nothing there is overwritten). With GPUs visible, their count goes to Snakemake (--resources gpus=N) and to
# pretraining (torchrun on all N) through profiles/gpu, unless the command line names a profile itself.
# Environment: EFFBERT_CORES (default all), EFFBERT_GPUS (default: counted by nvidia-smi).
set -euo pipefail
PROJECT=${EFFBERT_PROJECT:-/opt/effbert/project}

case "${1:-}" in
  effbert | snakemake | torchrun | python | python3 | bash | sh) exec "$@" ;;
esac

if [ ! -e Snakefile ]; then
  echo "effbert: no Snakefile in $PWD; copying the bundled workflow here" >&2
  cp -R -n "$PROJECT"/. .
fi

gpus=${EFFBERT_GPUS:-}
if [ -z "$gpus" ]; then
  gpus=0
  if command -v nvidia-smi > /dev/null; then
    gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true)
  fi
fi

args=(--cores "${EFFBERT_CORES:-all}")
if [ "$gpus" -gt 0 ] && [[ " $* " != *" --profile"* && " $* " != *" --workflow-profile"* ]]; then
  # a command-line --set-resources replaces the profile's whole list, so it names every GPU rule
  args+=(--profile profiles/gpu --resources "gpus=$gpus"
    --set-resources "pretrain_model:gpus=$gpus" finetune_glue:gpus=1 train_lra:gpus=1)
fi
exec snakemake "${args[@]}" "$@"
