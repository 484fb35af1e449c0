# time: imagine    ~1 min (40 steps of 16 rollouts of 8)
phase = "imagine"
init_ckpt = "out/tiny/agent_bc/ckpt.pt"
out_dir = "out/tiny/agent_rl"
imagine_batch = 16
context_frames = 8
horizon = 8
lr = 3e-4
warmup_iters = 5
value_warmup = 0
beta = 1.0
max_iters = 40
eval_interval = 40
log_interval = 10
threads = 2
