_minutes = 2  # pipeline.sh's plan: every policy on 10 seeds of at most 300 steps
episodes = 10
max_steps = 300
argmax = False
threads = 2
