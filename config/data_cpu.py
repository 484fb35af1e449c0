# time: data       ~4 min: 100k Crafter frames from the screen-only demonstrator (2 workers)
# Offline data of every CPU recipe: ~300 episodes, 80% demonstrator (eps ~ U(0, 0.5)), 20% random.
num_frames = 100_000
