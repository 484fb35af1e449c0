"""Multi-process training (torchrun, DDP over gloo on a CPU): the replicas of every trainer stay
identical, and two processes train as one process with twice the batch."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["tokenizer", "dynamics", "finetune"])
def test_ddp_replicas_stay_identical(agent_run, tmp_path, stage):
    """2 processes, 3 steps of each trainer at the test preset: gradients averaged, so both replicas
    hold the same parameters at the end (each trainer checks, and says so in one line)."""
    out, store = agent_run[:2]
    script, inputs = {"tokenizer": ("train_tokenizer.py", [f"--data_dir={store}"]),
                      "dynamics": ("train_dynamics.py", [
                          f"--data_dir={store}", f"--tokenizer_ckpt={out / 'tokenizer/ckpt.pt'}"]),
                      "finetune": ("train_agent.py", [
                          f"--init_ckpt={out / 'dynamics/ckpt.pt'}"])}[stage]
    args = [script, str(out.parent / "config" / f"{stage}_test.py"), *inputs, "--max_iters=3",
            "--eval_interval=3"]
    if stage == "tokenizer":  # no MAE noise, fp32: a step is then a function of the batch alone
        args += ["--drop_max=0.0", "--dtype=float32"]
    run = lambda *cmd: subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True,
                                      text=True, timeout=600,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
    r = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
            f"--out_dir={tmp_path / 'ddp'}", "--threads=1",
            *(["--batch_size=8"] if stage == "tokenizer" else []))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert ("DDP: 2 replicas, largest parameter difference from rank 0: 0\n"
            in r.stdout), r.stdout[-2000:]
    ddp = torch.load(tmp_path / "ddp/ckpt.pt", weights_only=False)
    assert ddp["iter"] == 3
    if stage == "tokenizer":  # 2 x 8 windows of one shared draw = one process's 16
        assert run(*args, f"--out_dir={tmp_path / 'one'}", "--threads=2",
                   "--batch_size=16").returncode == 0
        one = torch.load(tmp_path / "one/ckpt.pt", weights_only=False)["model"]
        diff = max((one[k] - ddp["model"][k]).abs().max().item() for k in one)
        # summation order: ~2e-5 apart; other windows move weights by ~lr = 1e-3 a step
        assert diff < 1e-4, diff
