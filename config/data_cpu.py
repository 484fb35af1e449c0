# time: data       ~2 min: 100k Crafter frames from the scripted demonstrator (2 workers)
# The offline data of every CPU recipe: 165 episodes, 80% demonstrator (epsilon ~ U(0, 0.5)), 20% random.
num_frames = 100_000
