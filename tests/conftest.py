import os
import runpy
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


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
    run_script("data.py", "--source=crafter", f"--data_dir={d}", "--num_frames=600", "--episode_len=100",
               "--image_size=32", "--num_workers=2")
    return d


def kill_and_rerun(args, trigger, kills, log, seed=0, resume_if=None, timeout=300):
    """`python args...` in a subprocess, SIGKILLed `kills` times, each a random 0-0.5 s after `trigger(t0)` (t0: when
    this run started) turns true
    (polled every 20 ms; so the kills land in steps, evals, checkpoint saves, chunk writes alike), then rerun to
    the end. Reruns add --init_from=resume once `resume_if` (a checkpoint path) exists. The output of every run goes
    to `log`. Returns the number of kills that landed and the last run's output."""
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
                    time.sleep(rnd.uniform(0, 0.5))
                    p.send_signal(signal.SIGKILL)
                    landed += 1
                    break
                time.sleep(0.02)
            rc = p.wait(timeout)
        out = open(log).read()
        if rc == 0:
            return landed, out
        assert rc == -signal.SIGKILL, out[-3000:]
