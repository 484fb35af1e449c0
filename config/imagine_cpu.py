# Phase 3 of the agent (§A.2, §A.3) on a 2-core CPU, after config/finetune_cpu.py:
#   python train_agent.py config/imagine_cpu.py
# RL in imagination: the transformer frozen, policy and value heads trained by PMPO and lambda-returns.
phase = "imagine"
init_ckpt = "out/agent_bc_cpu/ckpt.pt"  # from config/finetune_cpu.py
out_dir = "out/agent_rl_cpu"
imagine_batch = 64  # rollouts per step: a rollout is 16 x (4 denoising + 1 append) small forward passes, so on a
                    # CPU its cost is mostly per pass, not per rollout
context_frames = 8
horizon = 16
lr = 3e-4  # at 1e-3 with no value warm-up the policy's entropy fell from 1.04 to 0.22 in 30 steps (docs)
warmup_iters = 20
value_warmup = 40  # the value head alone first: without it 95% of advantages were >= 0 (self-imitation, §P)
beta = 1.0  # §A.3 says 0.3; here 0.3 drifted to a policy worse than BC (2.02% vs 3.29%, Wilcoxon p = 0.06), 1.0
            # stayed beside it (3.66% vs 3.29%, p = 0.42) (docs/experiments.md)
max_iters = 240
eval_interval = 80
log_interval = 10
threads = 2
