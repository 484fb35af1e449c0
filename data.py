"""Building frame stores (store.py opens them) from a source: Crafter collection, stores made
before (as one), and MineRL, VPT and plain video (their importers: sources.py).

    python data.py --source=crafter --data_dir=data/crafter --num_frames=100000
    python data.py --source=minerl  --data_dir=data/minerl --src=PATH/MineRLTreechop-v0
    python data.py --source=vpt     --data_dir=data/vpt    --src=PATH/contractor_data
    python data.py --source=video   --data_dir=data/video  --src=PATH/videos [--like=data/vpt]
    python data.py --source=stores  --data_dir=data/mixed  --src=data/crafter,data/video  (as one)
    python data.py --info --data_dir=data/crafter            (summary + a PNG grid of frames)

A store is a folder of memmapped arrays (frames, actions with -1 unlabeled, rewards, episodes, the
demonstrator's slips, events, deaths) and meta.json; docs/data.md lists them, how building resumes,
and what each source reads. Convention (as §M): action t and reward t lead from frame t to frame
t+1; an episode's last frame has action -1 and reward 0.
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
from sources import (_name, episode_minerl, episode_video, episode_vpt, plan_minerl,
                     plan_video, plan_vpt)
from store import FrameStore

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
    import game
    ep_seed = cfg["seed"] + k
    policy, eps = ("agent", 0.0) if cfg["agent"] else \
        game.sample_skill(ep_seed, cfg["random_frac"], cfg["eps_min"], cfg["eps_max"])
    ep = game.run_episode(ep_seed, policy, eps, cfg["episode_len"], cfg["image_size"],
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

def _abs_src(cfg):
    """--src as absolute path(s)."""
    return ",".join(os.path.abspath(x) for x in cfg["src"].split(","))


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
