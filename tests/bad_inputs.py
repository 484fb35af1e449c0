"""The bad-input audit: every script run as a user would, with one bad input each, in a subprocess.

    python tests/bad_inputs.py [--data=data/crafter_tiny --ckpts=out/tiny]
                               (a store and a main-job folder)

A case passes when the run exits non-zero with one line starting 'error: ' on stderr, no traceback,
and nothing written (its out_dir / data_dir does not exist afterwards, and the inputs are
unchanged). Prints a markdown table and the totals; exits 1 if any case fails. Not part of the suite
(about 2 s per case): the suite tests the same classes in-process, this runs the real command lines.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
DATA, CK = (os.path.abspath(args.get(k, v))
            for k, v in (("data", "data/crafter_tiny"), ("ckpts", "out/tiny")))
TOK, DYN, BC, RL = (f"{CK}/{s}/ckpt.pt" for s in ("tokenizer", "dynamics", "agent_bc", "agent_rl"))
tmp = tempfile.mkdtemp()
OUT = f"{tmp}/out"  # every case writes (or must not write) here


def store_copy(name, edit):
    """A copy of DATA with one thing broken by edit(folder)."""
    d = f"{tmp}/{name}"
    shutil.copytree(DATA, d)
    edit(d)
    return d


def broken(name, edit, cmd):
    """cmd run on a copy of DATA broken by edit(folder)."""
    d = store_copy(name, edit)
    return [f"--data_dir={d}" if a == f"--data_dir={DATA}" else a for a in cmd]


def truncate(path, keep=0.5):
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def meta_edit(**kw):
    def edit(d):
        m = json.load(open(f"{d}/meta.json"))
        json.dump({**m, **kw}, open(f"{d}/meta.json", "w"))
    return edit


def no_rewards(d):
    import numpy as np
    np.save(f"{d}/rewards.npy", np.zeros_like(np.load(f"{d}/rewards.npy")))


def unlabeled(d):
    import numpy as np
    np.save(f"{d}/actions.npy", np.full_like(np.load(f"{d}/actions.npy"), -1))


def text_file(name, text="not a checkpoint"):
    open(f"{tmp}/{name}", "w").write(text + "\n")
    return f"{tmp}/{name}"


def cut_ckpt():
    shutil.copy(DYN, f"{tmp}/cut.pt")
    truncate(f"{tmp}/cut.pt")
    return f"{tmp}/cut.pt"


tok_, dyn_, ag_ = ["train_tokenizer.py", f"--data_dir={DATA}", f"--out_dir={OUT}"], \
    ["train_dynamics.py", f"--data_dir={DATA}", f"--tokenizer_ckpt={TOK}", f"--out_dir={OUT}"], \
    ["train_agent.py", f"--data_dir={DATA}", f"--out_dir={OUT}"]
ft_, im_ = ([*ag_, "--phase=finetune", f"--init_ckpt={DYN}"],
            [*ag_, "--phase=imagine", f"--init_ckpt={BC}"])
ev_ = ["eval_agent.py", f"--bc_ckpt={BC}", f"--rl_ckpt={RL}", f"--out={OUT}/eval.json",
       "--episodes=2", "--max_steps=10", "--baselines=False"]
sm_ = ["sample.py", f"--dynamics_ckpt={DYN}", f"--out={OUT}/r.mp4"]
CASES = [  # (class, what, command line)
    ("config", "unknown key", [*tok_, "--lerning_rate=1"]),
    ("config", "wrong type", [*dyn_, "--batch_size=four"]),
    ("config", "flag without =", [*ft_, "--max_iters"]),
    ("config", "config file missing", [*tok_, "config/nope.py"]),
    ("config", "config file with a typo'd key",
     ["train_tokenizer.py", text_file("bad_config.py", "lerning_rate = 1")]),
    ("range", "batch_size=0", [*tok_, "--batch_size=0"]),
    ("range", "dim not divisible by n_head", [*tok_, "--dim=60", "--n_head=8"]),
    ("range", "n_head not divisible by n_kv_head", [*dyn_, "--n_head=4", "--n_kv_head=3"]),
    ("range", "depth < time_every (no time layer)", [*dyn_, "--depth=2", "--time_every=4"]),
    ("range", "k_max not a power of 2", [*dyn_, "--k_max=3"]),
    ("range", "pack=3", [*dyn_, "--pack=3"]),
    ("range", "sampling_steps not a power of 2", [*dyn_, "--sampling_steps=3"]),
    ("range", "sampling_steps > k_max", [*dyn_, "--k_max=1"]),
    ("range", "seq_len longer than every episode", [*dyn_, "--seq_len=5000"]),
    ("range", "negative lr", [*ft_, "--lr=-1"]),
    ("range", "horizon=0", [*im_, "--horizon=0"]),
    ("range", "phase=pretrain", [*ag_, "--phase=pretrain", f"--init_ckpt={DYN}"]),
    ("range", "init_from=restart", [*tok_, "--init_from=restart"]),
    ("range", "dtype=float16", [*tok_, "--dtype=float16"]),
    ("range", "device=tpu", [*tok_, "--device=tpu"]),
    ("range", "sample num_frames=0", [*sm_, "--num_frames=0"]),
    ("range", "sample context_frames=0", [*sm_, "--context_frames=0"]),
    ("range", "sample actions of the wrong count", [*sm_, "--actions=0,1"]),
    ("range", "eval episodes=0", [*ev_, "--episodes=0"]),
    ("range", "eval temperature=-1", [*ev_, "--temperature=-1"]),
    ("range", "eval dtype=float16", [*ev_, "--dtype=float16"]),
    ("range", "eval out not a .json file", [*ev_, f"--out={OUT}/eval"]),
    ("range", "data num_frames=0",
     ["data.py", "--source=crafter", f"--data_dir={OUT}", "--num_frames=0"]),
    ("range", "data source=atari", ["data.py", "--source=atari", f"--data_dir={OUT}"]),
    ("range", "sample split=test", [*sm_, "--split=test"]),
    ("range", "bench what=everything", ["tools/bench.py", "--what=everything"]),
    ("range", "game episodes=0", ["game.py", "--episodes=0"]),
    ("range", "data image_size=0",
     ["data.py", "--source=crafter", f"--data_dir={OUT}", "--image_size=0"]),
    ("path", "results.py of a folder with no runs", ["tools/results.py", f"--out_dir={OUT}"]),
    ("range", "play keymap of an unknown key",
     ["play.py", f"--ckpt={DYN}", "--keymap=ctrl:action=1"]),
    ("path", "data_dir missing", [*tok_[:1], f"--data_dir={tmp}/nope", f"--out_dir={OUT}"]),
    ("path", "tokenizer_ckpt missing",
     [*dyn_[:2], f"--tokenizer_ckpt={tmp}/nope.pt", f"--out_dir={OUT}"]),
    ("path", "resume with no checkpoint", [*tok_, "--init_from=resume"]),
    ("path", "LPIPS weights missing",
     [*tok_, f"--lpips_vgg_path={tmp}/vgg.pth", f"--lpips_lin_path={tmp}/l.pth"]),
    ("path", "video source folder missing",
     ["data.py", "--source=video", f"--src={tmp}/novideos", f"--data_dir={OUT}"]),
    ("path", "eval rl_ckpt missing", [*ev_, f"--rl_ckpt={tmp}/nope.pt"]),
    ("checkpoint", "tokenizer where dynamics expected (finetune)",
     [*ag_, "--phase=finetune", f"--init_ckpt={TOK}"]),
    ("checkpoint", "dynamics where tokenizer expected",
     [*dyn_[:2], f"--tokenizer_ckpt={DYN}", f"--out_dir={OUT}"]),
    ("checkpoint", "dynamics where agent expected (imagine: no prior)",
     [*ag_, "--phase=imagine", f"--init_ckpt={DYN}"]),
    ("checkpoint", "dynamics where agent expected (eval)", [*ev_, f"--rl_ckpt={DYN}"]),
    ("checkpoint", "tokenizer where dynamics expected (sample)",
     ["sample.py", f"--dynamics_ckpt={TOK}", f"--out={OUT}/r.mp4"]),
    ("checkpoint", "a text file as a checkpoint", [*ft_[:-1], f"--init_ckpt={text_file('a.pt')}"]),
    ("checkpoint", "a checkpoint cut in half", [*ft_[:-1], f"--init_ckpt={cut_ckpt()}"]),
    ("checkpoint", "a text file as tokenizer (play)", ["play.py", f"--ckpt={text_file('b.pt')}"]),
    ("store", "frames.npy truncated", broken("trunc", lambda d: truncate(f"{d}/frames.npy"), tok_)),
    ("store", "meta.json num_frames edited", broken("meta", meta_edit(num_frames=7), tok_)),
    ("store", "meta.json missing", broken("nometa", lambda d: os.remove(f"{d}/meta.json"), tok_)),
    ("store", "action spec differs from the checkpoint's",
     broken("spec", meta_edit(action_spec=[{"name": "action", "classes": 5}]), ft_)),
    ("store", "no rewards (finetune)", broken("norew", no_rewards, ft_)),
    ("store", "no labeled episodes (finetune)", broken("nolab", unlabeled, ft_)),
    ("store", "stores of different frame sizes merged",
     ["data.py", "--source=stores", f"--data_dir={OUT}",
      f"--src={DATA},{store_copy('size2', meta_edit(image_size=16))}"]),
    ("store", "frame size differs from the tokenizer's",
     broken("size", meta_edit(image_size=16), dyn_)),
]


def digest(paths):
    """sha1 over the names and bytes of these files and of every file under these folders."""
    h = hashlib.sha1()
    for p in paths:
        for f in (sorted(os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs)
                  if os.path.isdir(p) else [p]):
            h.update(f.encode() + open(f, "rb").read())
    return h.hexdigest()


def main():
    inputs = [DATA, TOK, DYN, BC, RL]
    before = digest(inputs)
    rows, ok = [], 0
    for cls, what, cmd in CASES:
        r = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "SDL_VIDEODRIVER": "dummy"})
        err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        one_line = (len(err) >= 1 and err[-1].startswith("error: ")
                    and not any("Traceback" in ln for ln in err))
        written = os.path.exists(OUT)
        passed = r.returncode != 0 and one_line and not written
        ok += passed
        msg = (err or r.stdout.strip().splitlines() or ["(nothing)"])[-1]
        rows.append(f"| {cls} | {what} | `{cmd[0]}` | {'ok' if passed else 'FAIL'} | "
                    f"{msg[:150].replace('|', '/')} |")
        shutil.rmtree(OUT, ignore_errors=True)
    unchanged = digest(inputs) == before
    print("| class | bad input | script | result | what it printed (last stderr line) |\n"
          "|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{ok} of {len(CASES)} cases: one line, no traceback, nothing written; "
          f"inputs unchanged: {unchanged}")
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok == len(CASES) and unchanged else 1)


if __name__ == "__main__":
    main()
