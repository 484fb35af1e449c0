#!/usr/bin/env bash
# The main job: every stage of nanodreamer on Crafter, from an empty folder to a scored agent and results.md.
#   bash pipeline.sh                  # the preset for this machine: 'gpu' with CUDA, else 'cpu'
#   PRESET=tiny bash pipeline.sh      # every stage at toy sizes: ~15 minutes on 2 CPU cores, weak but real numbers
#   OUT=out/run2 bash pipeline.sh     # another output folder
# A preset is one config file per stage, config/<stage>_<preset>.py (CONFIG=dir for another folder); edit them to
# scale up. Rerunning resumes each stage where it stopped, or skips it when it is complete.
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${CONFIG:-config}
PRESET=${PRESET:-$(python -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')")}
if [ "$PRESET" = gpu ] && [ ! -f "$CONFIG/tokenizer_gpu.py" ]; then
  echo "preset gpu: no GPU recipe has been measured yet; the measured CPU recipe runs on the GPU"
  PRESET=cpu
fi
for s in data tokenizer dynamics finetune imagine eval; do
  [ -f "$CONFIG/${s}_$PRESET.py" ] || { echo "error: preset '$PRESET' has no $CONFIG/${s}_$PRESET.py"; exit 1; }
done
DATA=${DATA:-data/crafter$([ "$PRESET" = cpu ] || echo "_$PRESET")}
OUT=${OUT:-out/$PRESET}
mkdir -p "$OUT"
echo "nanodreamer main job: preset $PRESET ($CONFIG/*_$PRESET.py), data $DATA, results in $OUT/results.md"
times=$(grep -h "^# time:" "$CONFIG"/{data,tokenizer,dynamics,finetune,imagine,eval}_"$PRESET".py)
echo "$times" | sed "s/^# time:/  /"
echo "$times" | awk '{n = substr($4, 2); t += ($5 ~ /^s/) ? n / 60 : n}  # "# time: STAGE ~N min|s ..."
  END {printf "   total      ~%.0f min (%.1f h)\n", t, t / 60}'

init() { [ -f "$1/ckpt.pt" ] && echo resume || echo scratch; }  # resume a stage that has a checkpoint
stage() {  # stage NAME COMMAND...: run it and add its wall time to $OUT/times.tsv
  local name=$1 t0=$SECONDS
  shift
  echo "== $name: $*"
  "$@"
  printf "%s\t%s\n" "$name" $((SECONDS - t0)) >> "$OUT/times.tsv"
}
py() { python "$1" "$CONFIG/${2}_$PRESET.py" "${@:3}"; }  # py SCRIPT STAGE FLAGS...

stage data py data.py data --source=crafter --data_dir="$DATA"
stage tokenizer py train_tokenizer.py tokenizer --data_dir="$DATA" --out_dir="$OUT/tokenizer" \
  --init_from="$(init "$OUT/tokenizer")"
stage dynamics py train_dynamics.py dynamics --data_dir="$DATA" --tokenizer_ckpt="$OUT/tokenizer/ckpt.pt" \
  --out_dir="$OUT/dynamics" --init_from="$(init "$OUT/dynamics")"
[ "$OUT/rollout.gif" -nt "$OUT/dynamics/ckpt.pt" ] || stage video python sample.py \
  --dynamics_ckpt="$OUT/dynamics/ckpt.pt" --out="$OUT/rollout.mp4,$OUT/rollout.gif"
stage finetune py train_agent.py finetune --phase=finetune --init_ckpt="$OUT/dynamics/ckpt.pt" --out_dir="$OUT/agent_bc" \
  --init_from="$(init "$OUT/agent_bc")"
stage imagine py train_agent.py imagine --phase=imagine --init_ckpt="$OUT/agent_bc/ckpt.pt" --out_dir="$OUT/agent_rl" \
  --init_from="$(init "$OUT/agent_rl")"
[ "$OUT/eval.json" -nt "$OUT/agent_rl/ckpt.pt" ] || stage eval py eval_agent.py eval \
  --bc_ckpt="$OUT/agent_bc/ckpt.pt" --rl_ckpt="$OUT/agent_rl/ckpt.pt" --out="$OUT/eval.json"
python results.py --out_dir="$OUT"
