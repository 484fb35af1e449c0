# time: data       ~40 s: 20k Crafter frames from the scripted demonstrator
# The tiny preset (PRESET=tiny bash pipeline.sh): every stage end to end in ~15 minutes on 2 CPU cores.
num_frames = 20_000
