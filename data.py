"""The frame store, window sampling, and the sources that fill it (Crafter collection, MineRL, VPT,
plain video).

    python data.py --source=crafter --data_dir=data/crafter --num_frames=100000
    python data.py --source=minerl  --data_dir=data/minerl --src=PATH/MineRLTreechop-v0
    python data.py --source=vpt     --data_dir=data/vpt    --src=PATH/contractor_data
    python data.py --source=video   --data_dir=data/video  --src=PATH/videos [--like=data/vpt]
    python data.py --source=stores  --data_dir=data/mixed  --src=data/crafter,data/video  (as one)
    python data.py --info --data_dir=data/crafter            (summary + a PNG grid of frames)

A store is a folder:
    frames.npy    uint8 (N, H, W, 3), H == W == image_size; opened with mmap_mode='r' (never loaded)
    actions.npy   int16 (N, C), one column per action component, -1 = unlabeled
    rewards.npy   float32 (N,)
    episodes.npy  int64 (E, 2): [start, end) frame ranges, contiguous, covering 0..N
    policies.npy  int8 (E,): 0 random, 1 demonstrator, 2 an agent (--agent), -1 unknown / n/a
    epsilons.npy  float32 (E,): the demonstrator's epsilon, NaN where not applicable
    slips.npy     int8 (N,): 1 where action t was a random slip of the demonstrator (BC skips it),
                  0 chosen, -1 unknown
    events.npy    int8 (N, K): 1 where event k (meta "events": Crafter's 22 achievements) happens on
                  transition t, each time; -1 unknown (K = 0 for sources without events)
    deaths.npy    int8 (E,): 1 the episode ended in death (its last frame is terminal), 0 it was
                  cut, -1 unknown
    labels.npy    int16 (N, C): where an agent played, what the demonstrator would press in frame t
                  (BC's target there, DAgger); -1 elsewhere (optional: a store without it has none)
    meta.json     source, image_size, fps, num_frames, num_episodes, labeled_frac, action_spec
                  ([{"name", "classes"[, "values"]}, ...]), events, episode_names, and for Crafter a
                  policy summary
Convention (as §M): action t and reward t lead from frame t to frame t+1; an episode's last frame
has action -1 (all components) and reward 0. labeled_frac counts transitions (frames that are not
last) whose action has at least one labeled component.

Building is atomic and resumable: each episode becomes a chunk `<data_dir>.partial/ep_XXXXXXX.npz`
(written to a .tmp name, then renamed); a rerun of the same command skips finished chunks. The store
is assembled in `<data_dir>.tmp` and renamed to `<data_dir>`; then the partial folder is removed (so
a big conversion needs twice its size on disk for a moment). If `data_dir` already holds a store
with the same image size and action spec, the command says so and exits 0 (nothing is rebuilt); a
different one is an error. Bad input stops with one line (ConfigError); a partial folder that the
failing run created is removed, chunks of earlier runs are kept. --skip_bad=True skips unreadable
episodes with a warning instead.

Sources and their choices:
- crafter: episode k uses seed `seed + k`; from an RNG seeded by [seed + k, 2] (as
  demonstrator.sample_skill) it draws policy 'random' (probability random_frac) else 'demo' with
  epsilon ~ U(eps_min, eps_max) and calls demonstrator.run_episode (view: the screen-only
  demonstrator). The store holds the first K episodes (by index) whose frames total >= num_frames,
  so which episodes (seeds, policies, epsilons) it holds does not depend on num_workers (the frames
  are only as deterministic as demonstrator.run_episode). One 17-way component "action". fps 10 is
  nominal. --agent=CKPT (DAgger): the agent plays every episode from the frames and the screen-only
  demonstrator (epsilon 0) labels each state it reaches (labels.npy, policy 2); mix such a store
  with the demonstrator's through --source=stores.
- minerl (§M): episode folders with recording.mp4 + rendered.npz (action$x or action_x keys); skip
  the first n_video - (len(reward) + 1) frames. Components: forward back left right jump sneak
  sprint attack (binary), camera (pitch, yaw each mu-law quantized to 11 bins -> 121 classes:
  pitch_bin * 11 + yaw_bin), then the enum actions present (place equip craft nearbyCraft
  nearbySmelt), with "values" = the vocabulary found in the data (strings sorted, 'none' first) or
  range(max + 1) for integer arrays. A component that an episode lacks is -1 there. Action arrays
  may have len(reward) or len(reward) + 1 entries (the extra one dropped).
- vpt (§V): NAME.mp4 + NAME.jsonl. The same first 9 components as minerl (8 keys, camera), then use
  drop inventory hotbar.1-9 ESC swapHands pickItem: the 23 binary buttons of VPT's action
  space + camera. Keys: w s a d space left.shift left.control -> forward back left right jump sneak
  sprint; e inventory, q drop, 1..9 hotbar.N, escape ESC, f swapHands; mouse buttons 0/1/2
  attack/use/pickItem. As OpenAI's loader: attack recorded as held from the first frame is dropped
  until first pressed; a changed `hotbar` value (scroll wheel) presses hotbar.N;
  camera = (dy, dx) * 0.15 degrees, mu-law binned; GUI open -> camera 0 (we do not draw the
  cursor). Null actions are kept (time must stay contiguous). 640x360 is resized to a square
  without cropping (as VPT feeds 128x128). Video and jsonl lengths may differ by up to 2 frames
  (both truncated to the shorter); more is an error.
- video: every .mp4/.webm/.gif/.mkv/.avi/.mov under src, one unlabeled episode each: action spec []
  and actions (N, 0) by default, which a dynamics model reads as "no component labeled" (base
  embedding only, §D). --like=OTHER_STORE copies that store's action spec instead (all -1), so both
  stores have equal specs and can be mixed by code that insists on one spec.
- stores: existing stores as one, e.g. a labeled Crafter store and unlabeled Crafter video (made
  with --like): their episodes one after the other, each with its actions (-1 unlabeled), rewards,
  policy and epsilon.
ffmpeg resizes frames to image_size x image_size (scale filter, area averaging: antialiased).
"""
import json
import os
import queue
import shutil
import sys
import time
import zipfile

import numpy as np
from common import ConfigError, atomic_write, configure

# -----------------------------------------------------------------------------
# config
source = "crafter"        # crafter | minerl | vpt | video | stores
data_dir = "data/crafter"
src = ""                  # input folder (minerl, vpt, video); stores: comma-separated frame stores
image_size = 64
num_workers = os.cpu_count() or 1
skip_bad = False          # skip unreadable episodes with a warning instead of stopping
like = ""                 # video: copy the action spec of this store (all -1) instead of []
info = False              # print a summary of data_dir and write a PNG grid of frames
out = ""                  # --info: where the PNG goes (default data_dir/info.png)
# crafter
num_frames = 100_000
seed = 0
random_frac = 0.2
eps_min = 0.0
eps_max = 0.5
episode_len = 1000
view = True               # the screen-only demonstrator (docs/experiments.md); False: the one that
                          # reads the map
agent = ""                # an agent checkpoint: it plays every episode, the screen-only
                          # demonstrator labels (DAgger)
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items()
            if not k.startswith("_") and isinstance(v, (int, float, bool, str))}

POLICIES = {"random": 0, "demo": 1, "agent": 2}  # policies.npy's codes
_CRAFTER_KEYS = ["seed", "random_frac", "eps_min", "eps_max", "episode_len", "view",
                 "agent"]  # the settings a Crafter store depends on (its meta, its chunks)
_VIDEO_EXTS = (".mp4", ".webm", ".gif", ".mkv", ".avi", ".mov")
_BUTTONS8 = ["forward", "back", "left", "right", "jump", "sneak", "sprint", "attack"]
_MINERL_ENUMS = ["place", "equip", "craft", "nearbyCraft", "nearbySmelt"]
_VPT_REST = (["use", "drop", "inventory"] + [f"hotbar.{i}" for i in range(1, 10)]
             + ["ESC", "swapHands", "pickItem"])
_VPT_KEYS = {"key.keyboard.w": "forward", "key.keyboard.s": "back", "key.keyboard.a": "left",
             "key.keyboard.d": "right", "key.keyboard.space": "jump",
             "key.keyboard.left.shift": "sneak", "key.keyboard.left.control": "sprint",
             "key.keyboard.e": "inventory", "key.keyboard.q": "drop", "key.keyboard.escape": "ESC",
             "key.keyboard.f": "swapHands",
             **{f"key.keyboard.{i}": f"hotbar.{i}" for i in range(1, 10)}}
_VPT_DEG_PER_PX, _VPT_SLACK = 0.15, 2
# VPT's camera quantizer: +-10 deg, mu=10, 11 bins per axis
_CAM_MAX, _CAM_MU, _CAM_BIN = 10.0, 10.0, 2.0


# -----------------------------------------------------------------------------
# camera: mu-law quantization (§M, §V), 11 x 11 = 121 classes

def camera_to_class(pitch, yaw):
    """Degrees (any shape) -> int64 class pitch_bin * 11 + yaw_bin; (0, 0) -> 60."""
    def bins(x):
        x = np.clip(np.asarray(x, np.float64), -_CAM_MAX, _CAM_MAX) / _CAM_MAX
        x = np.sign(x) * np.log1p(_CAM_MU * np.abs(x)) / np.log1p(_CAM_MU) * _CAM_MAX
        return np.round((x + _CAM_MAX) / _CAM_BIN).astype(np.int64)
    return bins(pitch) * 11 + bins(yaw)


def class_to_camera(c):
    """Inverse of camera_to_class (bin centres): int class -> (pitch, yaw) in degrees."""
    def degrees(b):
        v = (np.asarray(b, np.float64) * _CAM_BIN - _CAM_MAX) / _CAM_MAX
        return np.sign(v) * np.expm1(np.abs(v) * np.log1p(_CAM_MU)) / _CAM_MU * _CAM_MAX
    c = np.asarray(c)
    return degrees(c // 11), degrees(c % 11)


# -----------------------------------------------------------------------------
# the frame store

class FrameStore:
    """A store opened read-only; frames/actions/rewards are memmaps (see the module docstring).
    sample / fixed_windows return {'frames': uint8 (B,T,H,W,3), 'actions': int64 (B,T,C),
    'rewards': float32 (B,T), 'episode': int64 (B,), 'start': int64 (B,) global index of each
    window's first frame}."""

    def __init__(self, data_dir):
        if not os.path.isdir(data_dir):
            raise ConfigError(f"data_dir '{data_dir}' does not exist (make it with python data.py "
                              "--data_dir=...)")
        names = ["frames", "actions", "rewards", "episodes", "policies", "epsilons"]
        missing = [f"{n}.npy" for n in names
                   if not os.path.isfile(os.path.join(data_dir, f"{n}.npy"))]
        missing += [] if os.path.isfile(os.path.join(data_dir, "meta.json")) else ["meta.json"]
        if missing:
            raise ConfigError(f"'{data_dir}' is not a frame store (missing {', '.join(missing)})")
        try:
            arr = {n: np.load(os.path.join(data_dir, f"{n}.npy"), mmap_mode="r") for n in names}
            self.meta = json.load(open(os.path.join(data_dir, "meta.json")))
        except (ValueError, OSError) as e:
            raise ConfigError(f"frame store '{data_dir}' is unreadable: {e}")
        self.frames, self.actions, self.rewards = arr["frames"], arr["actions"], arr["rewards"]
        self.episodes, self.policies, self.epsilons = (
            np.array(arr[n]) for n in ["episodes", "policies", "epsilons"])
        self.action_spec, self.image_size = (self.meta.get("action_spec"),
                                             self.meta.get("image_size"))
        self.fps, self._cache = self.meta.get("fps"), {}
        # the agent's per-frame fields (None in a store made before them: agent_fields() says how to
        # rebuild)
        fields = ["slips", "events", "deaths", "labels"]
        extra = {n: np.load(p) for n in fields
                 if os.path.isfile(p := os.path.join(data_dir, f"{n}.npy"))}
        self.slips, self.events, self.deaths, self.labels = (extra.get(n) for n in fields)
        self.event_names, self.data_dir = self.meta.get("events", []), data_dir
        N, E, ep = len(self.frames), len(self.episodes), self.episodes
        problems = [
            (self.frames.dtype != np.uint8
             or self.frames.shape[1:] != (self.image_size, self.image_size, 3),
             f"frames {self.frames.dtype}{self.frames.shape} vs image_size {self.image_size}"),
            (not isinstance(self.action_spec, list)
             or self.actions.shape != (N, len(self.action_spec)),
             f"actions {self.actions.shape} vs {N} frames and the action spec"),
            (self.rewards.shape != (N,), f"rewards {self.rewards.shape} vs {N} frames"),
            (ep.ndim != 2 or E == 0 or ep[0, 0] != 0 or ep[-1, 1] != N
             or (ep[:, 1] <= ep[:, 0]).any() or (ep[1:, 0] != ep[:-1, 1]).any(),
             "episodes do not tile the frames"),
            (self.policies.shape != (E,) or self.epsilons.shape != (E,),
             "policies/epsilons vs episodes"),
            (self.meta.get("num_frames") != N or self.meta.get("num_episodes") != E,
             "meta.json counts"),
            (self.slips is not None and self.slips.shape != (N,), "slips vs frames"),
            (self.events is not None and self.events.shape != (N, len(self.event_names)),
             "events vs frames"),
            (self.deaths is not None and self.deaths.shape != (E,), "deaths vs episodes"),
            (self.labels is not None and self.labels.shape != self.actions.shape,
             "labels vs actions"),
        ]
        for bad, what in problems:
            if bad:
                raise ConfigError(f"frame store '{data_dir}' is inconsistent: {what}")

    def __len__(self):
        return len(self.frames)

    def agent_fields(self):
        """Check that the store has the agent's fields (slips, events, deaths): one line how to
        rebuild if not."""
        if self.slips is None or self.events is None or self.deaths is None:
            raise ConfigError(f"frame store '{self.data_dir}' predates slips/events/deaths (the "
                              "agent's targets); rebuild it: python data.py "
                              f"--source={self.meta.get('source')} --data_dir=NEW_DIR ...")

    def labeled_episodes(self):
        """(E,) bool: the episodes with at least one labeled action (video episodes have none)."""
        return np.array([(self.actions[a:b] >= 0).any() for a, b in self.episodes])

    def episode_ids(self, split, val_frac=0.05):
        """Episode indices of 'train' | 'val' | 'all': a fixed seeded permutation, >= 1 val episode
        if E >= 2."""
        E = len(self.episodes)
        if split == "all":
            return np.arange(E)
        if split not in ("train", "val"):
            raise ConfigError(f"split '{split}': use 'train', 'val' or 'all'")
        n_val = 0 if E < 2 else min(E - 1, max(1, round(val_frac * E)))
        perm = np.random.default_rng(0).permutation(E)
        return np.sort(perm[:n_val] if split == "val" else perm[n_val:])

    def _windows(self, split, T, first=0, among=None, last=0):
        """(episode ids (S,), start frames (S,), cumulative window counts (S,)) of the split's
        T-windows (first > 0: only the first `first` of each episode; last > 0: only its last
        `last`; among, an (E,) bool mask: only those episodes')."""
        key = split, T, first, last, None if among is None else among.tobytes()
        if key not in self._cache:
            if T < 1:
                raise ConfigError(f"T={T} must be >= 1")
            ids = self.episode_ids(split)
            starts, ends = self.episodes[ids, 0], self.episodes[ids, 1]
            n = np.maximum(ends - starts - T + 1, 0)
            if last:  # the windows that end in the episode's last `last` frames
                starts, n = starts + np.maximum(n - last, 0), np.minimum(n, last)
            n = np.minimum(n, first) if first else n
            self._cache[key] = ids, starts, np.cumsum(n if among is None else n * among[ids])
        return self._cache[key]

    def _gather(self, ids, starts, cum, j, T):
        """Window numbers j (B,) -> the batch dict; index math only, one fancy index per memmap."""
        e = np.searchsorted(cum, j, side="right")                  # (B,) position within the split
        start = starts[e] + j - np.concatenate([[0], cum])[e]      # (B,) first frame of each window
        idx = start[:, None] + np.arange(T)                         # (B, T) global frame indices
        return {"frames": np.asarray(self.frames[idx]),              # uint8 (B, T, H, W, 3)
                "actions": self.actions[idx].astype(np.int64),      # int64 (B, T, C)
                "rewards": np.asarray(self.rewards[idx], np.float32),  # float32 (B, T)
                "episode": ids[e].astype(np.int64),                 # int64 (B,)
                "start": start.astype(np.int64)}  # int64 (B,) global index of frame 0

    def _check(self, n, cum, split, T, what):
        if cum[-1:].sum() < n:
            raise ConfigError(f"{what}={n} but split '{split}' has only {int(cum[-1:].sum())} "
                              f"windows of T={T}")

    def sample(self, batch_size, T, split="train", rng=None, part=(0, 1), first=0, among=None,
               last=0):
        """batch_size windows of T consecutive frames of one episode each, uniform over all such
        windows (first > 0: those that start within the first `first` frames of their episode;
        last > 0: those that end within its last `last` frames; among, an (E,) bool mask: those of
        these episodes).
        part=(rank, world): DDP ranks share one rng, draw the same global batch of
        world * batch_size windows and each gathers its own slice, so N processes train on what one
        process with N times the batch would."""
        rng = np.random.default_rng(rng)
        ids, starts, cum = self._windows(split, T, first, among, last)
        self._check(batch_size, cum, split, T, "batch_size")
        rank, world = part
        j = rng.integers(0, cum[-1], batch_size * world)[rank * batch_size:(rank + 1) * batch_size]
        return self._gather(ids, starts, cum, j, T)

    def sample_parts(self, parts, T, split, rng, part=(0, 1)):
        """One batch from several draws: parts, a list of (batch_size, among, last) for sample(),
        concatenated in order (a part of size 0 is skipped)."""
        drawn = [self.sample(k, T, split, rng, part, among=m, last=l) for k, m, l in parts if k]
        return {key: np.concatenate([p[key] for p in drawn]) for key in drawn[0]}

    def fixed_windows(self, n, T, split="val", seed=0):
        """n distinct windows, the same on every call (for evaluation), sorted by position."""
        ids, starts, cum = self._windows(split, T)
        self._check(n, cum, split, T, "n")
        j = np.sort(np.random.default_rng(seed).choice(int(cum[-1]), n, replace=False))
        return self._gather(ids, starts, cum, j, T)


# -----------------------------------------------------------------------------
# video reading

def read_video(path, size):
    """All frames of a video as RGB uint8 (n, size, size, 3) and its fps; ConfigError if
    unreadable/truncated. ffmpeg resizes (scale filter, area averaging = antialiased): 10x faster
    than decoding 640x360 into Python."""
    import logging
    import imageio_ffmpeg
    # not the "size differs from source" notice
    logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
    frames, gen = [], None
    try:
        gen = imageio_ffmpeg.read_frames(path,
                                         output_params=["-vf", f"scale={size}:{size}:flags=area"])
        meta = next(gen)
        frames = [np.frombuffer(b, np.uint8).reshape(size, size, 3) for b in gen]
    except (OSError, RuntimeError, StopIteration, ValueError) as e:
        lines = [l for l in str(e).splitlines() if l.strip() and not l.startswith("===")]
        raise ConfigError(f"cannot read video '{path}' (truncated or not a video): "
                          f"{(lines or ['?'])[-1].strip()}")
    finally:
        if gen is not None:
            gen.close()
    n, fps, dur = len(frames), float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    if n == 0 or (fps > 0 and dur > 0 and n < 0.9 * fps * dur - 2):
        raise ConfigError(f"video '{path}' is truncated: {n} frames decoded, header says "
                          f"{fps * dur:.0f}")
    return np.stack(frames), fps


def _find(src, what, pick):
    """Sorted paths under src (recursively) for which pick(dirpath, filename or None) is true."""
    if not src:
        raise ConfigError(f"--src is required for --source={what}")
    if not os.path.exists(src):
        raise ConfigError(f"--src='{src}' does not exist")
    if os.path.isfile(src):  # a single episode
        return [src] if pick(os.path.dirname(src), os.path.basename(src)) else []
    found = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if pick(dirpath, f)]
        found += [dirpath] if pick(dirpath, None) else []
    return sorted(found)


def _abs_src(cfg):
    """--src as absolute path(s)."""
    return ",".join(os.path.abspath(x) for x in cfg["src"].split(","))


def _name(path, src):
    """An episode's name: its path relative to --src."""
    return os.path.relpath(path, src) if os.path.isdir(src) else os.path.basename(path)


# -----------------------------------------------------------------------------
# sources: plan_X(cfg) checks the input and returns {spec, episodes, fps}; episode_X(cfg, plan, k)
# returns episode k as {frames uint8 (n,H,W,3), actions int16 (n,C), rewards float32 (n,), policy,
# epsilon, fps, name}

def plan_crafter(cfg):
    import crafter
    if not (0 <= cfg["random_frac"] <= 1 and 0 <= cfg["eps_min"] <= cfg["eps_max"] <= 1):
        raise ConfigError("need 0 <= random_frac <= 1 and 0 <= eps_min <= eps_max <= 1")
    if cfg["num_frames"] < 1 or cfg["episode_len"] < 1:
        raise ConfigError("num_frames and episode_len must be >= 1")
    if cfg["agent"]:
        from agent import load_agent
        size = load_agent(cfg["agent"])["image_size"]  # one line here, not one per episode
        if size != cfg["image_size"]:
            raise ConfigError(f"--agent={cfg['agent']} plays {size}x{size} frames, not "
                              f"--image_size={cfg['image_size']}")
    spec = [{"name": "action", "classes": 17, "values": list(crafter.constants.actions)}]
    return {"spec": spec, "episodes": None, "fps": 10.0,
            "events": list(crafter.constants.achievements)}


_AGENT = None  # the policy that plays (--agent), loaded once per worker process


def _agent(cfg):
    global _AGENT
    if _AGENT is None:
        import torch
        from agent import load_policy
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg["num_workers"]))
        _AGENT = load_policy(cfg["agent"])
    return _AGENT


def episode_crafter(cfg, plan, k):
    import demonstrator
    ep_seed = cfg["seed"] + k
    policy, eps = ("agent", 0.0) if cfg["agent"] else \
        demonstrator.sample_skill(ep_seed, cfg["random_frac"], cfg["eps_min"], cfg["eps_max"])
    ep = demonstrator.run_episode(ep_seed, policy, eps, cfg["episode_len"], cfg["image_size"],
                                  cfg["view"], _agent(cfg) if cfg["agent"] else None)
    eps = eps if policy == "demo" else float("nan")
    actions, rewards = (np.array(ep["actions"], np.int16)[:, None],
                        np.array(ep["rewards"], np.float32))
    actions[-1], rewards[-1] = -1, 0.0  # the last frame has no action
    return {"frames": np.asarray(ep["frames"], np.uint8), "actions": actions, "rewards": rewards,
            "policy": POLICIES[policy], "epsilon": eps, "fps": 10.0, "name": f"seed{ep_seed}",
            "labels": np.array(ep["labels"], np.int16)[:, None],
            "slips": ep["slips"].astype(np.int8), "events": ep["events"].astype(np.int8),
            "died": int(ep["died"])}


def _minerl_arrays(d):
    """rendered.npz of an episode folder ->
    {'reward': (n,), 'forward': (n,), 'camera': (n, 2), ...}, checked."""
    path = os.path.join(d, "rendered.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrs = {k[7:]: z[k] for k in z.files if k.startswith(("action$", "action_"))}
            if "reward" in z.files:
                arrs["reward"] = z["reward"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(f"cannot read '{path}': {e}")
    missing = [k for k in ["reward", *_BUTTONS8, "camera"] if k not in arrs]
    if missing:
        raise ConfigError(f"'{path}' lacks {', '.join(missing)} (expected reward and action$NAME "
                          "or action_NAME)")
    n = len(arrs["reward"])
    for k, v in arrs.items():
        if len(v) not in (n, n + 1) or (k == "camera" and v.shape[1:] != (2,)):
            raise ConfigError(f"'{path}': action {k} has shape {v.shape} but reward has {n} steps")
        arrs[k] = v[:n]
    return arrs


def plan_minerl(cfg):
    eps = _find(cfg["src"], "minerl", lambda d, f: f is None and all(
        os.path.isfile(os.path.join(d, x)) for x in ("recording.mp4", "rendered.npz")))
    if not eps:
        raise ConfigError(f"no MineRL episode folders (recording.mp4 + rendered.npz) under "
                          f"--src='{cfg['src']}'")
    values = {}
    for d in eps:  # the enum vocabularies come from the data (every npz checked before any work)
        arrs = _minerl_arrays(d)
        for name in [n for n in _MINERL_ENUMS if n in arrs]:
            values.setdefault(name, set()).update(arrs[name].tolist())
    spec = [{"name": b, "classes": 2} for b in _BUTTONS8] + [{"name": "camera", "classes": 121}]
    for name in [n for n in _MINERL_ENUMS if n in values]:
        v = values[name]
        if v and all(isinstance(x, int) and x >= 0 for x in v):
            vocab = list(range(max(v) + 1))
        else:
            vocab = sorted({str(x) for x in v} | {"none"}, key=lambda s: (s != "none", s))
        spec.append({"name": name, "classes": len(vocab), "values": vocab})
    return {"spec": spec, "episodes": eps, "fps": 20.0}


def episode_minerl(cfg, plan, k):
    d = plan["episodes"][k]
    arrs = _minerl_arrays(d)
    n = len(arrs["reward"]) + 1  # an episode has len(reward) + 1 states (§M)
    frames, fps = read_video(os.path.join(d, "recording.mp4"), cfg["image_size"])
    if len(frames) < n:
        raise ConfigError(f"'{d}/recording.mp4' has {len(frames)} frames but rendered.npz needs "
                          f"{n} (len(reward) + 1)")
    frames = frames[len(frames) - n:]  # extra frames come before the first i-frame: skip them (§M)
    actions = np.full((n, len(plan["spec"])), -1, np.int16)
    for c, comp in enumerate(plan["spec"]):
        name = comp["name"]
        if name == "camera":
            actions[:-1, c] = camera_to_class(arrs["camera"][:, 0], arrs["camera"][:, 1])
        elif name in _BUTTONS8:
            actions[:-1, c] = arrs[name] != 0
        elif name in arrs:
            lookup = {v if isinstance(v, int) else str(v): i for i, v in enumerate(comp["values"])}
            ints = isinstance(comp["values"][0], int)
            actions[:-1, c] = [lookup[x if ints else str(x)] for x in arrs[name].tolist()]
    rewards = np.append(arrs["reward"], 0.0).astype(np.float32)
    return {"frames": frames, "actions": actions, "rewards": rewards, "policy": -1,
            "epsilon": float("nan"), "fps": fps, "name": _name(d, cfg["src"])}


def plan_vpt(cfg):
    eps = _find(cfg["src"], "vpt", lambda d, f: f is not None and f.endswith(".mp4"))
    if not eps:
        raise ConfigError(f"no VPT episodes (NAME.mp4 + NAME.jsonl) under --src='{cfg['src']}'")
    lonely = [p for p in eps if not os.path.isfile(p[:-4] + ".jsonl")]
    if lonely:
        raise ConfigError(f"'{lonely[0]}' has no '{os.path.basename(lonely[0])[:-4]}.jsonl' "
                          "beside it")
    spec = [{"name": b, "classes": 2} for b in _BUTTONS8] + [{"name": "camera", "classes": 121}]
    return {"spec": spec + [{"name": b, "classes": 2} for b in _VPT_REST], "episodes": eps,
            "fps": 20.0}


def vpt_actions(steps, spec):
    """VPT jsonl records (one per frame) -> int16 (n, C) actions as OpenAI's loader does (§V)."""
    col = {c["name"]: i for i, c in enumerate(spec)}
    actions = np.zeros((len(steps), len(spec)), np.int16)
    cam = np.zeros((len(steps), 2))
    stuck, last_hotbar = False, 0
    for t, s in enumerate(steps):
        mouse, keys = s.get("mouse") or {}, (s.get("keyboard") or {}).get("keys") or []
        buttons, new = mouse.get("buttons") or [], mouse.get("newButtons") or []
        if t == 0:
            stuck = new == [0]          # attack recorded as held from the start ...
        elif stuck and 0 in new:
            stuck = False               # ... until the player first presses it
        pressed = {_VPT_KEYS[k] for k in keys if k in _VPT_KEYS}
        pressed |= {b for i, b in enumerate(["attack", "use", "pickItem"])
                    if i in buttons and not (i == 0 and stuck)}
        hotbar = s.get("hotbar", last_hotbar)
        if hotbar != last_hotbar:       # scroll-wheel changes show only as a new hotbar value
            pressed.add(f"hotbar.{hotbar + 1}")
        last_hotbar = hotbar
        for b in pressed:
            actions[t, col[b]] = 1
        if not s.get("isGuiOpen"):      # with the GUI open, dx/dy move a cursor, not the camera
            cam[t] = mouse.get("dy", 0) * _VPT_DEG_PER_PX, mouse.get("dx", 0) * _VPT_DEG_PER_PX
    actions[:, col["camera"]] = camera_to_class(cam[:, 0], cam[:, 1])
    return actions


def episode_vpt(cfg, plan, k):
    path = plan["episodes"][k]
    steps = []
    with open(path[:-4] + ".jsonl") as f:
        for i, line in enumerate(f):
            try:
                steps += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as e:
                raise ConfigError(f"'{path[:-4]}.jsonl' line {i + 1} is not JSON: {e}")
    frames, fps = read_video(path, cfg["image_size"])
    if abs(len(frames) - len(steps)) > _VPT_SLACK:
        raise ConfigError(f"'{path}' has {len(frames)} frames but its jsonl has {len(steps)} "
                          "actions")
    n = min(len(frames), len(steps))
    actions = vpt_actions(steps[:n], plan["spec"])
    actions[-1] = -1  # the last frame has no action
    return {"frames": frames[:n], "actions": actions, "rewards": np.zeros(n, np.float32),
            "policy": -1, "epsilon": float("nan"), "fps": fps, "name": _name(path, cfg["src"])}


def plan_video(cfg):
    eps = _find(cfg["src"], "video", lambda d, f: f is not None and f.lower().endswith(_VIDEO_EXTS))
    if not eps:
        raise ConfigError(f"no videos ({' '.join(_VIDEO_EXTS)}) under --src='{cfg['src']}'")
    spec = FrameStore(cfg["like"]).action_spec if cfg["like"] else []
    return {"spec": spec, "episodes": eps, "fps": None}


def episode_video(cfg, plan, k):
    frames, fps = read_video(plan["episodes"][k], cfg["image_size"])
    return {"frames": frames, "actions": np.full((len(frames), len(plan["spec"])), -1, np.int16),
            "rewards": np.zeros(len(frames), np.float32), "policy": -1, "epsilon": float("nan"),
            "fps": fps, "name": _name(plan["episodes"][k], cfg["src"])}


def plan_stores(cfg):
    """Stores made before (comma-separated --src), as one: the same frame size and action spec (a
    video store takes a labeled store's spec with --like), every episode with its actions (-1 where
    unlabeled), rewards and policy."""
    dirs = [d for d in cfg["src"].split(",") if d]
    if not dirs:
        raise ConfigError("--src is required for --source=stores: comma-separated frame stores")
    stores = [FrameStore(d) for d in dirs]
    for d, st in zip(dirs, stores):
        if st.image_size != cfg["image_size"]:
            raise ConfigError(f"store '{d}' holds {st.image_size}x{st.image_size} frames, not "
                              f"--image_size={cfg['image_size']}")
        if st.action_spec != stores[0].action_spec:
            raise ConfigError(f"store '{d}' has another action spec than '{dirs[0]}' "
                              f"({len(st.action_spec)} vs {len(stores[0].action_spec)} "
                              f"components); make a video store with --like={dirs[0]}")
    events = [st.event_names for st in stores if st.event_names]
    if any(e != events[0] for e in events):
        raise ConfigError("the stores in --src name different events: "
                          f"{' / '.join(map(str, events))}")
    eps = [(d, j) for d, st in zip(dirs, stores) for j in range(len(st.episodes))]
    names = [f"{os.path.basename(os.path.abspath(d))}/{j}" for d, j in eps]
    return {"spec": stores[0].action_spec, "episodes": eps, "names": names, "fps": None,
            "events": events[0] if events else []}


def episode_stores(cfg, plan, k):
    d, j = plan["episodes"][k]
    st = FrameStore(d)
    a, b = st.episodes[j]
    ep = {"frames": np.asarray(st.frames[a:b]), "actions": np.asarray(st.actions[a:b], np.int16),
          "rewards": np.asarray(st.rewards[a:b], np.float32), "policy": int(st.policies[j]),
          "epsilon": float(st.epsilons[j]), "fps": st.meta["fps"], "name": plan["names"][k]}
    if st.slips is not None:  # the agent's fields, where the store has them (else unknown: -1)
        ep.update(slips=st.slips[a:b], died=int(st.deaths[j]))
        ep.update({"labels": st.labels[a:b]} if st.labels is not None else {})
        ep.update({"events": st.events[a:b]} if st.event_names else {})
    return ep


SOURCES = {"crafter": (plan_crafter, episode_crafter), "minerl": (plan_minerl, episode_minerl),
           "vpt": (plan_vpt, episode_vpt), "video": (plan_video, episode_video),
           "stores": (plan_stores, episode_stores)}


# -----------------------------------------------------------------------------
# building a store: chunks in <data_dir>.partial, assembled in <data_dir>.tmp, renamed to <data_dir>

def _chunk_path(partial, k):
    return os.path.join(partial, f"ep_{k:07d}.npz")


# (cfg, plan, partial) of the running build, set in each worker once (not pickled per episode)
_WORK = None


def _init_worker(*work):
    global _WORK
    _WORK = work


def _job(k):
    """Make and save chunk k (in a worker). Returns (k, frames, error line or None)."""
    cfg, plan, partial = _WORK
    try:
        ep = SOURCES[cfg["source"]][1](cfg, plan, k)
    except ConfigError as e:  # a SystemExit: must not escape a pool worker
        if not cfg["skip_bad"]:
            return k, 0, str(e.code).removeprefix("error: ")
        print(f"warning: skipping episode {k}: {e.code}", file=sys.stderr)
        ep = {"frames": np.zeros((0, cfg["image_size"], cfg["image_size"], 3), np.uint8),
              "rewards": np.zeros(0)}
    # a chunk is complete or absent
    atomic_write(_chunk_path(partial, k), lambda f: np.savez(f, **ep), binary=True)
    return k, len(ep["frames"]), None


def _run_jobs(cfg, plan, partial):
    """Chunks k = 0, 1, ... (reusing finished ones) until the first K hold >= num_frames frames
    (crafter) or all episodes are done; returns (K, frames made by this run). Parallel over
    num_workers processes; the result depends only on the chunks 0..K-1, never on which worker
    finished first."""
    import multiprocessing
    from tqdm import tqdm
    n_jobs = len(plan["episodes"]) if plan["episodes"] is not None else sys.maxsize
    target = cfg["num_frames"] if cfg["source"] == "crafter" else float("inf")
    # chunks 0..K-1 are done: total frames
    lens, busy, results, made, K, total = {}, set(), queue.Queue(), 0, 0, 0
    for f in [f for f in os.listdir(partial) if f.startswith("ep_") and f.endswith(".npz")]:
        try:
            with np.load(os.path.join(partial, f)) as z:
                lens[int(f[3:10])] = len(z["rewards"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable: made again
    _init_worker(cfg, plan, partial)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                      else None)
    pool = (ctx.Pool(cfg["num_workers"], _init_worker, (cfg, plan, partial))
            if cfg["num_workers"] > 1 else None)
    bar = tqdm(total=None if target == float("inf") else target, unit="frame", desc=cfg["source"],
               initial=int(sum(lens.values())),
               mininterval=0.1 if sys.stderr.isatty() else 30)  # short logs
    try:
        while True:
            while K < n_jobs and K in lens and total < target:
                K, total = K + 1, total + lens[K]
            if K == n_jobs or total >= target:
                return K, made
            k, t = K, total  # start the first episodes not started that may still be needed
            while len(busy) < cfg["num_workers"] and k < n_jobs and t < target:
                if k not in lens and k not in busy:
                    busy.add(k)
                    if pool is None:
                        results.put(_job(k))
                    else:
                        pool.apply_async(_job, (k,), callback=results.put,
                                         error_callback=results.put)
                t, k = t + lens.get(k, 1), k + 1
            r = results.get()
            if isinstance(r, BaseException):
                raise r
            k, n, err = r
            if err:
                raise ConfigError(err)
            busy.discard(k)
            lens[k], made = n, made + n
            bar.update(n)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()  # speculative episodes past K are not needed
            pool.join()


def _assemble(cfg, plan, partial, K, tmp):
    """Chunks 0..K-1 -> a complete store in tmp (frames and actions written through memmaps, chunk
    by chunk)."""
    from numpy.lib.format import open_memmap
    lens = []
    for k in range(K):
        with np.load(_chunk_path(partial, k)) as z:
            lens.append(len(z["rewards"]))
    keep = [k for k in range(K) if lens[k]]  # skipped (--skip_bad) episodes have 0 frames
    ends = np.cumsum([lens[k] for k in keep], dtype=np.int64)
    if not keep:
        raise ConfigError(f"no usable episodes from --src='{cfg['src']}' (all skipped)")
    N, S, C = int(ends[-1]), cfg["image_size"], len(plan["spec"])
    os.makedirs(tmp)
    frames = open_memmap(os.path.join(tmp, "frames.npy"), "w+", np.uint8, (N, S, S, 3))
    actions = open_memmap(os.path.join(tmp, "actions.npy"), "w+", np.int16, (N, C))
    rewards, episodes = np.zeros(N, np.float32), np.stack([ends - [lens[k] for k in keep], ends], 1)
    policies, epsilons, fps, names, labeled = [], [], [], [], 0
    K = len(plan.get("events", []))
    slips, events, deaths = np.full(N, -1, np.int8), np.full((N, K), -1, np.int8), []  # -1 unknown
    labels = open_memmap(os.path.join(tmp, "labels.npy"), "w+", np.int16, (N, C))
    for k, (a, b) in zip(keep, episodes):
        with np.load(_chunk_path(partial, k)) as z:
            frames[a:b], actions[a:b], rewards[a:b] = z["frames"], z["actions"], z["rewards"]
            slips[a:b] = z["slips"] if "slips" in z.files else -1
            labels[a:b] = z["labels"] if "labels" in z.files else -1
            events[a:b] = z["events"] if "events" in z.files else -1
            deaths.append(int(z["died"]) if "died" in z.files else -1)
            labeled += int((z["actions"][:-1] >= 0).any(1).sum()) if C else 0
            policies.append(int(z["policy"])), epsilons.append(float(z["epsilon"]))
            fps.append(float(z["fps"])), names.append(str(z["name"]))
    frames.flush(), actions.flush(), labels.flush()
    policies, epsilons = np.array(policies, np.int8), np.array(epsilons, np.float32)
    for name, arr in [("rewards", rewards), ("episodes", episodes), ("policies", policies),
                      ("epsilons", epsilons), ("slips", slips), ("events", events),
                      ("deaths", np.array(deaths, np.int8))]:
        np.save(os.path.join(tmp, f"{name}.npy"), arr)
    meta = {"source": cfg["source"], "image_size": S, "fps": plan["fps"] or float(np.median(fps)),
            "num_frames": N, "num_episodes": len(keep),
            "labeled_frac": labeled / max(1, N - len(keep)), "action_spec": plan["spec"],
            "events": plan.get("events", []),
            "src": _abs_src(cfg) if cfg["source"] != "crafter" else "", "episode_names": names}
    if cfg["source"] == "crafter":
        demo = epsilons[policies == 1]
        meta["crafter"] = {k: cfg[k] for k in _CRAFTER_KEYS}
        meta["crafter"].update(agent=os.path.abspath(cfg["agent"]) if cfg["agent"] else "")
        meta["crafter"].update(
            episodes_random=int((policies == 0).sum()), episodes_demo=len(demo),
            frames_demo=int((episodes[:, 1] - episodes[:, 0])[policies == 1].sum()),
            epsilon_mean=float(demo.mean()) if len(demo) else None,
            epsilon_range=[float(demo.min()), float(demo.max())] if len(demo) else None)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def build(cfg):
    """Make the store cfg['data_dir'] from cfg['source'] (atomic, resumable; see the module
    docstring)."""
    t0 = time.time()
    if cfg["source"] not in SOURCES:
        raise ConfigError(f"unknown --source='{cfg['source']}'; use one of: {', '.join(SOURCES)}")
    if cfg["image_size"] < 8 or cfg["num_workers"] < 1:
        raise ConfigError("image_size must be >= 8 and num_workers >= 1")
    final = cfg["data_dir"].rstrip("/")
    partial, tmp = final + ".partial", final + ".tmp"
    old = None
    if os.path.exists(final):
        if not os.path.isfile(os.path.join(final, "meta.json")):
            raise ConfigError(f"--data_dir='{final}' exists and is not a frame store; choose "
                              "another --data_dir")
        old = FrameStore(final)
        if old.image_size != cfg["image_size"]:
            raise ConfigError(f"--data_dir='{final}' already holds image_size {old.image_size}, "
                              f"not {cfg['image_size']}; choose another --data_dir or delete it")
    plan = SOURCES[cfg["source"]][0](cfg)
    if old is not None:
        if old.action_spec != plan["spec"]:
            raise ConfigError(f"--data_dir='{final}' already holds a store with a different action "
                              f"spec ({len(old.action_spec)} vs {len(plan['spec'])} components); "
                              "choose another --data_dir")
        if old.slips is None:
            raise ConfigError(f"--data_dir='{final}' holds a store made before slips/events/deaths "
                              f"(the agent's targets); delete it or choose another --data_dir "
                              f"to rebuild")
        print(f"{final} already holds this store ({len(old)} frames, {len(old.episodes)} "
              "episodes): nothing to do")
        return old.meta
    # what the chunks depend on: a rerun may reuse them only if all of this is the same
    keys = _CRAFTER_KEYS if cfg["source"] == "crafter" else ["src"]
    settings = {k: _abs_src(cfg) if k == "src" else cfg[k] for k in ["source", "image_size"] + keys}
    names = plan.get("names") or [_name(p, cfg["src"]) for p in plan["episodes"] or []]
    settings.update(spec=plan["spec"], episodes=names)
    settings, path = json.loads(json.dumps(settings)), os.path.join(partial, "settings.json")
    created = not os.path.isdir(partial)
    if created:
        os.makedirs(partial + ".tmp", exist_ok=True)
        with open(os.path.join(partial + ".tmp", "settings.json"), "w") as f:
            json.dump(settings, f)
        os.replace(partial + ".tmp", partial)
    elif not os.path.isfile(path) or json.load(open(path)) != settings:
        raise ConfigError(f"'{partial}' holds chunks made with other settings (source, src, "
                          "image_size, seed, ...); rerun with those or delete it")
    try:
        K, made = _run_jobs(cfg, plan, partial)
        shutil.rmtree(tmp, ignore_errors=True)
        meta = _assemble(cfg, plan, partial, K, tmp)
    except ConfigError:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:  # nothing of this failed run stays behind; chunks of earlier runs are kept
            shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(tmp, final)
    shutil.rmtree(partial, ignore_errors=True)
    dt = time.time() - t0
    print(f"{cfg['source']}: wrote {meta['num_frames']} frames, {meta['num_episodes']} episodes to "
          f"{final}; {made} new frames in {dt:.1f}s = {made / dt:.0f} frames/s")
    return meta


# -----------------------------------------------------------------------------
# --info

def print_info(cfg):
    store = FrameStore(cfg["data_dir"])
    m, lens = store.meta, store.episodes[:, 1] - store.episodes[:, 0]
    print(f"{cfg['data_dir']}: source {m['source']}, {len(store)} frames of "
          f"{store.image_size}x{store.image_size}, {len(lens)} episodes (length "
          f"{lens.min()}..{lens.max()}, mean {lens.mean():.0f}), fps {m['fps']}")
    print(f"labeled transitions {m['labeled_frac']:.1%}; reward sum "
          f"{float(np.sum(store.rewards)):.1f}, nonzero {int(np.count_nonzero(store.rewards))}")
    print("action spec: " + (", ".join(f"{c['name']}:{c['classes']}" for c in store.action_spec)
                             or "[] (unlabeled)"))
    counts = {name: int((store.policies == code).sum())
              for name, code in {**POLICIES, "unknown": -1}.items()}
    eps = store.epsilons[store.policies == 1]
    print("policies: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + (f"; demo epsilon mean {eps.mean():.3f} in [{eps.min():.3f}, {eps.max():.3f}]"
             if len(eps) else ""))
    if store.slips is not None:
        print(f"slips {np.mean(store.slips == 1):.1%} of frames; {np.mean(store.deaths == 1):.0%} "
              f"of episodes ended in death; events ({len(store.event_names)} kinds) on "
              f"{np.mean((store.events == 1).any(1)):.1%} of frames")
    rows = np.unique(np.linspace(0, len(lens) - 1, min(8, len(lens))).round().astype(int))
    idx = [store.episodes[e, 0] + np.linspace(0, lens[e] - 1, 8).round().astype(int) for e in rows]
    grid = store.frames[np.stack(idx)]                                    # (rows, 8, H, W, 3)
    r, c, H, W, _ = grid.shape
    path = cfg["out"] or os.path.join(cfg["data_dir"], "info.png")
    import imageio
    imageio.imwrite(path, grid.transpose(0, 2, 1, 3, 4).reshape(r * H, c * W, 3))
    print(f"wrote {path} (rows: episodes {rows.tolist()}, 8 frames each)")


def run(cfg):
    return print_info(cfg) if cfg["info"] else build(cfg)


if __name__ == "__main__":
    sys.argv = [a + "=True" if a == "--info" else a for a in sys.argv]  # allow a bare --info
    run(configure(globals()))
