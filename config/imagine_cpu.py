# time: imagine    ~8 min (180 steps of 32 rollouts of 32, ~2.6 s: one pass per frame more)
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
lr = 3e-4  # at 1e-3 without a value warm-up the policy's entropy collapsed in 30 steps
#   (docs/experiments.md)
warmup_iters = 20
value_warmup = 0  # the value head starts at the data's returns-to-go (finetune): no warm-up needed
beta = 1.0  # §A.3 says 0.3: on seeds 3,000,000.. RL - BC per seed was +0.07 return (p = 0.98) at
#   0.3 and +0.31 (p = 0.009) at 1.0, on one BC; on 9,000,000.. +0.04 and +0.07 (both p > 0.9; docs)
max_iters = 180
eval_interval = 60
log_interval = 10
compile = True  # the rollout passes at fixed shapes: -22% a step (3.08 -> 2.41 s) after ~40 s of
#   compiling
threads = 2
