"""Multi-process training (torchrun, DDP over gloo on a CPU): the replicas of every trainer stay identical."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["tokenizer", "dynamics", "finetune"])
def test_ddp_replicas_stay_identical(agent_run, tmp_path, stage):
    """2 processes, 3 steps of each trainer at the test preset: gradients averaged, so both replicas hold the same
    parameters at the end (each trainer checks, and says so in one line)."""
    out, store = agent_run[:2]
    script, inputs = {"tokenizer": ("train_tokenizer.py", [f"--data_dir={store}"]),
                      "dynamics": ("train_dynamics.py", [f"--data_dir={store}",
                                                         f"--tokenizer_ckpt={out / 'tokenizer/ckpt.pt'}"]),
                      "finetune": ("train_agent.py", [f"--init_ckpt={out / 'dynamics/ckpt.pt'}"])}[stage]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script,
           str(out.parent / "config" / f"{stage}_test.py"), *inputs, f"--out_dir={tmp_path}", "--max_iters=3",
           "--eval_interval=3", "--threads=1"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "DDP: 2 replicas, largest parameter difference from rank 0: 0\n" in r.stdout, r.stdout[-2000:]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["iter"] == 3
