_minutes = 12  # pipeline.sh's plan: 600 steps of ~1 s (estimated)
# Phase 3 (§A.2, §A.3) for one RTX 3060 (docs/gpu.md; ESTIMATED), after config/finetune_gpu.py:
# config/imagine_cpu.py with 4x the rollouts and 3.3x the steps: 2.5M imagined transitions against
# 184k.
phase = "imagine"
init_ckpt = "out/gpu/agent_bc/ckpt.pt"
out_dir = "out/gpu/agent_rl"
imagine_batch = 128
context_frames = 8
horizon = 32
lr = 3e-4
warmup_iters = 20
beta = 1.0  # as the CPU recipe (docs/experiments.md)
max_iters = 600
eval_interval = 200
log_interval = 10
compile = True
