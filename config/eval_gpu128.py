# time: eval       ~12 min (400 seeds each at 128x128, Crafter on the CPU; estimated)
# config/eval_gpu.py for the 128x128 agent (docs/gpu.md; ESTIMATED): the agents play at their
# checkpoint's frame size.
exec(open("config/eval_gpu.py").read())
