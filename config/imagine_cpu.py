# Phase 3 of the agent (§A.2, §A.3) on a 2-core CPU, after config/finetune_cpu.py:
#   python train_agent.py config/imagine_cpu.py
# RL in imagination: the transformer frozen, policy and value heads trained by PMPO and lambda-returns.
phase = "imagine"
init_ckpt = "out/agent_bc_cpu/ckpt.pt"  # from config/finetune_cpu.py
out_dir = "out/agent_rl_cpu"
imagine_batch = 32
context_frames = 8
horizon = 16
lr = 3e-4
max_iters = 800
eval_interval = 200
log_interval = 20
threads = 2
