_minutes = 1  # pipeline.sh's plan: 20k frames of the screen-only demonstrator
# The tiny preset (PRESET=tiny bash pipeline.sh): every stage end to end in ~15 min on 2 CPU cores.
num_frames = 20_000
