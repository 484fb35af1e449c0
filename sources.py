"""Importers of unlabeled or foreign data: MineRL and VPT recordings with their actions, and any
folder of videos; data.py builds stores from them (--source=minerl, vpt, video: its docstring gives
their choices)."""
import json
import os
import zipfile

import numpy as np
from common import ConfigError
from store import FrameStore

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


def _name(path, src):
    """An episode's name: its path relative to --src."""
    return os.path.relpath(path, src) if os.path.isdir(src) else os.path.basename(path)


# -----------------------------------------------------------------------------
# the importers: plan_X(cfg) and episode_X(cfg, plan, k), as data.py's sources section says

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
