# time: eval       ~2 min (every policy on 10 seeds of at most 300 steps, no argmax rows)
episodes = 10
max_steps = 300
argmax = False
threads = 2
