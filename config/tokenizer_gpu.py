_minutes = 25  # pipeline.sh's plan: 12000 steps of ~0.10 s at 40% MFU (estimated)
# The tokenizer (§T) for one 12 GB RTX 3060 (docs/gpu.md; ESTIMATED): config/tokenizer_cpu.py's
# recipe (single frames, no MAE, Muon) at 14.4M parameters (width 384) and 2x the batch: ~1.0 TFLOP
# a step, peak ~2 GB.
data_dir = "data/crafter_gpu"
out_dir = "out/gpu/tokenizer"
batch_size = 128
seq_len = 1  # single frames learn faster than clips (docs/experiments.md)
dim = 384
n_head = 6
n_kv_head = 6
enc_depth = 4
dec_depth = 4
drop_max = 0.0  # no MAE, as the CPU recipe
lr = 2e-3  # the CPU recipe's Muon lr, untested at this width: try 1e-3, 3e-3 for 1000 steps
warmup_iters = 300
max_iters = 12000
eval_interval = 1000
eval_windows = 256
log_interval = 100
