# The tokenizer on a 2-core CPU in 30 minutes (the quality target of the tokenizer issue).
# python train_tokenizer.py config/tokenizer_cpu.py
out_dir = "out/tokenizer_cpu"
batch_size = 16
seq_len = 4
lr = 2e-3
warmup_iters = 100
max_iters = 2800  # about 30 minutes of 0.6 s steps: the cosine schedule ends with the budget
max_minutes = 30.0
eval_interval = 200
threads = 2
