_minutes = 27  # pipeline.sh's plan: latent cache ~3 min, 8000 steps of ~0.14 s (AMX Xeon)
# The dynamics model (§D) on 2 CPU cores, after config/tokenizer_cpu.py:
#   python train_dynamics.py config/dynamics_cpu.py
data_dir = "data/crafter"
tokenizer_ckpt = "out/cpu/tokenizer/ckpt.pt"  # from config/tokenizer_cpu.py
out_dir = "out/cpu/dynamics"
eval_interval = 4000  # an eval of 256 windows takes minutes on a CPU
context_frames = 8
eval_frames = 8
log_interval = 100
latent_cache = True  # the frozen encoder would take about half of every step on CPU
batch_size = 4  # clips, each fed twice (teacher forcing): 128 frames per forward
seq_len = 16
long_seq_len = 32
long_every = 4
dim = 256
depth = 4
time_every = 2  # two of the four layers attend over time (with 4, only the last one does)
muon = True  # learns faster than AdamW in the same minutes (docs)
lr = 2e-3
warmup_iters = 50
max_iters = 8000
bootstrap_start = 300
k_max = 4  # the grid of K = 4 sampling; d = 1/2 and 1 still train by bootstrap (§D.1)
teacher_forcing = True  # every frame a target, reading a past fed as generation feeds it (docs)
zero_frac = 0.75  # most targets at tau = 0, predicted from the past alone (docs)
single_frame_frac = 0.0
ramp = False  # w = 1, not §D's 0.9 tau + 0.1 (docs)
bootstrap_frac = 0.25
compile = True  # faster steps after ~2 minutes of compiling
threads = 2
