_minutes = 20  # pipeline.sh's plan: 5000 steps of ~0.22 s at 40% MFU (estimated)
# Phase 2 of the agent (§A.1) for one RTX 3060 (docs/gpu.md; ESTIMATED), after
# config/dynamics_gpu.py: config/finetune_cpu.py with 8x the frames a step and 5000 steps; peak ~3.5
# GB.
phase = "finetune"
init_ckpt = "out/gpu/dynamics/ckpt.pt"
out_dir = "out/gpu/agent_bc"
bc_data = "demo"
batch_size = 256  # clips of 2: 512 frames a step
seq_len = 2  # the agent's window: 2 frames clone better than 4, 4 far better than 16 (docs)
lr = 1e-3
warmup_iters = 100
max_iters = 5000
eval_interval = 1000
log_interval = 100
compile = True
