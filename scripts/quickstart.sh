#!/usr/bin/env bash
# The whole pipeline on a small local hopper dataset with small budgets, ending with ITPO vs ReBRAC
# on the same evaluation seeds. Needs no network but the package registries; under 30 minutes on 2 CPU cores.
# Its scores show that the pipeline works, not the method's gain: the budgets are far too small for that.
set -euo pipefail
cd "$(dirname "$0")/.."
export MINARI_DATASETS_PATH="${MINARI_DATASETS_PATH:-$PWD/datasets}"
export OMP_NUM_THREADS=1
ENV_ID=hopper-medium-replay
python collect_dataset.py --env hopper --total-timesteps 20000 --snapshot-every 5000 --transitions 10000 \
    --work-dir checkpoints/quickstart-collect
python rebrac.py --env-id $ENV_ID --total-updates 10000 --batch-size 256 --eval-every 5000 --eval-episodes 5
python train_dynamics.py --env-id $ENV_ID --total-steps 10000 --eval-every 5000
python train_reward.py --env-id $ENV_ID --total-steps 5000 --eval-every 5000
python itpo_eval.py --env-id $ENV_ID --particles 32 --episodes 5 --max-episode-steps 200
