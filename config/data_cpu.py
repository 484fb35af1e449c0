_minutes = 4  # pipeline.sh's plan: 100k frames of the screen-only demonstrator, 2 workers
# Offline data of every CPU recipe: ~300 episodes, 80% demonstrator (eps ~ U(0, 0.5)), 20% random.
num_frames = 100_000
