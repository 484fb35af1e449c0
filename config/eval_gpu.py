_minutes = 10  # pipeline.sh's plan: Crafter on the CPU sets the pace (estimated)
# Real Crafter (§E) after config/imagine_gpu.py, as config/eval_cpu.py (the same seeds: the rows
# compare).
episodes = 400
baseline_episodes = 50
argmax_episodes = 25
max_steps = 1000
seed = 6_000_000
lockstep = 100  # 100 episodes per batched policy call
workers = 4  # processes for the scripted baselines
