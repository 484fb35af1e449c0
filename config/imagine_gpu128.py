_minutes = 16  # pipeline.sh's plan: 600 steps of ~1.4 s at 40% MFU (estimated)
# config/imagine_gpu.py on the 128x128 agent (docs/gpu.md; ESTIMATED).
exec(open("config/imagine_gpu.py").read())
init_ckpt = "out/gpu128/agent_bc/ckpt.pt"
out_dir = "out/gpu128/agent_rl"
