# time: eval       ~7 min (random, demonstrator, data mix, BC, RL on 50 seeds; argmax rows on 25)
# Real Crafter (§E), after config/imagine_cpu.py:
#   python eval_agent.py config/eval_cpu.py --bc_ckpt=out/agent_bc_cpu/ckpt.pt --rl_ckpt=out/agent_rl_cpu/ckpt.pt
episodes = 50  # paired seeds: enough for the sign and Wilcoxon tests to see a difference of ~1 unlock per episode
max_steps = 1000
argmax_episodes = 25
threads = 2
