_minutes = 30  # pipeline.sh's plan: 5000 steps of ~0.34 s at 40% MFU (estimated)
# config/finetune_gpu.py on the 128x128 dynamics model (docs/gpu.md; ESTIMATED): 1.5x the tokens a
# frame; peak ~6 GB.
exec(open("config/finetune_gpu.py").read())
init_ckpt = "out/gpu128/dynamics/ckpt.pt"
out_dir = "out/gpu128/agent_bc"
