# time: finetune   ~3 min (400 steps)
phase = "finetune"
init_ckpt = "out/tiny/dynamics/ckpt.pt"
out_dir = "out/tiny/agent_bc"
bc_data = "demo"
batch_size = 16
seq_len = 4
lr = 2e-3
warmup_iters = 20
max_iters = 400
eval_interval = 400
log_interval = 50
threads = 2
