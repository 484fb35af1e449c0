#!/usr/bin/env bash
# The default nanodreamer pipeline on Crafter, stage by stage. Rerunning it resumes every stage where it stopped.
#   bash pipeline.sh                        # data -> tokenizer -> dynamics -> rollout video -> agent -> real game
#   OUT=out/run2 bash pipeline.sh           # another output folder
# Scale a stage by editing the config variables at the top of its script (or a config/ file).
set -euo pipefail
cd "$(dirname "$0")"
DATA=${DATA:-data/crafter}
OUT=${OUT:-out/crafter}
init() { [ -f "$1/ckpt.pt" ] && echo resume || echo scratch; }  # resume a stage that has a checkpoint

python data.py --source=crafter --data_dir="$DATA" --num_frames=100000
python train_tokenizer.py --data_dir="$DATA" --out_dir="$OUT/tokenizer" --init_from="$(init "$OUT/tokenizer")"
python train_dynamics.py --data_dir="$DATA" --tokenizer_ckpt="$OUT/tokenizer/ckpt.pt" --out_dir="$OUT/dynamics" \
  --init_from="$(init "$OUT/dynamics")"
python sample.py --dynamics_ckpt="$OUT/dynamics/ckpt.pt" --out="$OUT/rollout.mp4"
python train_agent.py --phase=finetune --init_ckpt="$OUT/dynamics/ckpt.pt" --out_dir="$OUT/agent_bc" \
  --init_from="$(init "$OUT/agent_bc")"
python train_agent.py --phase=imagine --init_ckpt="$OUT/agent_bc/ckpt.pt" --out_dir="$OUT/agent_rl" \
  --init_from="$(init "$OUT/agent_rl")"
python eval_agent.py --bc_ckpt="$OUT/agent_bc/ckpt.pt" --rl_ckpt="$OUT/agent_rl/ckpt.pt" --out="$OUT/eval.json"
