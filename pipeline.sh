#!/usr/bin/env bash
# The main job: every stage of nanodreamer on Crafter, from an empty folder to a scored agent and
# results.md.
#   bash pipeline.sh                  # the preset for this machine: 'gpu' with CUDA, else 'cpu'
#   PRESET=tiny bash pipeline.sh      # every stage at toy sizes: ~15 minutes on 2 CPU cores,
#                                     # weak but real numbers
#   OUT=out/run2 bash pipeline.sh     # another output folder
#   # the label-efficiency study (§E) in place of the agent stages:
#   LABEL_STUDY=docs/label_efficiency bash pipeline.sh
# A preset is one config file per stage, config/<stage>_<preset>.py (CONFIG=dir for another
# folder); edit them to scale up. Rerunning resumes each stage where it stopped, or skips it when it
# is complete.
# The label study: the dynamics stage is its full-label run (f1.0); then one dynamics run per name
# in LABEL_RUNS, on the same store, tokenizer, steps and held-out windows; a name is its settings:
# f0.1_lb0.5 = --action_label_frac=0.1 --labeled_batch_frac=0.5 (no _lb: 0, a uniform draw), a
# trailing _alone = --unlabeled_video=False. The table and plot go to $LABEL_STUDY.md/png.
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${CONFIG:-config}
# gpu where torch can use CUDA
PRESET=${PRESET:-$(python -c "import common; print(common.main_job_preset())")}
for s in data tokenizer dynamics finetune imagine eval; do
  [ -f "$CONFIG/${s}_$PRESET.py" ] ||
    { echo "error: preset '$PRESET' has no $CONFIG/${s}_$PRESET.py"; exit 1; }
done
DATA=${DATA:-data/crafter$([ "$PRESET" = cpu ] || echo "_$PRESET")}
OUT=${OUT:-out/$PRESET}
LABEL_STUDY=${LABEL_STUDY:-}
LABEL_RUNS=${LABEL_RUNS:-f0.3_lb0.5 f0.1_lb0.5 f0.03_lb0.5 f0.1 f0.1_alone f0.0}
mkdir -p "$OUT"
if [ -z "$LABEL_STUDY" ]; then
  stages="data tokenizer dynamics finetune imagine eval" runs=0
  echo "nanodreamer main job: preset $PRESET ($CONFIG/*_$PRESET.py), data $DATA," \
    "results in $OUT/results.md"
else
  stages="data tokenizer dynamics" runs=$(wc -w <<< "$LABEL_RUNS")
  echo "nanodreamer label study: preset $PRESET, data $DATA, runs in $OUT/labels:" \
    "f1.0 $LABEL_RUNS -> $LABEL_STUDY.md"
fi
# the plan: each stage's expected minutes, the '_minutes = N' its config file begins with (the
# scripts ignore names that start with '_')
for s in $stages; do
  echo "$s $(sed -n 's/^_minutes = \([0-9.]*\).*/\1/p' "$CONFIG/${s}_$PRESET.py")"
done | awk -v runs="$runs" '{n = $2 * ($1 == "dynamics" ? 1 + runs : 1); t += n
  printf "  %-10s ~%s min\n", $1, $2
  if ($1 == "dynamics" && runs) printf "   and %d more dynamics runs\n", runs}
  END {printf "  total      ~%.0f min (%.1f h)\n", t, t / 60}'

# resume a stage that has a checkpoint
init() { [ -f "$1/ckpt.pt" ] && echo resume || echo new; }
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
stage dynamics py train_dynamics.py dynamics --data_dir="$DATA" \
  --tokenizer_ckpt="$OUT/tokenizer/ckpt.pt" --out_dir="$OUT/dynamics" \
  --init_from="$(init "$OUT/dynamics")"
if [ -n "$LABEL_STUDY" ]; then
  mkdir -p "$OUT/labels"
  ln -sfn ../dynamics "$OUT/labels/f1.0"
  # f0.1_lb0.5_alone -> --action_label_frac=0.1 --labeled_batch_frac=0.5 --unlabeled_video=False
  for name in $LABEL_RUNS; do
    flags=(--action_label_frac="$(sed -E 's/^f([0-9.]+).*/\1/' <<< "$name")")
    flags+=(--labeled_batch_frac="$([[ $name =~ _lb([0-9.]+) ]] && echo "${BASH_REMATCH[1]}" || echo 0)")
    [[ $name == *_alone ]] && flags+=(--unlabeled_video=False)
    stage "labels/$name" py train_dynamics.py dynamics --data_dir="$DATA" \
      --tokenizer_ckpt="$OUT/tokenizer/ckpt.pt" --out_dir="$OUT/labels/$name" \
      --init_from="$(init "$OUT/labels/$name")" "${flags[@]}"
  done
  list=""
  for name in f1.0 $LABEL_RUNS; do list+="${list:+,}$OUT/labels/$name"; done
  python tools/results.py --label_runs="$list" --study="$LABEL_STUDY"
  exit
fi
[ "$OUT/rollout.gif" -nt "$OUT/dynamics/ckpt.pt" ] || stage video python sample.py \
  --dynamics_ckpt="$OUT/dynamics/ckpt.pt" --out="$OUT/rollout.mp4,$OUT/rollout.gif"
stage finetune py train_agent.py finetune --phase=finetune --init_ckpt="$OUT/dynamics/ckpt.pt" \
  --out_dir="$OUT/agent_bc" --init_from="$(init "$OUT/agent_bc")"
stage imagine py train_agent.py imagine --phase=imagine --init_ckpt="$OUT/agent_bc/ckpt.pt" \
  --out_dir="$OUT/agent_rl" --init_from="$(init "$OUT/agent_rl")"
[ "$OUT/eval.json" -nt "$OUT/agent_rl/ckpt.pt" ] || stage eval py eval_agent.py eval \
  --bc_ckpt="$OUT/agent_bc/ckpt.pt" --rl_ckpt="$OUT/agent_rl/ckpt.pt" --out="$OUT/eval.json"
python tools/results.py --out_dir="$OUT"
