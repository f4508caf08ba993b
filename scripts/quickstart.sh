#!/usr/bin/env bash
# The whole pipeline on a small local hopper dataset with small budgets, ending with ITPO against ReBRAC
# on the same evaluation seeds. Needs no network but the package registries; about 15 minutes on 2 CPU cores.
# It shows that every stage runs and how they connect, not what the method gains: with these budgets
# ReBRAC, the world model and so ITPO are far from trained, and ITPO − ReBRAC is noise.
set -euo pipefail
cd "$(dirname "$0")/.."
# Its datasets go to ./datasets, not Minari's default folder, so that they never shadow full-size ones.
export MINARI_DATASETS_PATH="${MINARI_DATASETS_PATH:-$PWD/datasets}"
ENV_ID=hopper-medium-replay
python collect_dataset.py --env hopper --total-timesteps 20000 --snapshot-every 5000 --transitions 10000 \
    --work-dir checkpoints/quickstart-collect
python rebrac.py --env-id $ENV_ID --total-updates 10000 --batch-size 256 --eval-every 5000 --eval-episodes 5
python train_dynamics.py --env-id $ENV_ID --total-steps 10000 --eval-every 5000
python train_reward.py --env-id $ENV_ID --total-steps 5000 --eval-every 5000
python meanflow_onestep.py --env-id $ENV_ID --total-steps 3000 --eval-every 3000
python itpo_eval.py --env-id $ENV_ID --particles 32 --episodes 5 --max-episode-steps 200
python itpo_eval.py --env-id $ENV_ID --particles 32 --episodes 5 --max-episode-steps 200 --world-model meanflow
echo
echo "Datasets are in $MINARI_DATASETS_PATH. For the other commands in this shell:"
echo "  export MINARI_DATASETS_PATH=$MINARI_DATASETS_PATH"
