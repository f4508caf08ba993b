cd <sweep root>
export MINARI_DATASETS_PATH=<the shared datasets> OMP_NUM_THREADS=1
C=<sweep root>/checkpoints/walker2d-medium
M="--rebrac-checkpoint $C/rebrac_seed0.pt --dynamics-checkpoint $C/meanflow_seed0.pt --reward-checkpoint $C/reward_seed0.pt"
if [ "$1" = gt ]; then
taskset -c 0 python itpo_eval.py --env-id walker2d-medium --seed 0 --horizon 5 --particles 32 --inner-steps 1 --step-size 5e-6 --episodes 10 --eval-seed 1000 --device cpu --world-model meanflow $M --ground-truth --ground-truth-every 10 --run-name gt_walker2d-medium_meanflow --no-baseline
else
taskset -c 1 python plan_eval.py --env-id walker2d-medium --seed 0 --planner mppi --world-model meanflow --iterations 2 --policy-samples 8 --elites 16 --temperature 0.5 --match-itpo 32 1 --episodes 10 --eval-seed 1000 --device cpu $M --run-name mf_mppi_walker2d-medium
taskset -c 1 python plan_eval.py --env-id walker2d-medium --seed 0 --planner shooting --world-model meanflow --step-size 0.03 --shooting-steps 1 --match-itpo 32 1 --episodes 10 --eval-seed 1000 --device cpu $M --run-name mf_shooting_walker2d-medium
fi
