# time: eval       ~20 min (BC and RL on 400 seeds, 9 min each; random, demonstrator, data mix on 50; argmax rows on 25)
# Real Crafter (§E), after config/imagine_cpu.py:
#   python eval_agent.py config/eval_cpu.py --bc_ckpt=out/cpu/agent_bc/ckpt.pt \
#     --rl_ckpt=out/cpu/agent_rl/ckpt.pt
episodes = 400  # paired seeds for RL against BC: per seed their returns differ by ~2.7, so 50 seeds
# see a mean difference only above ~0.8 and 400 above ~0.27; two RL runs were +0.67 and +0.41
# (docs/experiments.md)
baseline_episodes = 50  # the scripted baselines need no test: the demonstrator's long episodes
#   cost the most
max_steps = 1000
seed = 13_000_000  # seeds 13,000,000..: a range no run or choice has used (the demonstrator's
#   design, beta, the agent's window, its finetuning steps and its sampling temperature were chosen
#   on 1,000,000.. to 12,000,000..)
argmax_episodes = 25
threads = 2
