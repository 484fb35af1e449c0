_minutes = 8  # pipeline.sh's plan: 180 steps of ~2.6 s (AMX Xeon)
# Phase 3 of the agent (§A.2, §A.3) on 2 CPU cores, after config/finetune_cpu.py:
#   python train_agent.py config/imagine_cpu.py
# RL in imagination: transformer frozen, policy and value heads trained by PMPO and lambda-returns.
phase = "imagine"
init_ckpt = "out/cpu/agent_bc/ckpt.pt"  # from config/finetune_cpu.py
out_dir = "out/cpu/agent_rl"
imagine_batch = 32  # a rollout is 32 x (4 denoising + 2 appends: world, agent) small passes: on a
#   CPU the cost is per pass
context_frames = 8
horizon = 32  # the world model and the agent each read a sliding window: any horizon fits
lr = 3e-4  # at 1e-3 the policy's entropy collapsed (docs/experiments.md)
warmup_iters = 20
value_warmup = 0  # the value head starts at the data's returns-to-go (finetune): no warm-up needed
beta = 1.0  # §A.3 says 0.3: here a freer policy scored below BC in the real game (docs)
max_iters = 180
eval_interval = 60
log_interval = 10
compile = True  # the rollout passes at fixed shapes: faster steps after ~40 s of compiling
threads = 2
