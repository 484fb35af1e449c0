_minutes = 12  # pipeline.sh's plan: Crafter at 128x128 on the CPU (estimated)
# config/eval_gpu.py for the 128x128 agent (docs/gpu.md; ESTIMATED): the agents play at their
# checkpoint's frame size.
exec(open("config/eval_gpu.py").read())
