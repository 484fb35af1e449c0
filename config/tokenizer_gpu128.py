_minutes = 35  # pipeline.sh's plan: 12000 steps of ~0.16 s at 40% MFU (estimated)
# config/tokenizer_gpu.py at 128x128 (docs/gpu.md; ESTIMATED): 16x16 patches keep the 64-patch grid,
# 64 latents of 16 (2x the 64x64 bottleneck) tile it 8x8: 128 tokens a frame instead of 80, ~1.6
# TFLOP a step, peak ~3 GB.
exec(open("config/tokenizer_gpu.py").read())
data_dir = "data/crafter_gpu128"
out_dir = "out/gpu128/tokenizer"
patch_size = 16
num_latents = 64
latent_dim = 16
