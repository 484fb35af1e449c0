_minutes = 65  # pipeline.sh's plan: 15000 steps of ~0.24 s at 40% MFU (estimated)
# config/dynamics_gpu.py on the 128x128 tokenizer (docs/gpu.md; ESTIMATED): 4 latents of 16 a
# spatial token, so 16 tokens a frame (22 with registers, tau and action; 14 at 64x64): 1.5x the
# step, 15000 steps instead of 24000.
exec(open("config/dynamics_gpu.py").read())
data_dir = "data/crafter_gpu128"
tokenizer_ckpt = "out/gpu128/tokenizer/ckpt.pt"
out_dir = "out/gpu128/dynamics"
pack = 4
max_iters = 15000
