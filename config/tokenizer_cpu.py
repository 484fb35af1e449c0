# The tokenizer on a 2-core CPU in 30 minutes (the quality target of the tokenizer issue).
# python train_tokenizer.py config/tokenizer_cpu.py
# Measured choices (README, "Tokenizer on a CPU"): single-frame windows (64 independent frames per step learn
# faster than 16 clips of 4), Muon, region-local latents, and no MAE patch dropping: at equal 5-minute budgets
# p ~ U(0, 0.9) costs 3.3 dB, a regularizer this budget cannot afford (the GPU defaults keep the paper's 0.9).
out_dir = "out/tokenizer_cpu"
batch_size = 64
seq_len = 1
drop_max = 0.0
lr = 2e-3
warmup_iters = 100
max_iters = 2400  # about 28 minutes of 0.68 s steps: the cosine schedule ends with the budget
max_minutes = 30.0
eval_interval = 200
eval_windows = 256  # single frames: 256 held-out frames per eval
threads = 2
