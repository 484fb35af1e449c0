"""The shipped checkpoints (pretrained/, README): a main job's tokenizer and RL agent, small enough
for the repo.

    python export.py --run=out/cpu --out=pretrained

Writes tokenizer.pt and agent.pt: the weights in bf16 (loaded into fp32 models as they are), without
the optimizer, the loss normalizers, the RNG states or the behavioral prior (imagination's, not
acting's); everything the loading code reads stays, so play.py, sample.py, eval_agent.py and
agent.load_policy take them as they take a run's. agent.pt holds the dynamics model too and finds
its tokenizer beside it, wherever the folder goes (tokenizer.tokenizer_path).
"""
import os

import common

# ------------------------------------------------------------------------------------------- config
run = "out/cpu"  # a main job's folder: run/tokenizer/ckpt.pt and run/agent_rl/ckpt.pt
out = "pretrained"
# --------------------------------------------------------------------------------------------------
config = common.configure(globals())
# read only to resume, or by studies
TRAINING = ("optimizer", "criterion", "rng", "labeled_episodes")

for stage, name in (("tokenizer", "tokenizer.pt"), ("agent_rl", "agent.pt")):
    path, dst = os.path.join(run, stage, "ckpt.pt"), os.path.join(out, name)
    ckpt = common.load_checkpoint(path, f"{stage} checkpoint")
    small = {k: v for k, v in ckpt.items() if k not in TRAINING}
    small["model"] = {k: v.bfloat16() if v.is_floating_point() else v
                      for k, v in ckpt["model"].items() if not k.startswith("prior.")}
    if "tokenizer" in small:  # found beside it (tokenizer_path), wherever the folder goes
        small["tokenizer"] = {**small["tokenizer"], "path": "tokenizer.pt"}
    small["exported_from"] = os.path.abspath(run)  # (its results.md names the commit that made it)
    common.atomic_save(small, dst)
    print(f"wrote {dst} ({os.path.getsize(dst) / 2 ** 20:.1f} MB) from {path}")
