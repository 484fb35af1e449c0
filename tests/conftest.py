import os
import runpy
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # the tooling off the main path (import bench)
# The suite runs on the CPU wherever it runs, its subprocesses too: bit-exact resume needs the CPU's
# deterministic kernels and the 2-process DDP test gloo. On a GPU machine the GPU is checked by
# `python tools/bench.py --what=gpu`.
os.environ["CUDA_VISIBLE_DEVICES"] = ""


def run_script(name, *args):
    """Run one of the project's scripts in this process, as `python name args...` would."""
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        return runpy.run_path(os.path.join(ROOT, name), run_name="__main__")
    finally:
        sys.argv = argv


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A small real Crafter store at 32x32: ~600 frames in episodes of <= 100 steps."""
    d = str(tmp_path_factory.mktemp("store") / "crafter32")
    run_script("data.py", "--source=crafter", f"--data_dir={d}", "--num_frames=600",
               "--episode_len=100", "--image_size=32", "--num_workers=2")
    return d


def kill_and_rerun(args, trigger, kills, log, seed=0, resume_if=None, timeout=300, delay=0.5):
    """`python args...` in a subprocess, SIGKILLed `kills` times, each a random 0-`delay` s after
    `trigger(t0)` (t0: when this run started) turns true (polled every 20 ms; so the kills land in
    steps, evals, checkpoint saves, chunk writes alike), then rerun to the end. Reruns add
    --init_from=resume once `resume_if` (a checkpoint path) exists. The output of every run goes to
    `log`. Returns the number of kills that landed and the last run's output."""
    import random
    import signal
    import subprocess
    import time
    rnd, landed = random.Random(seed), 0
    while True:
        cmd = [sys.executable, os.path.join(ROOT, args[0]), *args[1:]]
        if resume_if and os.path.exists(resume_if):
            cmd.append("--init_from=resume")
        with open(log, "w") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
            t0 = time.time()
            while p.poll() is None and landed < kills and time.time() - t0 < timeout:
                if trigger(t0):
                    time.sleep(rnd.uniform(0, delay))
                    p.send_signal(signal.SIGKILL)
                    landed += 1
                    break
                time.sleep(0.02)
            rc = p.wait(timeout)
        out = open(log).read()
        if rc == 0:
            return landed, out
        assert rc == -signal.SIGKILL, out[-3000:]


def steps_of(text, steps=3):
    """The time of `steps` training steps in a run's output (its median "ms/iter"), in s: a kill's
    delay that leaves the run room on a fast CPU and still lands in steps, evals and checkpoint
    saves on a slow one."""
    ms = sorted(int(m) for m in re.findall(r"(\d+) ms/iter", text))
    return steps * ms[len(ms) // 2] / 1000


TEST_PRESET = {
    "data": dict(image_size=32, num_frames=600, episode_len=100),  # as the tiny store was built
    "tokenizer": dict(patch_size=4, num_latents=16, latent_dim=8, dim=64, enc_depth=2, dec_depth=2,
                      time_every=2, seq_len=1, batch_size=16, max_iters=20, eval_interval=20,
                      eval_windows=16),
    "dynamics": dict(dim=64, depth=2, time_every=2, num_registers=2, batch_size=4, seq_len=8,
                     long_seq_len=16, context_frames=4, eval_frames=4, eval_windows=4, max_iters=10,
                     eval_interval=10, latent_cache=True, teacher_forcing=True, k_max=4,
                     zero_frac=0.75, bootstrap_start=0),
    "finetune": dict(phase="finetune", batch_size=4, seq_len=8, mtp=2, eval_interval=4,
                     log_interval=2, warmup_iters=0, min_lr_frac=1.0, max_iters=4),
    "imagine": dict(phase="imagine", imagine_batch=4, horizon=4, context_frames=4, context_first=20,
                    eval_interval=3, log_interval=1, value_lr=1e-3, max_iters=3),
    "eval": dict(episodes=3, baseline_episodes=2, max_steps=12, workers=1),
}


def run_pipeline(config, store, out, **env):
    """bash pipeline.sh with the test preset (and env, e.g. LABEL_STUDY): its stdout (it fails the
    test if the job fails)."""
    env = {**os.environ, **env, "CONFIG": str(config), "PRESET": "test", "DATA": store,
           "OUT": str(out),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    r = subprocess.run(["bash", os.path.join(ROOT, "pipeline.sh")], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def write_test_preset(folder, **changes):
    """folder/config/<stage>_test.py for every stage: TEST_PRESET, each stage's keys updated by
    changes[stage]."""
    (folder / "config").mkdir()
    for stage, keys in TEST_PRESET.items():
        system = {} if stage == "data" else dict(
            threads=2, **({} if stage in ("finetune", "imagine", "eval") else dict(compile=False)))
        text = "_minutes = 0.5  # a few seconds (the plan sums these)\n"
        text += "".join(f"{k} = {v!r}\n"
                        for k, v in {**keys, **system, **changes.get(stage, {})}.items())
        (folder / "config" / f"{stage}_test.py").write_text(text)
    return folder / "config"


@pytest.fixture(scope="session")
def agent_run(tiny_store, tmp_path_factory):
    """The main job (pipeline.sh) end to end at test sizes: data (the tiny store, already built) ->
    tokenizer -> dynamics -> rollout video -> finetune -> imagine -> real-game eval ->
    results.md."""
    tmp = tmp_path_factory.mktemp("agent")
    stdout = run_pipeline(write_test_preset(tmp), tiny_store, tmp / "out")
    ft = ["train_agent.py", str(tmp / "config/finetune_test.py"),
          f"--init_ckpt={tmp / 'out/dynamics/ckpt.pt'}"]
    im = ["train_agent.py", str(tmp / "config/imagine_test.py"),
          f"--init_ckpt={tmp / 'out/agent_bc/ckpt.pt'}"]
    return tmp / "out", tiny_store, ft, im, stdout
