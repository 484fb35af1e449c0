"""Rollouts of a trained dynamics model from data contexts: a video of real | generated; frames/s.

    python sample.py --dynamics_ckpt=out/dynamics/ckpt.pt --out=rollout.mp4
    python sample.py --dynamics_ckpt=out/dynamics/ckpt.pt --actions=random --num_frames=24 --out=rollout.gif
    python sample.py --dynamics_ckpt=out/dynamics/ckpt.pt --actions=0,3,3,5,5,5,1,1  # per new frame
    python sample.py  # the shipped checkpoints (pretrained/), contexts from real Crafter

actions: 'data' (the recorded ones), 'random' (uniform per component), or a comma-separated list of
num_frames actions for a single-component action spec. The first new frame follows the last context
frame and its action. Contexts come from the data's held-out episodes, or (data_dir='crafter', and
wherever a Crafter model's data is not on this machine) from real Crafter, the demonstrator playing:
then 'real' is the game's own continuation.
"""
import os
import time

import numpy as np
import torch

import common
from dynamics import (check_action_spec, check_tokenizer, generate, load_dynamics, side_by_side,
                      write_video)
from game import run_episode
from store import FrameStore
from tokenizer import load_tokenizer, to_float, tokenizer_path

# ------------------------------------------------------------------------------------------- config
dynamics_ckpt = "pretrained/agent.pt"  # a dynamics or agent checkpoint (default: the shipped one,
                                       # README)
tokenizer_ckpt = ""  # default: the tokenizer the dynamics model was trained on (or one beside it)
data_dir = ""  # default: the data it was trained on; 'crafter': real Crafter (also where that data
               # is not here)
split = "val"
out = "out/rollout.mp4"  # .mp4 or .gif, or several paths comma-separated (one rollout, each format)
actions = "data"  # 'data' | 'random' | '0,3,3,5,...'
num_windows = 4  # rollouts, one per row
context_frames = 8
num_frames = 8
sampling_steps = 4  # sampling steps per frame (K, §D.2)
fps = 4
seed = 0
device = "auto"
dtype = "auto"  # 'auto' (bf16 where this device runs it fast, else fp32) | 'bfloat16' | 'float32'
threads = 0
# --------------------------------------------------------------------------------------------------
config = common.configure(globals())
device = common.auto_device(device)
if threads:
    torch.set_num_threads(threads)
dtype = common.resolve_dtype(device, dtype)
ctx = common.autocast_ctx(device, dtype)
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

model, ckpt = load_dynamics(dynamics_ckpt, device)
spec, data_dir = ckpt["action_spec"], data_dir or ckpt["data_dir"]
tok_path = tokenizer_path(ckpt, dynamics_ckpt, tokenizer_ckpt)
tok, tok_ckpt = load_tokenizer(tok_path, device)
C, F = context_frames, num_frames
if C < 1 or F < 1 or num_windows < 1:
    raise common.ConfigError(f"context_frames={C}, num_frames={F} and num_windows={num_windows} "
                             "must be >= 1")
if data_dir != "crafter" and not os.path.isdir(data_dir) and [c["classes"] for c in spec] == [17]:
    print(f"the data '{data_dir}' is not here: contexts from real Crafter, "
          "the demonstrator playing")
    data_dir = "crafter"
if data_dir == "crafter":  # seeds from 1,000,000 as every eval (data collection uses small ones)
    eps = [run_episode(1_000_000 + seed + i, "demo", 0.0, C + F, tok_ckpt["image_size"], True)
           for i in range(num_windows)]
    w = {"frames": np.stack([e["frames"][:C + F] for e in eps]),
         "actions": np.stack([e["actions"][:C + F, None] for e in eps])}
else:
    store = FrameStore(data_dir)
    check_action_spec(store.action_spec, spec, data_dir)
    check_tokenizer(tok_ckpt, tok_path, store.image_size, ckpt["latent_shape"])
    w = store.fixed_windows(num_windows, C + F, split, seed)
a = torch.from_numpy(w["actions"])  # (N, C + F, ncomp); new frame C + j follows action C - 1 + j
if actions == "random":
    rng = np.random.default_rng(seed)
    for c, comp in enumerate(spec):
        a[:, C - 1:, c] = torch.from_numpy(rng.integers(0, comp["classes"], (num_windows, F + 1)))
elif actions != "data":
    try:
        seq = [int(v) for v in actions.split(",")]
    except ValueError:
        raise common.ConfigError(f"actions={actions!r}: use 'data', 'random' or a comma-separated "
                                 "list of integers")
    classes = [comp["classes"] for comp in spec]
    if len(classes) != 1 or len(seq) != F or not all(0 <= v < classes[0] for v in seq):
        raise common.ConfigError(f"actions={actions!r}: a list needs a single-component action "
                                 f"spec (this one has {len(classes)}) and num_frames={F} values, "
                                 f"each in 0..classes-1 ({classes})")
    a[:, C - 1:C - 1 + F, 0] = torch.tensor(seq)
frames, a = torch.from_numpy(w["frames"]).to(device), a.to(device)

with torch.no_grad(), ctx:
    z = tok.encode(frames[:, :C]).float()  # (N, C, L, Dz) the real context
    sync()
    t0 = time.time()
    try:
        z_gen = generate(model, z, a, F, sampling_steps, torch.Generator(device).manual_seed(seed))
    except ValueError as e:  # a context longer than the model was trained on, or a K off the grid
        raise common.ConfigError(str(e))
    sync()
    t1 = time.time()
    # (N, C + F, H, W, 3), decoded after the context
    video = tok.decode(torch.cat((z, z_gen), 1)).float()
    sync()
    t2 = time.time()
n = num_windows * F
print(f"generation: {n} frames in {t1 - t0:.2f}s = {n / (t1 - t0):.1f} frames/s "
      f"(K={sampling_steps}, batch {num_windows}, {C} context frames, {device} {dtype}); decode: "
      f"{num_windows * (C + F) / (t2 - t1):.1f} frames/s (context and new frames)")
grid = side_by_side(to_float(frames), video)
paths = ", ".join(write_video(o, grid, fps) for o in out.split(","))
print(f"wrote {paths}: rows = {num_windows} rollouts, real | generated "
      f"(first {C} frames: the context as reconstructed)")
