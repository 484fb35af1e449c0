"""results.md of a main-job folder (pipeline.sh writes it at the end): every stage's figures in one page.

    python results.py --out_dir=out/cpu

Reads tokenizer/, dynamics/, agent_bc/, agent_rl/ (their metrics.jsonl), eval.md and times.tsv under out_dir;
names the device (its CPU or GPU model) and the commit (-dirty: with local changes). A missing piece is one clear line.
"""
import json
import os
import platform
import subprocess

import torch

import common

# ---------------------------------------------------------------------------------------------------- config
out_dir = "out/cpu"
# -------------------------------------------------------------------------------------------------------------
config = common.configure(globals())


def last(stage, key):
    """The last value of `key` in out_dir/stage/metrics.jsonl, with the line it came from."""
    path = os.path.join(out_dir, stage, "metrics.jsonl")
    if not os.path.exists(path):
        raise common.ConfigError(f"{path} is missing: run that stage first (bash pipeline.sh)")
    rows = []
    for line in open(path):
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a killed run
            pass
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        raise common.ConfigError(f"{path} has no '{key}': the stage has not finished an eval")
    return rows[-1][key], rows[-1]


def hardware():
    if torch.cuda.is_available():
        return f"CUDA GPU: {torch.cuda.get_device_name()}"
    model = platform.processor()
    if os.path.exists("/proc/cpuinfo"):  # Linux names the model there
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        model = names[0] if names else model
    return f"CPU: {model}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}"


def commit():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


psnr, tok = last("tokenizer", "val_psnr")
rollout, dyn = last("dynamics", "rollout_psnr")
bc_acc, bc = last("agent_bc", "val_bc_acc")
imagined, _ = last("agent_rl", "imagined_return")
eval_path = os.path.join(out_dir, "eval.md")  # the table eval_agent.py writes beside eval.json
if not os.path.exists(eval_path):
    raise common.ConfigError(f"{eval_path} is missing: run the eval stage first (bash pipeline.sh)")
times = {}
if os.path.exists(os.path.join(out_dir, "times.tsv")):
    for line in open(os.path.join(out_dir, "times.tsv")):
        name, sec = line.split()
        times[name] = times.get(name, 0) + int(sec)

lines = [f"# nanodreamer results: {out_dir}", "",
         f"{hardware()}; commit {commit()}.", "",
         "## World model and agent", "",
         "| figure | value |", "|---|---|",
         f"| tokenizer val PSNR | {psnr:.2f} dB (iter {tok['iter']}) |",
         f"| tokenizer val SSIM | {tok['val_ssim']:.4f} |",
         f"| rollout PSNR (K={dyn.get('eval_K')}, {dyn.get('eval_frames')} frames, {dyn['eval_windows']} held-out "
         f"windows) | {rollout:.2f} dB (iter {dyn['iter']}) |",
         f"| floor (repeat the last context frame) | {dyn['floor_psnr']:.2f} dB |",
         f"| ceiling (tokenizer reconstruction) | {dyn['ceiling_psnr']:.2f} dB |",
         f"| shuffle ratio (true actions vs shuffled: above 1 means actions are used) | {dyn['shuffle_ratio']:.3f} |",
         f"| BC accuracy on held-out episodes (copy-the-last-action baseline) | {bc_acc:.3f} "
         f"({bc['val_copy_acc']:.3f}) |",
         f"| reward head: precision / recall of unlock events ({bc['reward_events']} events) | "
         f"{bc['reward_precision']:.2f} / {bc['reward_recall']:.2f} |",
         f"| imagined return (last imagination step) | {imagined:.3f} |", "",
         "## Real Crafter", ""]
lines += open(eval_path).read().splitlines()
lines += ["", "## Wall time", "", "| stage | minutes |", "|---|---|"]
lines += [f"| {name} | {sec / 60:.1f} |" for name, sec in times.items()]
lines += [f"| total | {sum(times.values()) / 60:.1f} |", "",
          "Beside this file: tokenizer/recon.png (reconstructions), rollout.mp4 and rollout.gif (real | generated), "
          "agent_episode.mp4 (the RL agent in the real game), eval.json (every achievement).", ""]
path = os.path.join(out_dir, "results.md")
common.atomic_write(path, lambda f: f.write("\n".join(lines)))
print(f"wrote {path}")
