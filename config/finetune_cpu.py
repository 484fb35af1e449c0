_minutes = 33  # pipeline.sh's plan: 9000 steps of ~0.2 s (AMX Xeon)
# Phase 2 of the agent (§A.1) on 2 CPU cores, after config/dynamics_cpu.py:
#   python train_agent.py config/finetune_cpu.py
# Agent tokens with BC and reward heads on the dynamics checkpoint, the dynamics loss going on.
phase = "finetune"
init_ckpt = "out/cpu/dynamics/ckpt.pt"  # from config/dynamics_cpu.py
out_dir = "out/cpu/agent_bc"
bc_data = "demo"  # clone the demonstrator's episodes (the paper clones task-relevant data); the
#   world model sees all
batch_size = 32  # clips, each fed twice by the dynamics loss (teacher forcing) and once with agent
#   tokens
seq_len = 2  # the agent's window, also in imagination and play: 2 frames clone better than 4, and
#   4 far better than 16 (docs)
lr = 1e-3  # Muon on the transformer's matrices (as the dynamics recipe), AdamW on the new heads
max_iters = 9000  # with 2 frames, 6000 steps play far better than 3000, and 9000 survive longer
#   than 6000 (docs/experiments.md)
eval_interval = 3000
log_interval = 50
compile = True  # the dynamics model's passes: faster steps after ~1 minute of compiling
threads = 2
