_minutes = 8  # pipeline.sh's plan: 250k frames at 128x128 on all cores (estimated)
# The GPU recipe at 128x128 (docs/gpu.md; ESTIMATED): PRESET=gpu128 bash pipeline.sh. Minecraft's
# inventory and cursor are illegible at 64x64; here 250k frames of 49 KB are 12.3 GB (500k would not
# fit most page caches).
exec(open("config/data_gpu.py").read())
data_dir = "data/crafter_gpu128"
image_size = 128
num_frames = 250_000
