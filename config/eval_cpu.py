_minutes = 20  # pipeline.sh's plan: BC and RL on 400 seeds, the baselines on 50
# Real Crafter (§E), after config/imagine_cpu.py:
#   python eval_agent.py config/eval_cpu.py --bc_ckpt=out/cpu/agent_bc/ckpt.pt \
#     --rl_ckpt=out/cpu/agent_rl/ckpt.pt
episodes = 400  # paired seeds for RL against BC: on 50, the seeds' noise is as large as the effects
#   (docs/experiments.md)
baseline_episodes = 50  # the scripted baselines need no test: the demonstrator's long episodes
#   cost the most
max_steps = 1000
seed = 20_000_000  # a range no run or choice has used yet (13,000,000.. was the last main job's)
argmax_episodes = 25
threads = 2
