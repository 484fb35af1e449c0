"""Train the dynamics model (§D) with shortcut forcing on the latents of a frozen tokenizer.

    python train_dynamics.py --data_dir=data/crafter --tokenizer_ckpt=out/tokenizer/ckpt.pt --out_dir=out/dynamics
    python train_dynamics.py config/dynamics_cpu.py           # a quick CPU run
    torchrun --standalone --nproc_per_node=2 train_dynamics.py  # DDP

Each batch is encoded on the fly by the frozen tokenizer (no_grad), or read from a latent cache
(latent_cache: every episode streamed once through the tokenizer; on CPU the encoder costs about as
much as the dynamics step).
Steps alternate short windows (seq_len), long ones (every long_every-th step, long_seq_len) and
single frames (single_frame_frac of steps), each with batch_size * seq_len frames.
Eval (§E): C real context frames + true actions -> F generated frames; PSNR per step vs the floor
(the last context frame, as the tokenizer reconstructs it) and the ceiling (the tokenizer's
reconstruction of the true future), the action-shuffle ratio, and out_dir/rollout.mp4
(real | generated).
"""
import os
import time

import numpy as np
import torch

import common
from dynamics import (Dynamics, ShortcutLoss, check_action_spec, check_tokenizer, generate,
                      side_by_side, write_video)
from model import linear_flops, matmul_peak_flops
from store import FrameStore
from tokenizer import cached_latents, load_tokenizer, psnr, ssim, to_float

# ------------------------------------------------------------------------------------------- config
data_dir = "data/crafter"
tokenizer_ckpt = "out/tokenizer/ckpt.pt"
out_dir = "out/dynamics"
init_from = "new"  # 'new' (a run from scratch) | 'resume' (from out_dir/ckpt.pt)
eval_only = False  # with init_from='resume': evaluate the checkpoint (e.g. on more eval_windows)
                   # and stop
eval_interval = 500
eval_windows = 256  # held-out windows of context_frames + eval_frames: fewer give a noisy gap to
                    # the floor (docs/experiments.md)
context_frames = 8  # C real frames given to the model
eval_frames = 8  # F frames it generates
sampling_steps = 4  # sampling steps per frame
video_windows = 4  # rows of rollout.mp4
log_interval = 10
max_minutes = 0.0  # stop (with a final eval + checkpoint) after this wall-clock budget, a resume's
                   # earlier minutes included; 0 = no limit
# data: every step holds batch_size * seq_len frames
batch_size = 4  # windows per short step (per process)
seq_len = 16
long_seq_len = 64  # each long_every-th step: windows this long (fewer); also the model's max_frames
long_every = 4  # 0 = never
single_frame_frac = 0.0  # share of steps made of single frames (T=1), to sharpen per-frame quality
                         # (§D uses some)
action_label_frac = 1.0  # share of training episodes whose actions are kept; the others train as
                         # unlabeled video
labeled_batch_frac = 0.5  # share of each batch's windows drawn from the labeled episodes where only
                          # some are labeled (0: uniform over all; 0.5 gains far more: docs)
unlabeled_video = True  # the unlabeled episodes train too, as video; False: the labeled ones alone
                        # (§E's ablation)
latent_norm = True  # divide latents by their std (measured at the start) so that they match the
                    # unit noise (§D)
latent_cache = False  # encode the store once into latents_*.npy beside the tokenizer checkpoint
                      # (shared by every dynamics run on that tokenizer and data; rebuilt when
                      # either changes)
grad_accum = 1
# model (latent shape and action spec come from the tokenizer and the data)
pack = 2  # consecutive latents per spatial token (§D: 16x32 -> 8x64)
dim = 256
depth = 4
n_head = 4
n_kv_head = 4
time_every = 2  # every 2nd layer attends over time (with 4 layers and 4, only the last one would)
num_registers = 4
softcap = 0.0
k_max = 4  # d_min = 1 / k_max: the grid of K = 4 sampling; d = 1/2 and 1 still train by bootstrap
# shortcut forcing
bootstrap_frac = 0.25  # share of clips whose frames draw d from the full set (the others: flow at
                       # d_min)
bootstrap_start = 1000  # flow-only warm-up iterations
context_frac = 0.0  # share of frames fed as generation feeds context (tau = 0.9), not a drawn tau
ramp = False  # True: §D's ramp weight w(tau) = 0.9 tau + 0.1 on each frame's loss; False: w = 1
              # (better on CPU)
zero_frac = 0.75  # share of frames at tau = 0 (pure noise, d as drawn): predicted from past alone
teacher_forcing = True  # every frame a target reading the clip's past at tau = 0.9, as generation
                        # feeds it (the clip fed twice, as context and targets: 2x tokens per step)
# optimizer
lr = 1e-3
min_lr_frac = 0.1
warmup_iters = 200
max_iters = 20000
weight_decay = 0.05
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
muon = False  # Muon for the transformer's matrices, AdamW for the rest
# system
device = "auto"
dtype = "auto"  # 'auto' (bf16 where this device runs it fast, else fp32) | 'bfloat16' | 'float32'
compile = True
seed = 1337
threads = 0  # torch CPU threads; 0 = torch's default
# --------------------------------------------------------------------------------------------------
config = common.configure(globals())
common.at_least(config, batch_size=1, seq_len=2, long_seq_len=2, long_every=0, grad_accum=1,
                max_iters=0, warmup_iters=0, bootstrap_start=0, eval_interval=1, weight_decay=0,
                log_interval=1, eval_windows=1, video_windows=1)
common.positive(config, "lr")

ddp, rank, local_rank, world, device = common.setup_ddp(common.auto_device(device))
master = rank == 0
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(seed + rank)
rng = np.random.default_rng(seed)  # data: one stream shared by the DDP ranks (store.sample part)
dtype = common.resolve_dtype(device, dtype)
ctx = common.autocast_ctx(device, dtype)
# before a resumed RNG state is restored: it draws random numbers
peak = matmul_peak_flops(device, dtype)
C, F = context_frames, eval_frames
max_frames = max(seq_len, long_seq_len if long_every else 1)
if C < 1 or F < 1 or C + F > max_frames:
    raise common.ConfigError(f"context_frames + eval_frames = {C + F} must be in 2..{max_frames} "
                             f"(the longest window trained on)")
if not all(0 <= f <= 1 for f in (action_label_frac, labeled_batch_frac, bootstrap_frac,
                                 single_frame_frac, context_frac, zero_frac)):
    raise common.ConfigError("action_label_frac, labeled_batch_frac, bootstrap_frac, "
                             "single_frame_frac, context_frac and zero_frac must be in [0, 1]")

store = FrameStore(data_dir)
ckpt_path = os.path.join(out_dir, "ckpt.pt")
ckpt, it, minutes_before = None, 0, 0.0
if init_from == "resume":
    ckpt = common.load_checkpoint(ckpt_path, "checkpoint to resume")
    check_action_spec(store.action_spec, ckpt["action_spec"], data_dir)
    it = ckpt["iter"]
elif init_from != "new":
    raise common.ConfigError(f"init_from={init_from!r}: use 'new' or 'resume'")
if eval_only and init_from != "resume":
    raise common.ConfigError("eval_only=True evaluates a checkpoint: add --init_from=resume")
common.fresh_run(ckpt_path, init_from)
tok, tok_ckpt = load_tokenizer(tokenizer_ckpt, device)
check_tokenizer(tok_ckpt, tokenizer_ckpt, store.image_size, ckpt and ckpt["latent_shape"])
L, Dz = tok_ckpt["latent_shape"]
# a deterministic subset of episodes keeps its action labels; the rest are unlabeled video (-1)
E = len(store.episodes)
labeled = np.zeros(E, bool)
if ckpt is not None:  # a resumed run keeps the subset it started with, whatever the config says now
    labeled[ckpt["labeled_episodes"]] = True
    if master and labeled.sum() != round(action_label_frac * E):
        print(f"warning: action_label_frac={action_label_frac} is not the checkpoint's; the "
              f"resumed run keeps its {labeled.sum()} labeled episodes")
else:
    labeled[np.random.default_rng(seed).permutation(E)[:round(action_label_frac * E)]] = True
keeps_labels = labeled & store.labeled_episodes()  # (E,) video episodes have none to keep
train_labels = keeps_labels[store.episode_ids("train")]
if not unlabeled_video and not train_labels.any():
    raise common.ConfigError("unlabeled_video=False: no training episode is labeled")
# all or none: uniform (the share in effect, saved; `config` keeps the one asked for)
labeled_batch_frac = labeled_batch_frac if unlabeled_video and 0 < train_labels.mean() < 1 else 0.0
frames_per_step = batch_size * seq_len
val = store.fixed_windows(eval_windows, C + F, "val")


latents = None
if latent_cache:  # training and eval read it
    if master:  # built once, when missing or stale
        cached_latents(tok, tokenizer_ckpt, store, data_dir, device, ctx, frames_per_step)
    if ddp:
        torch.distributed.barrier()
    latents = cached_latents(tok, tokenizer_ckpt, store, data_dir, device, ctx)


def chunked(f, x, n=32):
    """f over x (N, ...) in pieces of n: evals of many windows fit in memory."""
    return torch.cat([f(x[i:i + n]) for i in range(0, len(x), n)])


def latents_of(b):
    """Latents (n, T, L, Dz) of windows b (store.sample, store.fixed_windows): from the cache (each
    episode streamed through the tokenizer, early frames seeing their true past), or encoded window
    by window. Training and eval read the same source."""
    if latents is not None:
        return torch.from_numpy(latents[b["start"][:, None]
                                        + np.arange(b["actions"].shape[1])]).to(device).float()
    with torch.no_grad(), ctx:
        return chunked(lambda f: tok.encode(f).float(), torch.from_numpy(b["frames"]).to(device))


def latent_std():
    """The std of the tokenizer's latents over 16 training windows. The tanh latents are narrower
    than the unit noise z0 (std ~0.45 on Crafter): unscaled, context at tau = 0.9 would be far
    noisier than 10% (docs/experiments.md)."""
    return latents_of(store.sample(16, seq_len, "train", np.random.default_rng(seed))).std().item()


def get_batch(it):
    """Latents (n, T, L, Dz) of frames_per_step frames, and their actions (n, T, ncomp)."""
    T = (1 if rng.random() < single_frame_frac
         else long_seq_len if long_every and it % long_every == long_every - 1 else seq_len)
    B = max(1, frames_per_step // T)
    # labeled episodes' windows, then uniform over all
    n = round(labeled_batch_frac * B) if unlabeled_video else B
    b = store.sample_parts([(n, keeps_labels, 0), (B - n, None, 0)], T, "train", rng, (rank, world))
    # hidden labels -> unlabeled
    actions = np.where(labeled[b["episode"]][:, None, None], b["actions"], -1)
    return latents_of(b), torch.from_numpy(actions).to(device)


model_args = ckpt["model_args"] if ckpt else dict(
    num_latents=L, latent_dim=Dz, pack=pack,
    action_classes=[c["classes"] for c in store.action_spec], dim=dim, depth=depth, n_head=n_head,
    n_kv_head=n_kv_head, time_every=time_every, num_registers=num_registers, k_max=k_max,
    softcap=softcap, max_frames=max_frames, latent_std=latent_std() if latent_norm else 1.0)
try:
    model = Dynamics(**model_args).to(device)
except ValueError as e:  # k_max or pack off their grids, no time layer, heads not dividing dim
    raise common.ConfigError(str(e))
if model.k_max % sampling_steps:
    raise common.ConfigError(f"sampling_steps={sampling_steps}: 1/sampling_steps must be a "
                             f"multiple of d_min = 1/{model.k_max}; use one of "
                             f"{', '.join(str(2 ** i) for i in range(model.k_max.bit_length()))}")
criterion = ShortcutLoss(model.k_max, context_frac, ramp, teacher_forcing, zero_frac).to(device)
optimizer = common.make_optimizer(model, lr, weight_decay, (beta1, beta2), device, muon,
                                  dtype=dtype)
if ckpt is not None:
    rng, minutes_before = common.restore_training_state(ckpt, model, optimizer, criterion, rng,
                                                        rank, seed)
    ckpt = None
raw_model = model  # eval and checkpoints; training steps go through the compiled, DDP-wrapped one
model = common.compile_and_wrap(model, compile, ddp, local_rank, device)
tokens_per_frame = model_args["num_latents"] // model_args["pack"] + model_args["num_registers"] + 2
if master:
    print(f"dynamics: {sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M params, latents "
          f"{L}x{Dz} -> {tokens_per_frame} tokens/frame, "
          f"{keeps_labels.mean():.0%} of episodes labeled"
          f"{f' ({labeled_batch_frac:.0%} of each batch drawn from them)' if labeled_batch_frac else ''}"
          f"{'' if unlabeled_video else ', the unlabeled ones left out'}, "
          f"device {device} {dtype}, matmul peak {peak / 1e12:.2f} TFLOP/s")


@torch.no_grad()
def evaluate():
    """Held-out rollouts (§E): metrics, and rollout.mp4 of real | (context recon, generated)."""
    raw_model.eval()
    frames, actions = (torch.from_numpy(val["frames"]).to(device),
                       torch.from_numpy(val["actions"]).to(device))
    x = to_float(frames[:, C:])  # (N, F, H, W, 3) the real future
    gen = {}
    decode = lambda z: chunked(lambda y: tok.decode(y).float(), z)
    z = latents_of(val)  # (N, C + F, L, Dz)
    with ctx:
        recon = decode(z)  # the tokenizer's reconstruction of every frame
        for name, a in (("true", actions), ("shuffled", actions.roll(len(actions) // 2, 0))):
            g = torch.Generator(device).manual_seed(seed)  # the same noise for both
            z_gen = generate(raw_model, z[:, :C], a, F, sampling_steps, g)
            gen[name] = decode(torch.cat((z[:, :C], z_gen), 1))[:, C:]  # decoded after the context
    raw_model.train()
    mse = lambda y: ((y.clamp(0, 1) - x) ** 2).mean().item()
    floor = recon[:, C - 1:C].expand_as(x)
    steps = {"rollout": psnr(gen["true"], x), "floor": psnr(floor, x),
             "ceiling": psnr(recon[:, C:], x)}  # (N, F)
    ssims = {"rollout": ssim(gen["true"], x), "floor": ssim(floor, x)}  # (N, F)
    n = video_windows
    video = side_by_side(to_float(frames[:n]), torch.cat((recon[:n, :C], gen["true"][:n]), 1))
    write_video(os.path.join(out_dir, "rollout.mp4"), video)
    # windows of one episode overlap: error bars count episodes (clusters of windows), not windows
    episodes, which, counts = np.unique(val["episode"], return_inverse=True, return_counts=True)
    by_episode = lambda v: np.round(
        np.bincount(which, v.mean(1).cpu().double().numpy()) / counts, 4).tolist()
    return {**{f"{k}_psnr": v.mean().item() for k, v in steps.items()},
            **{f"{k}_ssim": v.mean().item() for k, v in ssims.items()},
            "shuffle_ratio": mse(gen["shuffled"]) / mse(gen["true"]),
            **{f"{k}_psnr_steps": [round(p, 3) for p in v.mean(0).tolist()]
               for k, v in steps.items()},
            "eval_episodes": episodes.tolist(), "eval_episode_windows": counts.tolist(),
            **{f"{k}_{what}_episodes": by_episode(v[k])
               for what, v in (("psnr", steps), ("ssim", ssims)) for k in ("rollout", "floor")}}


def save(it):
    minutes = (time.time() - t_start) / 60
    common.atomic_save({
        **common.training_state(raw_model, optimizer, criterion, it, rng, minutes),
        "config": config, "model_args": model_args, "latent_shape": (L, Dz),
        "image_size": store.image_size, "action_spec": store.action_spec,
        "data_dir": os.path.abspath(data_dir), "labeled_episodes": np.flatnonzero(labeled).tolist(),
        "labeled_batch_frac": labeled_batch_frac,
        "tokenizer": {"path": os.path.abspath(tokenizer_ckpt), "config": tok_ckpt["config"],
                      "model_args": tok_ckpt["model_args"], "latent_shape": (L, Dz)}}, ckpt_path)


if master:
    os.makedirs(out_dir, exist_ok=True)
t0 = time.time()
t_start = t0 - 60 * minutes_before  # a resumed run's clock goes on from its checkpoint
start_it, t_enc = it, 0.0
clock = common.progress_clock(max_iters, start_it, t_start, max_minutes)
log = common.LossLog()
while True:
    # no per-step broadcast without a wall-clock budget
    last = eval_only or it >= max_iters or (max_minutes > 0 and common.rank0_decides(
        time.time() - t_start > 60 * max_minutes, ddp, device))
    if last and it == start_it and init_from == "resume" and not eval_only:
        print(f"{ckpt_path} is already at iter {it} >= max_iters={max_iters}: nothing to do")
        break
    if master and ((it % eval_interval == 0 and (it > start_it or it == 0)) or last):
        log.read(it, ckpt_path)  # (a non-finite loss since last read ends the run before a save)
        m = evaluate()
        print(f"iter {it}: rollout {m['rollout_psnr']:.2f} dB (SSIM {m['rollout_ssim']:.3f}), "
              f"floor {m['floor_psnr']:.2f} ({m['floor_ssim']:.3f}), "
              f"ceiling {m['ceiling_psnr']:.2f}, shuffle_ratio {m['shuffle_ratio']:.3f}")
        common.log_metrics(out_dir, iter=it, loss=log.last.get("loss"), **m,
                           eval_windows=eval_windows, sampling_steps=sampling_steps,
                           eval_frames=eval_frames, minutes=(time.time() - t_start) / 60)
        if it > start_it:
            save(it)
    if last:
        break
    for g in optimizer.param_groups:
        g["lr"] = common.lr_at(it, lr, warmup_iters, max_iters, min_lr_frac)
    frac = bootstrap_frac if it >= bootstrap_start else 0.0
    for micro in range(grad_accum):
        t1 = time.time()
        z1, actions = get_batch(it)
        t_enc += time.time() - t1
        if ddp:
            model.require_backward_grad_sync = micro == grad_accum - 1
        with ctx:
            loss, terms = criterion(model, z1 / raw_model.latent_std, actions, frac)
        (loss / grad_accum).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    it += 1
    log.add(loss=loss, grad=grad_norm, **terms, boot_share=terms["n_boot"] / len(z1))
    if it % log_interval == 0:
        m = log.read(it, ckpt_path)  # means over the interval; every rank checks its loss
        dt, t0 = (time.time() - t0) / log_interval, time.time()
        if master:
            common.log_metrics(out_dir, iter=it, **m)  # training curves (tools/results.py)
            passes = 3 + 2 * m["boot_share"]  # forward + backward, and the two teacher forwards
            # the clip twice: context and targets
            passes *= 2 if teacher_forcing and z1.shape[1] > 1 else 1
            mfu = (passes * linear_flops(raw_model, frames_per_step * tokens_per_frame)
                   * grad_accum / dt / peak)
            print(f"{clock(it)}: loss {m['loss']:.4f} flow {m['flow']:.5f} boot {m['boot']:.5f} "
                  f"grad {m['grad']:.3f} {dt * 1000:.0f} ms/iter "
                  f"(encode {t_enc / log_interval * 1000:.0f}) mfu {mfu * 100:.1f}%")
        t_enc = 0.0
common.ddp_finish(raw_model.parameters(), ddp)
