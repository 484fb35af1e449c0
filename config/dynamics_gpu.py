_minutes = 70  # pipeline.sh's plan: 24000 steps of ~0.16 s at 40% MFU (estimated)
# The dynamics model (§D) for one RTX 3060 (docs/gpu.md; ESTIMATED): config/dynamics_cpu.py's
# recipe at 14.2M parameters (width 384, depth 8) instead of 3.2M, clips of 32 frames (every 4th
# step 64), 512 frames a step instead of 64, 24000 steps instead of 8000: ~1.6 TFLOP a step, ~80x
# the CPU recipe's compute; peak ~3 GB.
data_dir = "data/crafter_gpu"
tokenizer_ckpt = "out/gpu/tokenizer/ckpt.pt"
out_dir = "out/gpu/dynamics"
eval_interval = 2500
context_frames = 8  # 8 + 8 as the CPU recipe, so that the figures compare
eval_frames = 8
log_interval = 100
latent_cache = True
batch_size = 16
seq_len = 32
long_seq_len = 64
long_every = 4
dim = 384
depth = 8
n_head = 6
n_kv_head = 6
time_every = 2
muon = True
lr = 2e-3  # untested at this size: a 2000-step sweep of 1e-3 / 2e-3 / 3e-3 costs ~16 min
warmup_iters = 300
max_iters = 24000  # 3x the CPU recipe's (its curve still rose at 12000); 12000 halves the stage
bootstrap_start = 1000
k_max = 4
teacher_forcing = True
zero_frac = 0.75
single_frame_frac = 0.0
ramp = False
bootstrap_frac = 0.25
compile = True
