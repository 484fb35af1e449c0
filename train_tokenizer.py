"""Train the causal tokenizer (§T) on a frame store.

    python train_tokenizer.py --data_dir=data/crafter --out_dir=out/tokenizer
    python train_tokenizer.py config/tokenizer_cpu.py          # a quick CPU run
    torchrun --standalone --nproc_per_node=2 train_tokenizer.py  # DDP
"""
import os
import time

import imageio.v3 as iio
import numpy as np
import torch

import common
from model import linear_flops, matmul_peak_flops
from store import FrameStore
from tokenizer import (LPIPS, VGG16_FILE, Tokenizer, TokenizerLoss, find_lpips_weights, psnr, ssim,
                       to_float)

# ------------------------------------------------------------------------------------------- config
data_dir = "data/crafter"
out_dir = "out/tokenizer"
init_from = "new"  # 'new' (a run from scratch) | 'resume' (from out_dir/ckpt.pt)
eval_interval = 250
eval_windows = 32  # held-out windows for val PSNR / SSIM
log_interval = 10
max_minutes = 0.0  # stop (with a final eval + checkpoint) after this wall-clock budget, a resume's
                   # earlier minutes included; 0 = no limit
# data
batch_size = 16  # windows per step (per process)
seq_len = 4  # frames per window, and so the model's time window (block-causal attention in
             # time; 1 makes the tokenizer per-frame)
grad_accum = 1
# model (image_size comes from the data)
patch_size = 8
num_latents = 16
latent_dim = 32
dim = 256
enc_depth = 4
dec_depth = 4
n_head = 4
n_kv_head = 4
time_every = 4
local_latents = True  # each latent reads its own region's patches (faster learning; False = the
                      # paper's §T)
softcap = 0.0  # > 0: logit soft-capping (explicit attention); 0: fused SDPA
drop_max = 0.9  # MAE drop probability p ~ U(0, drop_max) per frame
# loss: MSE + lpips_weight * LPIPS, its weights found where they are at hand
#   (tokenizer.find_lpips_weights) or named here; MSE alone without them
lpips_vgg_path = ""
lpips_lin_path = ""
lpips_weight = 0.2
lpips_frames = 16
# optimizer
lr = 1e-3
min_lr_frac = 0.1
warmup_iters = 200
max_iters = 20000
weight_decay = 0.05
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
muon = True  # Muon for the transformer's matrices, AdamW for the rest (False = AdamW for all)
# system
device = "auto"
dtype = "auto"  # 'auto' (bf16 where this device runs it fast, else fp32) | 'bfloat16' | 'float32'
compile = True
seed = 1337
threads = 0  # torch CPU threads; 0 = torch's default
# --------------------------------------------------------------------------------------------------
config = common.configure(globals())
common.at_least(config, batch_size=1, seq_len=1, grad_accum=1, max_iters=0, warmup_iters=0,
                eval_interval=1, log_interval=1, weight_decay=0, eval_windows=1, lpips_frames=1)
common.positive(config, "lr")

ddp, rank, local_rank, world, device = common.setup_ddp(common.auto_device(device))
master = rank == 0
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(seed + rank)
rng = np.random.default_rng(seed)  # data: one stream shared by the DDP ranks (store.sample part)
dtype = common.resolve_dtype(device, dtype)
ctx = common.autocast_ctx(device, dtype)

store = FrameStore(data_dir)
model_args = dict(image_size=store.image_size, patch_size=patch_size, num_latents=num_latents,
                  latent_dim=latent_dim, dim=dim, enc_depth=enc_depth, dec_depth=dec_depth,
                  n_head=n_head, n_kv_head=n_kv_head, time_every=time_every, softcap=softcap,
                  time_window=seq_len, local_latents=local_latents)
ckpt_path = os.path.join(out_dir, "ckpt.pt")
common.fresh_run(ckpt_path, init_from)
ckpt, it, minutes_before = None, 0, 0.0
if init_from == "resume":
    ckpt = common.load_checkpoint(ckpt_path, "checkpoint to resume")
    if ckpt["model_args"]["image_size"] != store.image_size:
        raise common.ConfigError(f"{data_dir} has {store.image_size}px frames but the checkpoint "
                                 f"was trained on {ckpt['model_args']['image_size']}px")
    model_args, it = ckpt["model_args"], ckpt["iter"]
elif init_from != "new":
    raise common.ConfigError(f"init_from={init_from!r}: use 'new' or 'resume'")

try:
    model = Tokenizer(**model_args).to(device)
except ValueError as e:  # e.g. latents that do not tile the patch grid
    raise common.ConfigError(str(e))
lpips = None
vgg, lin = ((lpips_vgg_path, lpips_lin_path) if lpips_vgg_path or lpips_lin_path
            else find_lpips_weights())
if lpips_weight > 0 and (lpips_vgg_path or lpips_lin_path or (vgg and lin)):
    lpips = LPIPS(vgg, lin).to(device)  # a configured file that is missing is a clear error
    if master:
        print(f"loss: MSE + {lpips_weight} LPIPS ({vgg}, {lin})")
elif master:
    print("loss: MSE alone" + (f" (LPIPS needs torchvision's VGG16 in {torch.hub.get_dir()}/"
                               f"checkpoints/{VGG16_FILE} and the heads of `pip install lpips`, or "
                               "lpips_vgg_path and lpips_lin_path)" if lpips_weight > 0 else ""))
criterion = TokenizerLoss(lpips, lpips_weight, lpips_frames).to(device)
optimizer = common.make_optimizer(model, lr, weight_decay, (beta1, beta2), device, muon,
                                  dtype=dtype)
if ckpt is not None:
    rng, minutes_before = common.restore_training_state(ckpt, model, optimizer, criterion, rng,
                                                        rank, seed)
    ckpt = None
raw_model = model  # eval and checkpoints; training steps go through the compiled, DDP-wrapped one
model = common.compile_and_wrap(model, compile, ddp, local_rank, device)
tokens_per_frame = raw_model.num_patches + num_latents
flops_per_iter = (3 * linear_flops(raw_model, batch_size * seq_len * tokens_per_frame)
                  * grad_accum)
peak = matmul_peak_flops(device, dtype)
if master:
    print(f"tokenizer: {sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M params, "
          f"{store.image_size}px, latents {num_latents}x{latent_dim}, device {device} {dtype}, "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s")
val = store.fixed_windows(eval_windows, seq_len, "val")


@torch.no_grad()
def evaluate():
    """Val PSNR / SSIM of unmasked recons on held-out episodes; a PNG grid of originals | recons."""
    raw_model.eval()
    ps, ss, recons = [], [], []
    for i in range(0, eval_windows, batch_size):
        x = to_float(torch.from_numpy(val["frames"][i:i + batch_size]), device)
        with ctx:
            r = raw_model.decode(raw_model.encode(x)).float().clamp(0, 1)
        ps.append(psnr(r, x).flatten()), ss.append(ssim(r, x).flatten()), recons.append(r)
    raw_model.train()
    grid = torch.cat((torch.from_numpy(val["frames"][:8]).to(device).float() / 255,
                      torch.cat(recons)[:8]), dim=2)  # (8, T, 2H, W, 3)
    grid = grid.permute(1, 2, 0, 3, 4).flatten(2, 3).flatten(0, 1)  # (T*2H, 8W, 3)
    iio.imwrite(os.path.join(out_dir, "recon.png"),
                (grid.cpu().numpy() * 255).round().astype(np.uint8))
    return torch.cat(ps).mean().item(), torch.cat(ss).mean().item()


def save(it):
    minutes = (time.time() - t_start) / 60
    common.atomic_save({**common.training_state(raw_model, optimizer, criterion, it, rng, minutes),
                        "config": config, "model_args": model_args,
                        "latent_shape": (num_latents, latent_dim), "image_size": store.image_size,
                        "data_dir": os.path.abspath(data_dir), "action_spec": store.action_spec},
                       ckpt_path)


if master:
    os.makedirs(out_dir, exist_ok=True)
t0 = time.time()
t_start = t0 - 60 * minutes_before  # a resumed run's clock goes on from its checkpoint
start_it = it
clock = common.progress_clock(max_iters, start_it, t_start, max_minutes)
log = common.LossLog()
while True:
    # no per-step broadcast without a wall-clock budget
    last = it >= max_iters or (max_minutes > 0 and common.rank0_decides(
        time.time() - t_start > 60 * max_minutes, ddp, device))
    if last and it == start_it and init_from == "resume":
        print(f"{ckpt_path} is already at iter {it} >= max_iters={max_iters}: nothing to do")
        break
    if master and ((it % eval_interval == 0 and (it > start_it or it == 0)) or last):
        log.read(it, ckpt_path)  # (a non-finite loss since last read ends the run before a save)
        val_psnr, val_ssim = evaluate()
        print(f"iter {it}: val_psnr {val_psnr:.2f} dB, val_ssim {val_ssim:.4f}")
        common.log_metrics(out_dir, iter=it, loss=log.last.get("loss"), val_psnr=val_psnr,
                           val_ssim=val_ssim, minutes=(time.time() - t_start) / 60)
        if it > start_it:
            save(it)
    if last:
        break
    for g in optimizer.param_groups:
        g["lr"] = common.lr_at(it, lr, warmup_iters, max_iters, min_lr_frac)
    for micro in range(grad_accum):
        x = to_float(torch.from_numpy(
            store.sample(batch_size, seq_len, "train", rng, (rank, world))["frames"]), device)
        if ddp:
            model.require_backward_grad_sync = micro == grad_accum - 1
        with ctx:
            recon = model(x, drop_max)
        loss, terms = criterion(recon, x)
        (loss / grad_accum).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    it += 1
    log.add(loss=loss, grad=grad_norm, **terms)
    if it % log_interval == 0:
        m = log.read(it, ckpt_path)  # means over the interval; every rank checks its loss
        dt, t0 = (time.time() - t0) / log_interval, time.time()
        if master:
            common.log_metrics(out_dir, iter=it, **m)  # training curves (tools/results.py)
            mfu = flops_per_iter / dt / peak
            print(f"{clock(it)}: loss {m['loss']:.4f} mse {m['mse']:.5f}" +
                  (f" lpips {m['lpips']:.4f}" if "lpips" in m else "") +
                  f" grad {m['grad']:.3f} {dt * 1000:.0f} ms/iter mfu {mfu * 100:.1f}%")
common.ddp_finish(raw_model.parameters(), ddp)
