"""train_dynamics.py end to end on a bars store (a tiny tokenizer trained on it once, ~10 s):
training, mixed stores, the latent cache, resume, kill -9, sample.py, the label study (results)."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import kill_and_rerun, run_script


def make_bars(path, episodes=40, length=40, size=16, seed=0, labeled=True):
    """A frame store (data.py's format): a bar on a static gradient, in one of 4 rows (its colour
    tells the row); actions 0 stay (p .5), 1 up, 2 down move it (wrapping). Repeating the last frame
    is right half the time.
    labeled=False: the actions are -1 (video)."""
    rng = np.random.default_rng(seed)
    g = np.linspace(0, 0.4, size)
    bg = np.stack([np.add.outer(g, g) / 2, np.add.outer(g, g[::-1]) / 2,
                   np.full((size, size), 0.2)], -1)
    colours, h = [[1, .2, .2], [.2, 1, .2], [.3, .3, 1], [1, 1, .2]], size // 4
    frames, actions, eps = [], [], []
    for _ in range(episodes):
        row, a = rng.integers(0, 4), rng.choice(3, length, p=[0.5, 0.25, 0.25])
        eps.append((len(frames), len(frames) + length))
        for t in range(length):
            f = bg.copy()
            f[row * h:(row + 1) * h] = colours[row]
            frames.append((f * 255).round().astype(np.uint8))
            actions.append([a[t] if t < length - 1 and labeled else -1])
            row = (row + [0, -1, 1][a[t]]) % 4
    os.makedirs(path)
    N, E = len(frames), len(eps)
    for name, arr in [("frames", np.stack(frames)), ("actions", np.array(actions, np.int16)),
                      ("rewards", np.zeros(N, np.float32)), ("episodes", np.array(eps, np.int64)),
                      ("policies", np.zeros(E, np.int8)),
                      ("epsilons", np.full(E, np.nan, np.float32))]:
        np.save(os.path.join(path, f"{name}.npy"), arr)
    json.dump({"source": "bars", "image_size": size, "fps": 10.0, "num_frames": N,
               "num_episodes": E, "labeled_frac": float(labeled),
               "action_spec": [{"name": "action", "classes": 3}]},
              open(os.path.join(path, "meta.json"), "w"))
    return str(path)


def fails(*args):
    """The one-line error (ConfigError's message) a script run with these arguments stops with."""
    with pytest.raises(SystemExit) as e:
        run_script(*args)
    return str(e.value.code)


@pytest.fixture(scope="session")
def bars(tmp_path_factory):
    """A bars store and a tiny tokenizer trained on it (~10 s; it reaches ~45 dB)."""
    tmp = tmp_path_factory.mktemp("bars")
    data = make_bars(tmp / "data")
    # tiny models: fp32 is faster, even with AMX
    run_script("train_tokenizer.py", f"--data_dir={data}", f"--out_dir={tmp / 'tok'}",
               "--patch_size=4", "--num_latents=8", "--local_latents=False", "--latent_dim=8",
               "--dim=64", "--enc_depth=3", "--dec_depth=3", "--n_head=4", "--n_kv_head=2",
               "--time_every=3", "--seq_len=2", "--batch_size=16", "--max_iters=150",
               "--eval_interval=150", "--warmup_iters=20", "--lr=3e-3", "--drop_max=0.0",
               "--eval_windows=16", "--compile=False", "--threads=2", "--dtype=float32")
    return tmp, data, str(tmp / "tok" / "ckpt.pt")


DYN = ["--dim=64", "--depth=4", "--n_head=4", "--n_kv_head=2", "--time_every=2",
       "--num_registers=2", "--compile=False", "--threads=2", "--log_interval=1000"]


def metrics(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


@pytest.mark.slow
def test_training_beats_the_floor(bars):
    """120 steps of the trainer's recipe (teacher forcing, zero_frac, k_max = 4) on the bars:
    rollouts far beat repeating the last frame, and shuffling the actions hurts (~50 dB against a
    floor of ~29, ratio >= 12 over three seeds). An untrained model is far below the floor (~12 dB)
    and ignores actions (ratio ~1)."""
    tmp, data, tok = bars
    out = str(tmp / "dyn_train")
    run_script("train_dynamics.py", f"--data_dir={data}", f"--tokenizer_ckpt={tok}",
               f"--out_dir={out}", *DYN, "--dim=128", "--batch_size=16", "--seq_len=8",
               "--long_every=0", "--single_frame_frac=0.0", "--context_frames=4", "--eval_frames=4",
               "--eval_windows=48", "--max_iters=120", "--eval_interval=120", "--warmup_iters=20",
               "--lr=2e-3", "--min_lr_frac=1.0", "--bootstrap_start=40", "--dtype=float32")
    first, last = metrics(out)[0], metrics(out)[-1]
    assert first["rollout_psnr"] < first["floor_psnr"] - 5 and first["shuffle_ratio"] < 1.1
    assert (last["iter"] == 120 and len(last["rollout_psnr_steps"]) == 4
            and last["ceiling_psnr"] > 40)
    assert last["rollout_psnr"] > last["floor_psnr"] + 10 and last["shuffle_ratio"] > 3, last
    assert os.path.getsize(os.path.join(out, "rollout.mp4")) > 0


def test_mixed_store_trains_as_one(bars, capsys):
    """A labeled store and unlabeled video of the same game, made into one store
    (data.py --source=stores), train as one: the labeled share is reported, and the video's
    episodes feed the base embedding only."""
    tmp, data, tok = bars
    video, mixed = (make_bars(tmp / "bars_video", episodes=10, seed=1, labeled=False),
                    str(tmp / "bars_mixed"))
    run_script("data.py", "--source=stores", f"--src={data},{video}", f"--data_dir={mixed}",
               "--image_size=16")
    from store import FrameStore
    s = FrameStore(mixed)
    assert len(s.episodes) == 50 and (s.actions[s.episodes[40, 0]:] == -1).all()
    assert (s.actions[:s.episodes[40, 0]] == FrameStore(data).actions[:]).all()
    capsys.readouterr()
    args = ["train_dynamics.py", f"--data_dir={mixed}", f"--tokenizer_ckpt={tok}", *DYN,
            "--batch_size=4", "--seq_len=4", "--long_every=0", "--context_frames=2",
            "--eval_frames=2", "--eval_windows=4", "--max_iters=2", "--latent_cache=False",
            "--dtype=float32"]
    run_script(*args, f"--out_dir={tmp / 'dyn_mixed'}")
    # 40 of 50
    assert "80% of episodes labeled (50% of each batch drawn from them)," in capsys.readouterr().out
    # labeled_batch_frac: a quarter of the labels kept, half of every batch (2 of 4 windows) drawn
    # from them
    g = run_script(*args, f"--out_dir={tmp / 'dyn_oversampled'}", "--action_label_frac=0.25",
                   "--labeled_batch_frac=0.5")
    assert "(50% of each batch drawn from them)" in capsys.readouterr().out
    has_labels = np.stack([(g["get_batch"](1)[1] >= 0).any(1)[:, 0].numpy()
                           for _ in range(200)])  # (200, 4)
    # ~1 in 5 keep labels
    assert has_labels[:, :2].all() and 0.05 < has_labels[:, 2:].mean() < 0.4, has_labels.mean(0)
    assert "no training episode is labeled" in fails(*args, "--action_label_frac=0",
                                                     "--unlabeled_video=False")
    g = run_script(*args, f"--out_dir={tmp / 'dyn_labeled_only'}", "--action_label_frac=0.25",
                   "--unlabeled_video=False")
    assert "the unlabeled ones left out" in capsys.readouterr().out
    # every window from a labeled episode
    assert all((g["get_batch"](1)[1] >= 0).any(1).all() for _ in range(50))


def test_latent_cache(bars, capsys):
    """latent_cache: every episode streamed once through the tokenizer, the same latents as encoding
    it whole; reused by the next run while tokenizer and data are the same. (A 1-step tokenizer: its
    latents depend on the frame before, unlike the trained one's, so chunks encoded without the
    cache would differ.)"""
    tmp, data, _ = bars
    tok, out = str(tmp / "tok_1step"), str(tmp / "dyn_cache")
    run_script("train_tokenizer.py", f"--data_dir={data}", f"--out_dir={tok}", "--patch_size=4",
               "--num_latents=8", "--local_latents=False", "--latent_dim=8", "--dim=32",
               "--enc_depth=2", "--dec_depth=2", "--time_every=2", "--seq_len=2", "--batch_size=2",
               "--max_iters=1", "--eval_windows=2", "--compile=False", "--dtype=float32")
    args = ["train_dynamics.py", f"--data_dir={data}", f"--tokenizer_ckpt={tok}/ckpt.pt",
            f"--out_dir={out}", *DYN, "--batch_size=2", "--seq_len=4", "--long_seq_len=8",
            "--context_frames=2", "--eval_frames=2", "--eval_windows=4", "--max_iters=2",
            "--latent_cache=True", "--dtype=float32"]
    capsys.readouterr()
    run_script(*args)
    assert "latent cache: encoded 1600 frames" in capsys.readouterr().out
    from tokenizer import load_tokenizer
    # beside the tokenizer: every dynamics run on it shares the cache
    cache = glob.glob(f"{tok}/latents_*.npy")
    lat, model = np.load(cache[0]), load_tokenizer(f"{tok}/ckpt.pt")[0]
    # (episode, t, ...)
    frames = torch.from_numpy(np.load(os.path.join(data, "frames.npy"))).view(40, 40, 16, 16, 3)
    whole = model.encode(frames)  # every episode in one piece
    # in pieces, no cache
    chunks = torch.cat([model.encode(frames[:, i:i + 8]) for i in range(0, 40, 8)], 1)
    assert lat.dtype == np.float16 and torch.allclose(torch.from_numpy(lat).float(),
                                                      whole.flatten(0, 1), atol=1e-3)
    # latent_norm: 16 windows
    latent_std = torch.load(f"{out}/ckpt.pt", weights_only=False)["model_args"]["latent_std"]
    assert abs(latent_std / lat.astype(np.float32).std() - 1) < 0.15, (latent_std, lat.std())
    # the frame before matters: streaming is needed
    assert not torch.allclose(chunks, whole, atol=1e-2)
    mtime = os.path.getmtime(cache[0])
    run_script(*args, "--max_iters=3", "--init_from=resume")
    run_script(*args, f"--out_dir={out}_2")  # another run on the same tokenizer and data
    assert "latent cache" not in capsys.readouterr().out and os.path.getmtime(cache[0]) == mtime
    # a stale cache is rebuilt, also to evaluate alone: eval reads what training read
    os.remove(cache[0] + ".json")
    run_script(*args, "--init_from=resume", "--eval_only=True")
    assert ("latent cache: encoded 1600 frames" in capsys.readouterr().out
            and os.path.exists(cache[0] + ".json"))


def test_resume_matches_uninterrupted_run(bars, capsys):
    tmp, data, tok = bars
    common = [f"--data_dir={data}", f"--tokenizer_ckpt={tok}", *DYN, "--batch_size=2",
              "--seq_len=4", "--long_seq_len=8", "--long_every=2", "--single_frame_frac=0.3",
              "--bootstrap_start=0", "--bootstrap_frac=0.5", "--teacher_forcing=True",
              "--zero_frac=0.5", "--context_frames=2", "--eval_frames=2", "--eval_windows=4",
              "--eval_interval=100", "--min_lr_frac=1.0", "--warmup_iters=0", "--dtype=float32",
              "--action_label_frac=0.5"]
    full, part = str(tmp / "dyn_full"), str(tmp / "dyn_part")
    run_script("train_dynamics.py", *common, f"--out_dir={full}", "--max_iters=6")
    run_script("train_dynamics.py", *common, f"--out_dir={part}", "--max_iters=3")
    half = torch.load(os.path.join(part, "ckpt.pt"), weights_only=False)
    assert 0 < half["minutes"] < 5
    # as if the first part had run 1000 min
    torch.save({**half, "minutes": 1000.0}, os.path.join(part, "ckpt.pt"))
    run_script("train_dynamics.py", *common, f"--out_dir={part}", "--max_iters=6",
               "--init_from=resume")
    a, b = (torch.load(os.path.join(p, "ckpt.pt"), weights_only=False) for p in (full, part))
    # the resumed run's clock goes on
    assert 1000 < metrics(part)[-1]["minutes"] <= b["minutes"] < 1005
    assert a["iter"] == b["iter"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert metrics(full)[-1]["loss"] == metrics(part)[-1]["loss"]
    assert b["tokenizer"]["path"] == os.path.abspath(tok) and tuple(b["latent_shape"]) == (8, 8)
    # half of 40, fixed
    assert len(b["labeled_episodes"]) == 20 and a["labeled_episodes"] == b["labeled_episodes"]

    # eval_only: the checkpoint evaluated on more windows, logged, and left as it was
    ckpt, mtime = os.path.join(part, "ckpt.pt"), os.path.getmtime(os.path.join(part, "ckpt.pt"))
    run_script("train_dynamics.py", *common, f"--out_dir={part}", "--init_from=resume",
               "--eval_only=True", "--eval_windows=8")
    m = metrics(part)[-1]
    assert (m["iter"] == 6 and m["eval_windows"] == 8 and m["loss"] is None
            and len(m["rollout_psnr_steps"]) == 2)
    assert (m["rollout_psnr"] != metrics(part)[-2]["rollout_psnr"]
            and os.path.getmtime(ckpt) == mtime)
    assert "add --init_from=resume" in fails("train_dynamics.py", *common, f"--out_dir={part}",
                                             "--eval_only=True")

    # bad input, one line each: a data action spec unlike the checkpoint's; a context too long
    other = str(tmp / "data_other_spec")
    shutil.copytree(data, other)
    meta = json.load(open(os.path.join(other, "meta.json")))
    meta["action_spec"][0]["classes"] = 4
    json.dump(meta, open(os.path.join(other, "meta.json"), "w"))
    err = fails("train_dynamics.py", *common, f"--data_dir={other}", f"--out_dir={part}",
                "--init_from=resume")
    assert err == (f"error: {other} has actions [action:4] but the dynamics model was trained on "
                   "[action:3]")
    err = fails("sample.py", f"--dynamics_ckpt={ckpt}", "--context_frames=6", "--num_frames=4")
    assert err.startswith("error: 6 context + 4 new frames is longer than the 8 frames this model "
                          "was trained on")
    assert "must be a multiple of d_min" in fails("sample.py", f"--dynamics_ckpt={ckpt}",
                                                  "--sampling_steps=3")
    assert "and zero_frac must be in [0, 1]" in fails("train_dynamics.py", *common,
                                                      "--zero_frac=1.5")
    assert (fails("train_dynamics.py", *common, "--batch_size=0")
            == "error: batch_size=0 must be >= 1")
    assert (fails("train_tokenizer.py", f"--data_dir={data}", "--grad_accum=0")
            == "error: grad_accum=0 must be >= 1")
    # a dynamics one
    assert fails("train_dynamics.py", *common, f"--tokenizer_ckpt={ckpt}") == \
        f"error: '{ckpt}' is not a tokenizer checkpoint (made by train_tokenizer.py)"
    # a resume keeps the labeled episodes it started with, whatever action_label_frac says now
    capsys.readouterr()
    run_script("train_dynamics.py", *common, f"--out_dir={part}", "--max_iters=7",
               "--init_from=resume", "--action_label_frac=1.0")
    assert "keeps its 20 labeled episodes" in capsys.readouterr().out
    assert torch.load(ckpt, weights_only=False)["labeled_episodes"] == a["labeled_episodes"]
    for bad, msg in (("--k_max=3", "k_max=3 must be a power of 2"),
                     ("--pack=3", "must be a multiple of pack=3"),
                     ("--sampling_steps=3",
                      "sampling_steps=3: 1/sampling_steps must be a multiple of d_min"),
                     ("--dim=62", "dim=62 must be a multiple of n_head=4"),
                     ("--dim=60", "dim=60 must be a multiple of n_head=4 with an even quotient"),
                     ("--depth=1", "no time layer")):  # one line each, before any training
        assert msg in fails("train_dynamics.py", *common, f"--out_dir={tmp / 'bad'}", bad), bad
    assert not os.path.exists(tmp / "bad" / "ckpt.pt")

    # sample.py: a rollout video from dataset contexts with a given action sequence, and frames/s
    out = str(tmp / "sample.gif")
    capsys.readouterr()
    run_script("sample.py", f"--dynamics_ckpt={ckpt}", f"--out={out}", "--context_frames=2",
               "--num_frames=6", "--actions=0,1,1,2,0,2", "--num_windows=2", "--dtype=float32")
    assert "frames/s" in capsys.readouterr().out and os.path.getsize(out) > 0


@pytest.mark.slow
def test_kill9_in_latent_cache_build_and_training_loses_nothing(bars, tmp_path):
    """SIGKILL while the latent cache is being built, then twice in training (steps, evals,
    checkpoint saves); each rerun resumes: the same cache and the same parameters as an
    uninterrupted run (both run as subprocesses)."""
    _, data, tok = bars

    def args(name):  # a copy of the tokenizer per run: a latent cache of its own beside it
        os.makedirs(tmp_path / name)
        shutil.copy(tok, tmp_path / name / "tok.pt")
        return ["train_dynamics.py", f"--data_dir={data}",
                f"--tokenizer_ckpt={tmp_path / name / 'tok.pt'}",
                f"--out_dir={tmp_path / name / 'dyn'}", *DYN, "--log_interval=1", "--batch_size=1",
                "--seq_len=2", "--long_seq_len=8", "--context_frames=2", "--eval_frames=2",
                "--eval_windows=4", "--max_iters=12", "--eval_interval=4", "--latent_cache=True",
                "--dtype=float32"]  # 2 frames a step: a cache of 800 pieces
    kill_and_rerun(args("ref"), lambda t0: False, 0, tmp_path / "ref.txt")
    log, seen = tmp_path / "log.txt", []
    part = lambda suffix: glob.glob(str(tmp_path / "killed" / f"latents_*.npy{suffix}"))

    def trigger(t0):
        if not seen:  # the first kill: while the cache is being written
            return bool(part(".tmp")) and not seen.append("cache")
        if len(seen) == 1:  # the rerun's first look: what the killed run left
            seen.append("cache finished" if part(".json") else "cache cut")
        return "ms/iter" in open(log).read()

    landed, text = kill_and_rerun(args("killed"), trigger, 3, log,
                                  resume_if=str(tmp_path / "killed/dyn/ckpt.pt"), delay=0.05)
    assert (landed == 3 and seen[:2] == ["cache", "cache cut"]
            and ("iter 12/12" in text or "nothing to do" in text))
    assert np.array_equal(np.load(part("")[0]),
                          np.load(glob.glob(str(tmp_path / "ref/latents_*.npy"))[0]))
    a, b = (torch.load(tmp_path / p / "dyn/ckpt.pt", weights_only=False) for p in ("ref", "killed"))
    assert a["iter"] == b["iter"] == 12 and all(torch.equal(a["model"][k], b["model"][k])
                                                for k in a["model"])


def test_label_study(bars, tmp_path, capsys):
    """tools/results.py --label_runs: runs at several action_label_frac scored on the same windows
    -> the study table, each run's share of the full-label gain (1 and 0 at the ends, the middle
    one by hand from its per-episode figures)."""
    _, data, tok = bars
    args = ["train_dynamics.py", f"--data_dir={data}", f"--tokenizer_ckpt={tok}", *DYN,
            "--batch_size=2", "--seq_len=4", "--long_every=0", "--context_frames=2",
            "--eval_frames=2", "--eval_windows=8", "--max_iters=4", "--lr=1e-2", "--warmup_iters=0",
            "--dtype=float32"]
    runs = {f: str(tmp_path / f"f{f}") for f in (1.0, 0.5, 0.0)}
    for f, out in runs.items():
        run_script(*args, f"--out_dir={out}", f"--action_label_frac={f}")
    m = {f: metrics(out)[-1] for f, out in runs.items()}
    assert len(m[1.0]["eval_episodes"]) == 2 and m[1.0]["eval_episodes"] == m[0.0]["eval_episodes"]
    assert 0 < m[1.0]["rollout_ssim"] < 1 and len(m[1.0]["rollout_psnr_episodes"]) == 2
    run_script("tools/results.py", f"--label_runs={','.join(runs.values())}",
               f"--study={tmp_path / 'study'}")
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ") for ln in open(tmp_path / "study.md")
            if ln.count("|") == 12}
    y, lo, hi = (np.array(m[f]["rollout_psnr_episodes"]) for f in (0.5, 0.0, 1.0))
    # episodes weigh by their windows: the shares of the window means
    n = np.array(m[0.5]["eval_episode_windows"])
    assert (n.sum() == 8 and rows["f1.0"][8].startswith("100% ± 0%")
            and rows["f0.0"][8].startswith("0% ± 0%"))
    assert rows["f0.5"][8].startswith(
        f"{(n * (y - lo)).sum() / (n * (hi - lo)).sum():.0%} ±"), rows["f0.5"]
    assert rows["f0.5"][5].startswith(
        f"{m[0.5]['rollout_psnr'] - m[0.5]['floor_psnr']:+.2f} ±"), rows["f0.5"]
    assert "wrote" in capsys.readouterr().out
    err = fails("tools/results.py", f"--label_runs={runs[1.0]},{runs[0.5]}",
                f"--study={tmp_path / 'bad'}")
    assert err.startswith("error: label_runs needs a run at action_label_frac=1.0 and one at 0.0")
