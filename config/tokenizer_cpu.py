_minutes = 18  # pipeline.sh's plan: 2400 steps of ~0.4 s (AMX Xeon; AVX2 ~2.5x)
# The tokenizer (§T) on 2 CPU cores:  python train_tokenizer.py config/tokenizer_cpu.py
out_dir = "out/cpu/tokenizer"
batch_size = 64
seq_len = 1  # single frames: 64 independent frames per step learn faster than 16 clips of 4
#   (docs/experiments.md)
drop_max = 0.0  # no MAE patch dropping: it costs dB at this budget (docs); the trainer's default
#   keeps 0.9
lr = 2e-3  # with Muon (the trainer's default)
warmup_iters = 100
log_interval = 40  # a line every ~30 s
max_iters = 2400
eval_interval = 200
eval_windows = 256  # single frames: 256 held-out frames per eval
threads = 2
lpips_weight = 0.0  # MSE alone: LPIPS's VGG16 would cost as much as the tokenizer's own step
