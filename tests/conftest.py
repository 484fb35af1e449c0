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
