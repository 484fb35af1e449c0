# A quick CPU run of the dynamics model (§D) on a Crafter store, after config/tokenizer_cpu.py:
#   python train_dynamics.py config/dynamics_cpu.py
# 10 minutes on 2 cores (max_minutes); metrics in out/dynamics_cpu/metrics.jsonl, video in rollout.mp4.
data_dir = "data/crafter"
tokenizer_ckpt = "out/tokenizer_cpu/ckpt.pt"  # from config/tokenizer_cpu.py
out_dir = "out/dynamics_cpu"
eval_interval = 250
context_frames = 8
eval_frames = 8
log_interval = 25
max_minutes = 10.0  # of training; the latent cache is built first (~3 min for 100k frames, once)
latent_cache = True  # the frozen encoder would take about half of every step on CPU
batch_size = 8
seq_len = 16
long_seq_len = 32
long_every = 4
dim = 256
depth = 4
lr = 2e-3
warmup_iters = 50
max_iters = 2500  # about 10 minutes of ~0.2 s steps (from the latent cache): the schedule ends with the budget
bootstrap_start = 300
bootstrap_frac = 0.25
compile = False
threads = 2
