# time: tokenizer  ~2 min (600 steps, a half-width tokenizer)
out_dir = "out/tiny/tokenizer"
batch_size = 32
seq_len = 1  # single frames learn fastest (as config/tokenizer_cpu.py)
dim = 128
enc_depth = 2
dec_depth = 2
drop_max = 0.0
lr = 3e-3
warmup_iters = 50
max_iters = 600
eval_interval = 300
eval_windows = 64
compile = False  # compiling would take most of this budget
threads = 2
lpips_weight = 0.0  # MSE alone, as config/tokenizer_cpu.py
