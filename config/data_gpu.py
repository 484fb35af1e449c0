_minutes = 5  # pipeline.sh's plan: 500k frames on all cores (estimated)
# The offline data of the GPU recipe (docs/gpu.md; ESTIMATED, not yet measured on a GPU): 5x the CPU
# recipe's 100k, so that models 4.5x larger see each frame ~30 times, not 150. frames.npy is 6.1 GB:
# it should fit the page cache.
data_dir = "data/crafter_gpu"
num_frames = 500_000
