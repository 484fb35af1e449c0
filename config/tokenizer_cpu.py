# time: tokenizer  ~18 min (2400 steps of 0.41 s on a 2-core AMX Xeon; ~2.5x longer on AVX2-only CPUs, in fp32)
# The tokenizer (§T) on 2 CPU cores:  python train_tokenizer.py config/tokenizer_cpu.py
out_dir = "out/cpu/tokenizer"
batch_size = 64
seq_len = 1  # single frames: 64 independent frames per step learn faster than 16 clips of 4
#   (docs/experiments.md)
drop_max = 0.0  # no MAE patch dropping: at this budget p ~ U(0, 0.9) costs 3.3 dB (docs); the GPU
#   default keeps 0.9
lr = 2e-3  # with Muon (the trainer's default)
warmup_iters = 100
log_interval = 40  # a line every ~30 s
max_iters = 2400  # val PSNR ~33 dB (docs/experiments.md, "Tokenizer on a CPU")
eval_interval = 200
eval_windows = 256  # single frames: 256 held-out frames per eval
threads = 2
lpips_weight = 0.0  # MSE alone, as measured: VGG16 on 16 frames costs ~0.2 TFLOP a step, the
#   tokenizer's own
