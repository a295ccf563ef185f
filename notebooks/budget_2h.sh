#!/bin/bash
# The long-budget comparison (notebooks/results/budget_2h.md): ACE, its global term alone (the
# DINO-style baseline), its local terms alone (comp+decomp) and composition alone (comp), each
# pretrained with at least 2 hours of CPU (one thread each, vit_nano, batch 16) on the 1757
# radiographs of notebooks/data/pretrain_union.txt (the JSRT test split held out), then evaluated
# with random init beside them on JSRT. The budget is CPU time: each objective's length in epochs
# comes from its CPU seconds per step on one thread (ACE 0.42-0.46, DINO-style 0.40-0.46,
# comp+decomp 0.36-0.41, comp 0.35-0.39, measured beside other runs), so the cheaper objectives
# run more steps; each run's CPU time is the cpu_s column of its metrics.jsonl.
#
#     bash notebooks/budget_2h.sh [pretrain|evaluate|all]
#
# A stopped run (Ctrl-C, SIGTERM) continues with `ace pretrain --resume runs/budget/NAME/last.safetensors`.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
common=(--data notebooks/data/pretrain_union.txt --preset vit_nano --recipe authors --batch-size 16 --lr 0.003
        --seed 0 --threads 1 --checkpoint-every 500)

pretrain() {   # NAME OBJECTIVE EPOCHS [--set ...]
    local name=$1 objective=$2 epochs=$3
    shift 3
    python -m ace pretrain "${common[@]}" --objective "$objective" --epochs "$epochs" --out "runs/budget/$name" "$@"
}

if [[ $stage == pretrain || $stage == all ]]; then
    # ACE with the global term at 0.01 (notebooks/results/sweep_global_weight.md); the DINO-style
    # baseline with teacher temperature 0.02 (notebooks/results/sweep_dino.md: at 0.04 it stays at ln K).
    pretrain ace ace 165 --set global_weight=0.01 &
    pretrain dino dino 170 --set teacher_temp=0.02 &
    pretrain comp_decomp comp+decomp 190 &
    pretrain comp comp 185 &
    wait
fi
if [[ $stage == evaluate || $stage == all ]]; then
    python notebooks/compare_pretraining.py --runs runs/budget/ace runs/budget/dino runs/budget/comp_decomp runs/budget/comp \
        --eval-root runs/evaluations/budget --threads 1 --reuse --name budget_2h
fi
