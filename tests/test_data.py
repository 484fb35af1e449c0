"""data.py, store.py, sources.py: the store, Crafter (resume), MineRL/VPT/video, bad input."""
import json
import os
import shutil
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import sources  # noqa: E402
from common import ConfigError, configure  # noqa: E402
from store import FrameStore  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(*args):
    """Run `python data.py ARGS` in-process (same configurator), return meta."""
    return data.run(configure(dict(data.DEFAULTS), list(args)))


def fails(match, *args):
    with pytest.raises(ConfigError) as e:
        build(*args)
    assert match in str(e.value.code), e.value.code
    assert str(e.value.code).startswith("error: ") and "\n" not in str(e.value.code)
    return str(e.value.code)


def nothing_left(d):
    return not any(os.path.exists(str(d) + x) for x in ("", ".partial", ".tmp"))


# --- frame index <-> image (survives mp4 compression and resizing): left half (i % 16), right half
# (i // 16)

def frame_for(i, h, w):
    f = np.zeros((h, w, 3), np.uint8)
    f[:, : w // 2], f[:, w // 2:] = (i % 16) * 16 + 8, (i // 16) * 16 + 8
    return f


def index_of(frames):  # (n, S, S, 3) -> (n,)
    S = frames.shape[1]
    lo = frames[:, S // 4: 3 * S // 4, S // 8: 3 * S // 8].mean((1, 2, 3))
    hi = frames[:, S // 4: 3 * S // 4, 5 * S // 8: 7 * S // 8].mean((1, 2, 3))
    return np.round((lo - 8) / 16).astype(int) + 16 * np.round((hi - 8) / 16).astype(int)


def write_video(path, idx, h, w, fps=20):
    frames = [frame_for(i, h, w) for i in idx]
    if str(path).endswith(".gif"):
        imageio.mimwrite(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1,
                         **({"codec": "libvpx-vp9"} if str(path).endswith(".webm") else {}))


# --------------------------------------------------------------------------------------------------
# Crafter

CRAFTER = ["--source=crafter", "--num_frames=300", "--episode_len=40", "--image_size=32",
           "--seed=3"]


@pytest.fixture(scope="module")
def crafter_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("c") / "crafter"
    meta = build(*CRAFTER, f"--data_dir={d}", "--num_workers=2")
    assert nothing_left(str(d) + "_") and not os.path.exists(str(d) + ".partial")
    return FrameStore(str(d)), meta


def check_store(s):
    N, E = len(s), len(s.episodes)
    assert s.frames.dtype == np.uint8 and s.frames.shape == (N, s.image_size, s.image_size, 3)
    assert isinstance(s.frames, np.memmap)
    assert (s.actions.shape == (N, len(s.action_spec)) and s.rewards.shape == (N,)
            and s.rewards.dtype == np.float32)
    ep = s.episodes
    assert (ep[0, 0] == 0 and ep[-1, 1] == N and (ep[1:, 0] == ep[:-1, 1]).all()
            and (ep[:, 1] > ep[:, 0]).all())
    assert (s.actions[ep[:, 1] - 1] == -1).all() and (s.rewards[ep[:, 1] - 1] == 0).all()
    for c, comp in enumerate(s.action_spec):
        assert s.actions[:, c].min() >= -1 and s.actions[:, c].max() < comp["classes"]
    assert s.meta["num_frames"] == N and s.meta["num_episodes"] == E


def test_crafter_store(crafter_store):
    import demonstrator
    import game
    s, meta = crafter_store
    check_store(s)
    N, ep = len(s), s.episodes
    # the first K episodes, no more than needed
    assert N >= 300 and N - (ep[-1, 1] - ep[-1, 0]) < 300
    assert (s.image_size == 32 and s.action_spec[0]["name"] == "action"
            and s.action_spec[0]["classes"] == 17)
    last = np.zeros(N, bool)
    last[ep[:, 1] - 1] = True
    assert (s.actions[~last] >= 0).all() and meta["labeled_frac"] == 1.0
    assert (ep[:, 1] - ep[:, 0] <= 41).all()
    # policies/epsilons: drawn from the episode seed, agree with meta
    for k in range(len(ep)):
        rng = np.random.default_rng([3 + k, 2])
        demo = rng.random() >= 0.2
        assert s.policies[k] == int(demo)
        assert np.isclose(s.epsilons[k], rng.uniform(0.0, 0.5)) if demo else np.isnan(s.epsilons[k])
        # the defaults give the demonstrator's own data mix
        policy, eps = game.sample_skill(3 + k)
        assert (s.policies[k] == int(policy == "demo")
                and (policy == "random" or np.isclose(s.epsilons[k], eps)))
    c = meta["crafter"]
    assert (c["episodes_demo"] == (s.policies == 1).sum()
            and c["episodes_random"] == (s.policies == 0).sum())
    assert np.isclose(c["epsilon_mean"], s.epsilons[s.policies == 1].mean())
    assert meta["episode_names"] == [f"seed{3 + k}" for k in range(len(ep))]
    # the agent's fields: slips only where the demonstrator slipped (random play: every step),
    # events that are Crafter's achievements (its first of each is an unlock, paid by the reward), a
    # death where an episode ended early
    assert (meta["events"] == demonstrator.ACHIEVEMENTS and s.events.shape == (N, 22)
            and c["view"] is True)
    lens = ep[:, 1] - ep[:, 0]
    for k, (a, b) in enumerate(ep):
        assert (s.slips[a:b - 1] == 1).all() if s.policies[k] == 0 else (s.slips[a:b] >= 0).all()
        first = [np.flatnonzero(s.events[a:b, j])[:1] for j in range(22)]
        unlock = np.unique(np.concatenate(first)).astype(int)
        assert ((s.rewards[a + unlock] > 0.25).all()
                and ((s.rewards[a:b] > 0.25).sum() == len(unlock)))
        assert s.deaths[k] == (lens[k] < 41)
    assert s.slips[s.policies[np.searchsorted(ep[:, 1], np.arange(N), "right")] == 1].mean() < 0.5
    s.agent_fields()  # a store of today has them


def test_store_before_the_agent_fields(crafter_store, tmp_path):
    """A store made before slips/events/deaths still serves the tokenizer and the dynamics model;
    the agent's trainer gets one line that says how to rebuild it."""
    old = tmp_path / "old"
    shutil.copytree(os.path.dirname(crafter_store[0].frames.filename), old)
    for name in ("slips", "events", "deaths"):
        os.remove(old / f"{name}.npy")
    s = FrameStore(str(old))
    assert s.slips is None and len(s) == len(crafter_store[0])
    with pytest.raises(ConfigError,
                       match="predates slips/events/deaths .* rebuild it: python data.py"):
        s.agent_fields()


def test_windows_never_cross_episodes(crafter_store):
    s, _ = crafter_store
    for T in (1, 8, 20):
        b = s.sample(100, T, "all", rng=T)
        assert b["frames"].shape == (100, T, 32, 32, 3) and b["frames"].dtype == np.uint8
        assert b["actions"].shape == (100, T, 1) and b["actions"].dtype == np.int64
        assert b["rewards"].shape == (100, T) and b["episode"].dtype == np.int64
        lo, hi = s.episodes[b["episode"], 0], s.episodes[b["episode"], 1]
        assert (b["start"] >= lo).all() and (b["start"] + T <= hi).all()
        i = b["start"][:, None] + np.arange(T)
        assert ((b["frames"] == s.frames[i]).all()
                and (b["actions"][..., 0] == s.actions[i, 0]).all())
    train = set(s.sample(200, 4, "train", rng=0)["episode"].tolist())
    assert train <= set(s.episode_ids("train").tolist())
    with pytest.raises(ConfigError, match="split 'val' has only"):
        s.sample(10 ** 6, 8, "val")
    rng = np.random.default_rng(0)  # windows that start in the first 3 frames of an episode:
    draws = [s.sample(20, 4, "all", rng, first=3) for _ in range(100)]
    early = {k: np.concatenate([d[k] for d in draws]) for k in ("start", "episode")}
    offset = early["start"] - s.episodes[early["episode"], 0]
    assert set(offset.tolist()) == {0, 1, 2} and abs((offset == 0).mean() - 1 / 3) < 0.05
    # (up to) 3 windows each: all drawn
    long_enough = np.flatnonzero(s.episodes[:, 1] - s.episodes[:, 0] >= 4)
    assert set(early["episode"].tolist()) == set(long_enough.tolist())
    # only these episodes' windows (labeled_batch_frac draws this way)
    among = np.zeros(len(s.episodes), bool)
    among[long_enough[::2]] = True
    drawn = s.sample(100, 4, "all", rng, among=among)["episode"]
    assert set(drawn.tolist()) == set(long_enough[::2].tolist())
    early = np.concatenate([s.sample(10, 4, "all", rng, first=3, among=among)["episode"]
                            for _ in range(10)])
    assert set(early.tolist()) == set(long_enough[::2].tolist())
    # windows ending in the last 2
    late = [s.sample(4, 4, "all", rng, among=among, last=2) for _ in range(50)]
    late = {k: np.concatenate([d[k] for d in late]) for k in ("start", "episode")}
    to_end = s.episodes[late["episode"], 1] - (late["start"] + 4)  # frames after each window
    assert (set(to_end.tolist()) == {0, 1}
            and set(late["episode"].tolist()) == set(long_enough[::2].tolist()))


def test_split_and_fixed_windows(crafter_store):
    s, _ = crafter_store
    tr, va, al = s.episode_ids("train"), s.episode_ids("val"), s.episode_ids("all")
    assert len(va) >= 1 and len(np.intersect1d(tr, va)) == 0 and (np.union1d(tr, va) == al).all()
    s2 = FrameStore(os.path.dirname(s.frames.filename))
    assert (s2.episode_ids("val") == va).all()
    a, b = s.fixed_windows(4, 8, "val"), s2.fixed_windows(4, 8, "val")
    assert all((a[k] == b[k]).all() for k in a) and set(a["episode"].tolist()) <= set(va.tolist())
    assert not (s.fixed_windows(4, 8, "val", seed=1)["start"] == a["start"]).all()


def test_crafter_resume_keeps_chunks(crafter_store, tmp_path, monkeypatch):
    """Kill mid-way (a failing episode), delete a chunk, rerun: finished chunks are reused as they
    are."""
    import game
    real, calls = game.run_episode, []

    def flaky(*a):
        calls.append(a[0])
        if len(calls) > 3:
            raise RuntimeError("killed")
        return real(*a)
    monkeypatch.setattr(game, "run_episode", flaky)
    d = str(tmp_path / "c")
    with pytest.raises(RuntimeError, match="killed"):
        build(*CRAFTER, f"--data_dir={d}", "--num_workers=1")
    assert not os.path.exists(d) and not os.path.exists(d + ".tmp")
    chunks = sorted(os.listdir(d + ".partial"))
    assert chunks == ["ep_0000000.npz", "ep_0000001.npz", "ep_0000002.npz", "settings.json"]
    kept = {k: dict(np.load(os.path.join(d + ".partial", f"ep_000000{k}.npz"))) for k in (0, 2)}
    os.remove(os.path.join(d + ".partial", "ep_0000001.npz"))
    monkeypatch.setattr(game, "run_episode", real)
    build(*CRAFTER, f"--data_dir={d}", "--num_workers=2")
    assert not os.path.exists(d + ".partial")
    s, ref = FrameStore(d), crafter_store[0]
    check_store(s)
    for k, ch in kept.items():
        a, b = s.episodes[k]
        assert (s.frames[a:b] == ch["frames"]).all() and (s.actions[a:b] == ch["actions"]).all()
    assert (s.policies[:3] == ref.policies[:3]).all()
    np.testing.assert_array_equal(s.epsilons[:3], ref.epsilons[:3])
    # a different setting on top of the leftover chunks is refused
    os.makedirs(d + "2.partial")
    json.dump({}, open(d + "2.partial/settings.json", "w"))
    fails("other settings", *CRAFTER, f"--data_dir={d}2")


def test_deterministic_resume_identical(tmp_path, monkeypatch):
    """With a deterministic episode function, interrupted + resumed == uninterrupted, for 1 or 2
    workers."""
    import game

    def fake(seed, policy, eps, max_steps, size, view, agent):
        n = 5 + seed % 7
        rng = np.random.default_rng(seed)
        a = rng.integers(0, 17, n + 1)
        a[-1] = -1
        return {"frames": rng.integers(0, 255, (n + 1, size, size, 3), dtype=np.uint8),
                "actions": a, "labels": np.full(n + 1, -1),
                "rewards": np.append(rng.random(n), 0).astype(np.float32),
                "slips": rng.random(n + 1) < 0.2, "events": rng.random((n + 1, 22)) < 0.1,
                "died": bool(seed % 2)}
    monkeypatch.setattr(game, "run_episode", fake)
    args = ["--source=crafter", "--num_frames=100", "--image_size=8", "--seed=5"]
    build(*args, f"--data_dir={tmp_path}/ref", "--num_workers=2")
    calls = []

    def dies(*a):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return fake(*a)
    monkeypatch.setattr(game, "run_episode", dies)
    with pytest.raises(KeyboardInterrupt):
        build(*args, f"--data_dir={tmp_path}/re", "--num_workers=1")
    assert len(os.listdir(f"{tmp_path}/re.partial")) == 6  # 5 chunks + settings
    monkeypatch.setattr(game, "run_episode", fake)
    build(*args, f"--data_dir={tmp_path}/re", "--num_workers=1")
    for name in ["frames", "actions", "rewards", "episodes", "policies", "epsilons", "slips",
                 "events", "deaths"]:
        np.testing.assert_array_equal(np.load(f"{tmp_path}/ref/{name}.npy"),
                                      np.load(f"{tmp_path}/re/{name}.npy"))
    assert (json.load(open(f"{tmp_path}/ref/meta.json"))
            == json.load(open(f"{tmp_path}/re/meta.json")))


def test_existing_store(crafter_store, capsys):
    d = os.path.dirname(crafter_store[0].frames.filename)
    before = os.path.getmtime(os.path.join(d, "frames.npy"))
    build(*CRAFTER, f"--data_dir={d}")
    assert "already holds" in capsys.readouterr().out
    fails("already holds image_size 32, not 16", *CRAFTER, f"--data_dir={d}", "--image_size=16")
    assert (os.path.getmtime(os.path.join(d, "frames.npy")) == before
            and not os.path.exists(d + ".partial"))


def test_info(crafter_store, tmp_path, capsys):
    d = os.path.dirname(crafter_store[0].frames.filename)
    build(f"--data_dir={d}", "--info=True", f"--out={tmp_path}/grid.png")
    out = capsys.readouterr().out
    assert "action spec: action:17" in out and "demo" in out
    img = imageio.imread(f"{tmp_path}/grid.png")
    assert img.shape[1] == 8 * 32 and img.shape[0] % 32 == 0


# --------------------------------------------------------------------------------------------------
# MineRL (§M)

def minerl_episode(d, n, extra, spelling="$", enums=None, drop=(), video_frames=None):
    os.makedirs(d)
    write_video(os.path.join(d, "recording.mp4"), range(video_frames or n + 1 + extra), 64, 64)
    t = np.arange(n)
    arr = {"reward": (t * 0.5).astype(np.float32),
           "camera": np.stack([np.linspace(-15, 15, n), -t * 0.3], 1)}
    for j, b in enumerate(sources._BUTTONS8):
        arr[b] = ((t >> (j % 3)) & 1).astype(np.int64)
    arr.update(enums or {})
    np.savez(os.path.join(d, "rendered.npz"),
             **{("reward" if k == "reward" else f"action{spelling}{k}"): v
                for k, v in arr.items() if k not in drop},
             **{"observation$inventory$dirt": np.zeros(n + 1)})
    json.dump({"duration_steps": n}, open(os.path.join(d, "metadata.json"), "w"))
    return arr


def test_minerl(tmp_path):
    src = tmp_path / "MineRLTreechop-v0"
    a = minerl_episode(src / "a_episode", 30, 3, "$",
                       {"place": np.array(["none", "dirt", "stone"] * 10)})
    b = minerl_episode(src / "b_episode", 20, 0, "_", {"place": np.array(["none", "torch"] * 10),
                                                       "craft": np.array(["planks", "none"] * 10)})
    meta = build("--source=minerl", f"--src={src}", f"--data_dir={tmp_path}/m", "--image_size=32")
    s = FrameStore(f"{tmp_path}/m")
    check_store(s)
    names = [c["name"] for c in s.action_spec]
    assert names == sources._BUTTONS8 + ["camera", "place", "craft"]
    assert s.action_spec[9]["values"] == ["none", "dirt", "stone", "torch"]
    assert s.action_spec[10]["values"] == ["none", "planks"]
    assert ((s.episodes == [[0, 31], [31, 52]]).all() and meta["fps"] == 20
            and meta["labeled_frac"] == 1.0)
    for (lo, hi), arr, extra in [(s.episodes[0], a, 3), (s.episodes[1], b, 0)]:
        n = hi - lo - 1
        # leading extra frames skipped
        assert (index_of(s.frames[lo:hi]) == np.arange(n + 1) + extra).all()
        for j, k in enumerate(sources._BUTTONS8):
            assert (s.actions[lo:hi - 1, j] == arr[k]).all()
        assert (s.actions[lo:hi - 1, 8]
                == sources.camera_to_class(arr["camera"][:, 0], arr["camera"][:, 1])).all()
        assert ([s.action_spec[9]["values"][v] for v in s.actions[lo:hi - 1, 9]]
                == arr["place"].tolist())
        assert np.allclose(s.rewards[lo:hi - 1], arr["reward"]) and s.rewards[hi - 1] == 0
    # craft absent in a
    assert (s.actions[0:30, 10] == -1).all() and (s.actions[31:51, 10] == [1, 0] * 10).all()


def test_camera_quantization():
    assert sources.camera_to_class(0, 0) == 60 and sources.camera_to_class(-100, 100) == 10
    c = sources.camera_to_class(np.array([-10, -1, 0, 0.3, 5]), np.array([10, 2, 0, -0.3, -5]))
    assert c.min() >= 0 and c.max() < 121
    p, y = sources.class_to_camera(c)
    assert (sources.camera_to_class(p, y) == c).all() and np.isclose(p[0], -10) and y[2] == 0


# --------------------------------------------------------------------------------------------------
# bad input: one line, nothing left behind

def truncate(path, keep=0.5):
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def bad_missing_src(t):
    return "does not exist", ["--source=minerl", f"--src={t}/nope"]


def bad_no_src(t):
    return "--src is required for --source=vpt", ["--source=vpt"]


def bad_empty_src(t):
    os.makedirs(t / "empty")
    return "no MineRL episode folders", ["--source=minerl", f"--src={t}/empty"]


def bad_npz_keys(t):
    minerl_episode(t / "k" / "e", 10, 0, drop=("camera",))
    return "lacks camera", ["--source=minerl", f"--src={t}/k"]


def bad_video_too_short(t):  # §M: the video must hold at least len(reward) + 1 frames
    minerl_episode(t / "k" / "e", 10, 0, video_frames=9)
    return "has 9 frames but rendered.npz needs 11", ["--source=minerl", f"--src={t}/k"]


def bad_action_length(t):
    minerl_episode(t / "k" / "e", 10, 0, enums={"place": np.array(["none"] * 7)})
    return "action place has shape (7,) but reward has 10", ["--source=minerl", f"--src={t}/k"]


# found mid-way, after another episode's chunk was written (2 workers)
def bad_truncated_minerl_video(t):
    minerl_episode(t / "k" / "a", 10, 0)
    minerl_episode(t / "k" / "b", 10, 0)
    truncate(t / "k" / "b" / "recording.mp4")
    return "cannot read video", ["--source=minerl", f"--src={t}/k", "--num_workers=2"]


def bad_truncated_video(t):  # the index (moov atom) at the end is cut off
    os.makedirs(t / "v")
    write_video(t / "v" / "a.mp4", range(40), 32, 32)
    write_video(t / "v" / "b.mp4", range(40), 32, 32)
    truncate(t / "v" / "b.mp4", 0.9)
    return "cannot read video", ["--source=video", f"--src={t}/v"]


# index first (faststart): ffmpeg decodes what is left, without an error
def bad_truncated_faststart_video(t):
    os.makedirs(t / "v")
    frames = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
              for i in range(60)]
    imageio.mimwrite(t / "v" / "a.mp4", frames, fps=20, macro_block_size=1,
                     output_params=["-movflags", "+faststart"])
    truncate(t / "v" / "a.mp4")
    return "is truncated", ["--source=video", f"--src={t}/v"]


def bad_unreadable_video(t):
    os.makedirs(t / "v")
    (t / "v" / "c.webm").write_bytes(b"garbage" * 100)
    return "c.webm", ["--source=video", f"--src={t}/v/c.webm"]


def bad_vpt_lengths(t):
    os.makedirs(t / "v")
    write_video(t / "v" / "ep1.mp4", range(10), 36, 64)
    with open(t / "v" / "ep1.jsonl", "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in vpt_steps(14))
    return "has 10 frames but its jsonl has 14 actions", ["--source=vpt", f"--src={t}/v"]


def bad_vpt_no_jsonl(t):
    os.makedirs(t / "v")
    write_video(t / "v" / "ep1.mp4", range(10), 36, 64)
    return "has no 'ep1.jsonl' beside it", ["--source=vpt", f"--src={t}/v"]


def bad_vpt_json(t):
    os.makedirs(t / "v")
    write_video(t / "v" / "ep1.mp4", range(10), 36, 64)
    (t / "v" / "ep1.jsonl").write_text("{not json\n")
    return "ep1.jsonl' line 1 is not JSON", ["--source=vpt", f"--src={t}/v"]


@pytest.mark.parametrize("case", [bad_missing_src, bad_no_src, bad_empty_src, bad_npz_keys,
                                  bad_video_too_short, bad_action_length,
                                  bad_truncated_minerl_video, bad_truncated_video,
                                  bad_truncated_faststart_video, bad_unreadable_video,
                                  bad_vpt_lengths, bad_vpt_no_jsonl, bad_vpt_json])
def test_bad_input(case, tmp_path):
    match, args = case(tmp_path)
    fails(match, *args, f"--data_dir={tmp_path}/out")
    assert nothing_left(f"{tmp_path}/out")


def test_skip_bad(tmp_path):
    bad_truncated_minerl_video(tmp_path)
    meta = build("--source=minerl", f"--src={tmp_path}/k", f"--data_dir={tmp_path}/out",
                 "--skip_bad=True")
    assert meta["num_episodes"] == 1 and meta["episode_names"] == ["a"]


# --------------------------------------------------------------------------------------------------
# VPT (§V)

def vpt_steps(n):
    steps = []
    for t in range(n):
        buttons = [0] if t <= 6 else []
        new = [0] if t in (0, 5) else []
        keys = (["key.keyboard.w"] if t < 3 else ["key.keyboard.1", "key.keyboard.space"] if t == 9
                else [])
        steps.append({"mouse": {"x": 0, "y": 0, "dx": 20.0 if t in (10, 11) else 0.0,
                                "dy": -10.0 if t == 10 else 0.0,
                                "buttons": buttons + ([1] if t == 12 else []), "newButtons": new},
                      "keyboard": {"keys": keys, "newKeys": []}, "hotbar": 2 if t >= 8 else 0,
                      "isGuiOpen": t == 11})
    return steps


def test_vpt(tmp_path):
    os.makedirs(tmp_path / "v")
    write_video(tmp_path / "v" / "ep1.mp4", range(24), 360, 640)
    with open(tmp_path / "v" / "ep1.jsonl", "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in vpt_steps(24))
    build("--source=vpt", f"--src={tmp_path}/v", f"--data_dir={tmp_path}/s", "--image_size=32")
    s = FrameStore(f"{tmp_path}/s")
    check_store(s)
    col = {c["name"]: i for i, c in enumerate(s.action_spec)}
    assert len(col) == 24 and col["camera"] == 8 and s.action_spec[8]["classes"] == 121
    assert sum(c["classes"] == 2 for c in s.action_spec) == 23
    assert (index_of(s.frames) == np.arange(24)).all()
    A = s.actions
    # stuck attack dropped until pressed
    assert A[:, col["attack"]].tolist()[:8] == [0, 0, 0, 0, 0, 1, 1, 0]
    assert A[:4, col["forward"]].tolist() == [1, 1, 1, 0]
    assert (A[8:10, col["hotbar.3"]].tolist() == [1, 0] and A[9, col["hotbar.1"]] == 1
            and A[9, col["jump"]] == 1)
    # GUI open: camera 0
    assert A[10, 8] == sources.camera_to_class(-1.5, 3.0) and A[11, 8] == 60 and A[0, 8] == 60
    assert A[12, col["use"]] == 1 and (A[-1] == -1).all() and (A[:-1] >= 0).all()


# --------------------------------------------------------------------------------------------------
# plain video

def test_video(tmp_path):
    os.makedirs(tmp_path / "vid" / "sub")
    write_video(tmp_path / "vid" / "a.mp4", range(40), 48, 64)
    write_video(tmp_path / "vid" / "sub" / "b.gif", range(10, 22), 32, 32)
    write_video(tmp_path / "vid" / "c.webm", range(5, 20), 32, 32)
    (tmp_path / "vid" / "notes.txt").write_text("not a video")
    meta = build("--source=video", f"--src={tmp_path}/vid", f"--data_dir={tmp_path}/s",
                 "--image_size=32")
    s = FrameStore(f"{tmp_path}/s")
    check_store(s)
    assert s.action_spec == [] and s.actions.shape == (len(s), 0) and meta["labeled_frac"] == 0.0
    assert meta["episode_names"] == ["a.mp4", "c.webm", os.path.join("sub", "b.gif")]
    assert (s.policies == -1).all() and np.isnan(s.epsilons).all()
    got = [index_of(s.frames[a:b]).tolist() for a, b in s.episodes]
    assert got == [list(range(40)), list(range(5, 20)), list(range(10, 22))]
    assert s.sample(4, 8, "all", rng=0)["actions"].shape == (4, 8, 0)
    meta["num_frames"] += 1  # a store whose parts disagree is refused
    json.dump(meta, open(f"{tmp_path}/s/meta.json", "w"))
    with pytest.raises(ConfigError, match="is inconsistent: meta.json counts"):
        FrameStore(f"{tmp_path}/s")


def test_video_like_and_spec_mismatch(crafter_store, tmp_path):
    os.makedirs(tmp_path / "vid")
    write_video(tmp_path / "vid" / "a.mp4", range(12), 32, 32)
    d = os.path.dirname(crafter_store[0].frames.filename)
    build("--source=video", f"--src={tmp_path}/vid", f"--data_dir={tmp_path}/s", "--image_size=32",
          f"--like={d}")
    s = FrameStore(f"{tmp_path}/s")
    assert (s.action_spec == crafter_store[0].action_spec and (s.actions == -1).all()
            and s.actions.shape == (12, 1))
    fails("different action spec", "--source=video", f"--src={tmp_path}/vid", f"--data_dir={d}",
          "--image_size=32")
    assert not os.path.exists(d + ".partial") and len(FrameStore(d)) == len(crafter_store[0])
    # the labeled store and the video as one store: episodes one after the other, each as it was
    meta = build("--source=stores", f"--src={d},{tmp_path}/s", f"--data_dir={tmp_path}/m",
                 "--image_size=32")
    m, c = FrameStore(f"{tmp_path}/m"), crafter_store[0]
    check_store(m)
    assert (len(m) == len(c) + 12 and len(m.episodes) == len(c.episodes) + 1
            and (m.frames[len(c):] == s.frames).all())
    assert (m.actions[:len(c)] == c.actions).all() and (m.actions[len(c):] == -1).all()
    assert ((m.rewards[:len(c)] == c.rewards).all() and (m.policies[:-1] == c.policies).all()
            and m.policies[-1] == -1)
    transitions = lambda st: len(st) - len(st.episodes)
    assert meta["labeled_frac"] == pytest.approx(c.meta["labeled_frac"] * transitions(c)
                                                 / transitions(m))
    build("--source=video", f"--src={tmp_path}/vid", f"--data_dir={tmp_path}/plain",
          "--image_size=32")
    fails("make a video store with --like", "--source=stores", f"--src={d},{tmp_path}/plain",
          f"--data_dir={tmp_path}/n", "--image_size=32")
    fails("not --image_size=64", "--source=stores", f"--src={d}", f"--data_dir={tmp_path}/n")
    assert nothing_left(tmp_path / "n")


def test_bad_store_and_source(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        FrameStore(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "x")
    with pytest.raises(ConfigError, match="is not a frame store"):
        FrameStore(str(tmp_path / "x"))
    fails("exists and is not a frame store", "--source=video", f"--src={tmp_path}",
          f"--data_dir={tmp_path}/x")
    fails("no videos", "--source=video", f"--src={tmp_path}/x", f"--data_dir={tmp_path}/y")
    r = subprocess.run([sys.executable, "data.py", "--source=atari", f"--data_dir={tmp_path}/z"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip() == ("error: unknown --source='atari'; use one of: crafter, minerl, "
                                "vpt, video, stores")
    assert nothing_left(tmp_path / "z")


@pytest.mark.slow
def test_kill9_during_collection_loses_nothing(tiny_store, tmp_path):
    """SIGKILL twice while episodes are being written (random moments after a chunk of this run
    lands), rerun the same command: the same store, array for array, as the uninterrupted collection
    (tiny_store's own command)."""
    import glob
    from conftest import kill_and_rerun
    d = tmp_path / "crafter32"
    args = ["data.py", "--source=crafter", f"--data_dir={d}", "--num_frames=600",
            "--episode_len=100", "--image_size=32", "--num_workers=2"]
    chunk_landed = lambda t0: any(os.path.getmtime(f) > t0
                                  for f in glob.glob(f"{d}.partial/ep_*.npz"))
    landed, _ = kill_and_rerun(args, chunk_landed, 2, tmp_path / "log.txt")
    assert landed == 2 and not os.path.exists(f"{d}.partial") and not os.path.exists(f"{d}.tmp")
    for name in ("frames", "actions", "rewards", "episodes", "policies", "epsilons", "slips",
                 "events", "deaths"):
        assert np.array_equal(np.load(d / f"{name}.npy"),
                              np.load(os.path.join(tiny_store, f"{name}.npy")),
                              equal_nan=True), name
    assert (json.load(open(d / "meta.json"))
            == json.load(open(os.path.join(tiny_store, "meta.json"))))
