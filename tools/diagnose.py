"""Diagnostics of the agent: D1, the ceiling of imitation from the view; D3, what its agent state
knows; D4, how far its own states are from the data's; D5, what the world model adds to a clone;
D6, how far its dream follows the game.

The behavior-cloning agent sees 64x64 frames (Crafter's 9x7 local view and the inventory) and
clones a demonstrator that reads the whole game state. Could even a perfect-perception policy that
sees only the local view imitate it? This script clones the demonstrator from true game-state
features (a diagnosis only: the real agent never reads game internals), one MLP per variant:
    view  the 9x7 tiles around the player (materials, objects), inventory, daylight, facing,
          sleeping and the previous action: all that the frames show, perfectly perceived
    done  view + the 22 achievement flags the demonstrator branches on (hidden from the frames)
    wide  view, but 21x21 tiles: much more map than the frames show
    icons view, but which items the inventory holds, not how many (health still counted): what
          64x64 frames show clearly
and plays each MLP in real Crafter next to the demonstrator itself.

    python tools/diagnose.py --out=/tmp/d1.md

prints one table: held-out accuracy on the script's (non-slip) actions, the copy-the-previous-
action baseline, the Crafter score, return, length, survival and key success rates.

    python tools/diagnose.py --probe=out/cpu/agent_bc/ckpt.pt

D3: linear probes of an agent checkpoint's agent state h_t (the input of its heads) on the held-out
episodes of its store, replayed from their seeds and actions for the truth: inventory counts,
health, food, drink, energy, daylight, a zombie next to the player, and the achievements done.
Ridge regression fit on half the episodes, scored on the other half: R^2 for counts, accuracy
(against always guessing the majority) for yes/no.

    python tools/diagnose.py --agree=out/cpu/agent_bc/ckpt.pt --eval_episodes=50

D4: the agent plays real Crafter (frames in, actions out) while the screen-only demonstrator at
epsilon 0 says what it would do in each state the agent reaches: agreement on the agent's own
states (BC is trained on the demonstrator's), the two action mixes, and what the agent's and the
demonstrator's own 'do' presses face.

    python tools/diagnose.py --latent_clone=out/cpu/agent_bc/ckpt.pt --steps=2000 --eval_episodes=400

D5: an MLP clones the demonstrator from the agent's own tokenizer latents of the last
`clone_frames` frames and the previous action (the checkpoint's store; no world model, no memory),
then plays real Crafter from the frames: what the world model and the agent tokens add.

    python tools/diagnose.py --dream=out/cpu/agent_rl/ckpt.pt --eval_episodes=80 --every=24

D6: the agent plays real Crafter; from its own states the world model dreams `horizon` steps, the
policy acting (as in imagination RL) and open loop on the actions it took: how many steps of the
dream's return follow the game's (correlation over the starts), the frames' PSNR, the unlocks.
"""
import os
import sys
import time
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from crafter import objects as O
from torch import nn

# the repo's modules (this script is in tools/)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import ConfigError, configure  # noqa: E402
from demonstrator import ACHIEVEMENTS, ACTIONS, Demonstrator  # noqa: E402
from game import (demo_policy, evaluate, make_env, mix_policy, run_episode,  # noqa: E402
                  sample_skill)

# ---------------------------------------------------------------------------------------------
# config of the command (python tools/diagnose.py --key=value)
seed0 = 0                 # clone the demonstrator's episodes of seeds seed0, ... (as the data's)
train_episodes = 120      # seeds played ('random' episodes skipped); the last 10% held out
eval_seed = 2_000_000     # play seeds eval_seed, ...: no run uses them (data 0+, agent 1_000_000+)
eval_episodes = 100       # episodes per table row
max_steps = 1000          # episode length
variants = "view,done,wide"  # feature variants to clone with (see the docstring)
baselines = True          # also play the demonstrator at eps .25 and the data mix
view = False              # the demonstrator's screen-only mode (Demonstrator(..., view=True))
steps = 4000              # MLP training steps (batch 512)
out = ""                  # write the table as markdown here ("" = do not write)
probe = ""                # an agent checkpoint: D3 (its linear probes) instead of D1
agree = ""                # an agent checkpoint: D4 (the demonstrator labels its states) instead
latent_clone = ""         # an agent checkpoint: D5 (a clone on its tokenizer's latents) instead
clone_frames = 1          # D5: the frames whose latents the clone reads (the current one first)
dream = ""                # an agent checkpoint: D6 (where its dream and the real game part) instead
horizon = 32              # D6: steps dreamed from each start (imagination RL's horizon)
every = 24                # D6: a start every `every` steps of each episode
threads = 1               # torch threads
# ---------------------------------------------------------------------------------------------

_W = 10  # the stored rectangle: 21x21 tiles around the player, cropped per variant
_HALF = {"view": (4, 3), "done": (4, 3), "wide": (10, 10), "icons": (4, 3)}  # half-sizes of a view
_OUTSIDE = 13  # material code of off-map tiles: crafter's ids are 0 (None) and 1..12 (materials)
_OBJ = {O.Zombie: 1, O.Skeleton: 2, O.Cow: 3, O.Arrow: 6, O.Player: 7}  # 4, 5: plant unripe, ripe
_FACING = [(-1, 0), (1, 0), (0, -1), (0, 1)]
_BASE = 16 + 1 + 4 + 1 + len(ACTIONS)  # inventory, daylight, facing, sleeping, previous action
_SHOWN = ["collect_wood", "place_table", "make_wood_pickaxe", "collect_stone", "place_stone",
          "defeat_zombie", "wake_up", "collect_drink", "eat_cow"]


# ---- features from game internals -----------------------------------------------------------
def _obj_code(o):
    if isinstance(o, O.Plant):
        return 5 if o.ripe else 4
    return _OBJ.get(type(o), 0)


def _raw(env, prev_action):
    """The state around the player, for any variant: grid uint8 (2, 21, 21) of material and object
    codes (index [x, y] relative to the player), scalars float32 (_BASE + 22,) (the last 22: the
    achievement flags)."""
    w, p = env._world, env._player
    xs, ys = np.ix_(p.pos[0] + np.arange(-_W, _W + 1), p.pos[1] + np.arange(-_W, _W + 1))
    inside = (xs >= 0) & (xs < w.area[0]) & (ys >= 0) & (ys < w.area[1])
    cx, cy = np.clip(xs, 0, w.area[0] - 1), np.clip(ys, 0, w.area[1] - 1)
    grid = np.zeros((2, 2 * _W + 1, 2 * _W + 1), np.uint8)
    grid[0] = np.where(inside, w._mat_map[cx, cy], _OUTSIDE)
    idx = np.where(inside, w._obj_map[cx, cy], 0)
    for i, j in zip(*np.nonzero(idx)):
        grid[1, i, j] = _obj_code(w._objects[idx[i, j]])
    s = np.zeros(_BASE + len(ACHIEVEMENTS), np.float32)
    s[:16] = np.array(list(p.inventory.values()), np.float32) / 9
    s[16] = w.daylight
    s[17 + _FACING.index(tuple(int(v) for v in p.facing))] = 1
    s[21] = p.sleeping
    if prev_action >= 0:
        s[22 + prev_action] = 1
    s[_BASE:] = [p.achievements[a] > 0 for a in ACHIEVEMENTS]
    return grid, s


def _encode(grid, scal, variant):
    """A batch of raw states (torch) -> (B, D) float features of `variant`: one-hot tiles, then
    the scalars."""
    rx, ry = _HALF[variant]
    g = grid[:, :, _W - rx:_W + rx + 1, _W - ry:_W + ry + 1].long()
    mat = F.one_hot(g[:, 0], _OUTSIDE + 1).flatten(1)
    obj = F.one_hot(g[:, 1], 8)[..., 1:].flatten(1)  # code 0 (no object) has no column
    scal = scal if variant == "done" else scal[:, :_BASE]
    if variant == "icons":  # which items it holds, not how many (but health): digits are ~3 pixels
        scal = torch.cat([scal[:, :1], (scal[:, 1:16] > 0).float(), scal[:, 16:]], 1)
    return torch.cat([mat.float(), obj.float(), scal], 1)


def features(env, prev_action, variant):
    """float32 feature vector of the env's current state (prev_action -1: none yet)."""
    grid, scal = _raw(env, prev_action)
    return _encode(torch.from_numpy(grid)[None], torch.from_numpy(scal)[None], variant)[0].numpy()


# ---- collection and cloning -----------------------------------------------------------------
def collect():
    """Play the data mix's demonstrator episodes; per step the raw state before the action, the
    action, the previous action, whether it was a slip, and the episode number."""
    rows, n_ep = [], 0
    for seed in range(seed0, seed0 + train_episodes):
        policy, epsilon = sample_skill(seed)
        if policy == "random":
            continue
        env = make_env(seed, max_steps, 64)
        act = Demonstrator(env, epsilon, seed, view=view)
        obs, done, prev = env.reset(), False, -1
        while not done:
            a = int(act(obs))
            rows.append((*_raw(env, prev), a, prev, act.slip, n_ep))
            obs, _, done, _ = env.step(a)
            prev = a
        n_ep += 1
    if n_ep < 2:
        raise ConfigError(f"{n_ep} demonstrator episodes in {train_episodes} seeds: need 2+")
    grid, scal, a, prev, slip, ep = zip(*rows)
    return {"grid": torch.from_numpy(np.stack(grid)), "scal": torch.from_numpy(np.stack(scal)),
            "act": torch.tensor(a), "prev": torch.tensor(prev), "slip": np.array(slip),
            "ep": np.array(ep)}


def fit(inputs, act, tr, va, hidden, weight_decay, name):
    """An MLP (2 x hidden) trained `steps` steps of batch 512 to predict act (N,) from inputs(rows)
    on the rows tr; returns it and its held-out accuracy (%) on the rows va."""
    net = nn.Sequential(nn.Linear(inputs(tr[:1]).shape[1], hidden), nn.SiLU(),
                        nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, len(ACTIONS)))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    rng = np.random.default_rng(0)
    for i in range(steps):
        b = torch.from_numpy(tr[rng.integers(len(tr), size=512)])
        loss = F.cross_entropy(net(inputs(b)), act[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (i + 1) % 1000 == 0 or i + 1 == steps:
            print(f"  {name} step {i + 1}: loss {loss.item():.3f}", flush=True)
    hits = 0
    with torch.no_grad():
        for k in range(0, len(va), 4096):
            b = torch.from_numpy(va[k:k + 4096])
            hits += (net(inputs(b)).argmax(1) == act[b]).sum().item()
    return net.eval(), 100.0 * hits / len(va)


def train(d, variant):
    """An MLP cloning the non-slip actions of the first 90% of episodes; returns it, its held-out
    accuracy and the copy-the-previous-action accuracy on the held-out non-slip steps."""
    n_ep = d["ep"].max() + 1
    held = d["ep"] >= n_ep - max(1, round(0.1 * n_ep))
    tr, va = np.flatnonzero(~d["slip"] & ~held), np.flatnonzero(~d["slip"] & held)
    net, acc = fit(lambda b: _encode(d["grid"][b], d["scal"][b], variant), d["act"], tr, va, 256,
                   0.01, variant)  # 0.01: AdamW's default
    copy = (d["act"][va] == d["prev"][va]).float().mean().item()
    return net, acc, 100.0 * copy


class MLPPolicy:
    """act(obs) -> action from the MLP on the env's true features: sampled from softmax(logits)
    by a generator seeded with the env's seed, or the argmax."""

    def __init__(self, env, net, variant, sample):
        self.env, self.net, self.variant, self.sample = env, net, variant, sample
        self.rng, self.prev = np.random.default_rng(env._seed), -1

    def __call__(self, obs=None):
        with torch.no_grad():
            x = torch.from_numpy(features(self.env, self.prev, self.variant))[None]
            p = torch.softmax(self.net(x)[0].double(), 0).numpy()
        self.prev = int(self.rng.choice(len(p), p=p / p.sum())) if self.sample else int(p.argmax())
        return self.prev


# ---- the table ------------------------------------------------------------------------------
def _row(name, r, acc=None, copy=None):
    alive = 100.0 * np.mean([n >= min(300, max_steps) for n in r["lengths"]])
    cells = ["-" if acc is None else f"{acc:.1f}", "-" if copy is None else f"{copy:.1f}",
             f"{r['score']:.1f}", f"{r['mean_return']:.2f}", f"{r['mean_length']:.0f}",
             f"{alive:.0f}"]
    return [name] + cells + [f"{r['success_rates'][a]:.0f}" for a in _SHOWN]


def _markdown(rows, head=None):
    head = head or (["policy", "acc%", "copy%", "score%", "return", "length", "alive300%"] +
                    [a.replace("collect_", "").replace("make_", "").replace("defeat_", "kill_")
                     for a in _SHOWN])
    lines = [head, ["---"] * len(head)] + rows
    return '\n'.join("| " + " | ".join(cells) + " |" for cells in lines)


def _play(name, make):
    t0 = time.time()
    r = evaluate(make, range(eval_seed, eval_seed + eval_episodes), max_steps, 64, workers=1)
    print(f"{name}: score {r['score']:.1f}%, return {r['mean_return']:.2f} "
          f"({time.time() - t0:.0f}s)", flush=True)
    return r


def main():
    """Collect, clone per variant, play all; print the table, write it to `out`, return it."""
    names = [v for v in variants.split(",") if v]
    if not names or any(v not in _HALF for v in names):
        raise ConfigError(f"variants={variants!r}: a comma list of {', '.join(_HALF)}")
    if train_episodes < 1 or eval_episodes < 1 or max_steps < 1 or steps < 1:
        raise ConfigError("train_episodes, eval_episodes, max_steps and steps must be >= 1")
    torch.set_num_threads(threads)
    torch.manual_seed(0)  # the MLPs' initialisation
    t0 = time.time()
    d = collect()
    print(f"collected {len(d['act'])} steps of {d['ep'].max() + 1} demonstrator episodes "
          f"(view={view}), slip share {100 * d['slip'].mean():.1f}% ({time.time() - t0:.0f}s)")
    rows = []
    if baselines:
        demo = partial(demo_policy, epsilon=0.25, view=view)
        rows = [_row("demo eps .25", _play("demo eps .25", demo)),
                _row("data mix", _play("data mix", partial(mix_policy, view=view)))]
    for v in names:
        t0 = time.time()
        net, acc, copy = train(d, v)
        print(f"{v}: held-out acc {acc:.1f}%, copy {copy:.1f}% ({time.time() - t0:.0f}s)")
        modes = [(True, f"{v} (sampled)"), (False, f"{v} (argmax)")] if v == "view" \
            else [(True, v)]
        for sample, name in modes:
            r = _play(name, lambda env, v=v, s=sample, n=net: MLPPolicy(env, n, v, s))
            rows.append(_row(name, r, acc, copy))
    table = _markdown(rows)
    print(table)
    if out:
        with open(out, "w") as f:
            f.write(table + '\n')
    return table


# ---- D3: linear probes of the agent state ---------------------------------------------------
_INV = ["health", "food", "drink", "energy", "wood", "stone", "sapling", "wood_pickaxe"]


def replay(store, e):
    """The truth along stored Crafter episode e, replayed from its seed and actions: (n, 10 + 22)
    float32: the _INV counts, daylight, a zombie next to the player, the achievements done. Checks
    that the replay shows the stored frames."""
    (a, b), seed = store.episodes[e], int(store.meta["episode_names"][e].removeprefix("seed"))
    env = make_env(seed, store.meta["crafter"]["episode_len"], store.image_size)
    obs, rows = env.reset(), []
    for t in range(a, b):
        if not np.array_equal(obs, store.frames[t]):
            raise ConfigError(f"episode {e} (seed {seed}) does not replay: the store was made by "
                              f"another demonstrator or crafter")
        p, w = env._player, env._world
        zombie = any(isinstance(o, O.Zombie) and np.abs(o.pos - p.pos).sum() <= 1
                     for o in w.objects)
        rows.append([p.inventory[k] for k in _INV] + [w.daylight, zombie] +
                    [p.achievements[k] > 0 for k in ACHIEVEMENTS])
        if t < b - 1:
            obs = env.step(int(store.actions[t, 0]))[0]
    return np.array(rows, np.float32)


@torch.no_grad()
def agent_states(ckpt_path):
    """(h (N, n D) of every held-out frame at least 4 frames into its window, truth (N, 32), the
    episode of each row, whether the policy's argmax is the stored action (N,) (-1: a slip)):
    windows of the checkpoint's length over the held-out episodes."""
    from agent import agent_pass, build, data_targets, load_agent
    from store import FrameStore
    from tokenizer import cached_latents, load_tokenizer, tokenizer_path
    from common import autocast_ctx, resolve_dtype
    ckpt = load_agent(ckpt_path)
    store = FrameStore(ckpt["data_dir"])
    store.agent_fields()
    models = build(ckpt).eval()
    tok_path = tokenizer_path(ckpt, ckpt_path)
    tok, _ = load_tokenizer(tok_path, "cpu")
    ctx = autocast_ctx("cpu", resolve_dtype("cpu", "auto"))
    z_all = cached_latents(tok, tok_path, store, ckpt["data_dir"], "cpu", ctx)
    memory = data_targets(store.rewards, store.events, store.episodes, store.deaths)["memory"]
    T, hs, ys, eps, hits = ckpt["window"], [], [], [], []
    for e in store.episode_ids("val"):
        truth, (a, b) = replay(store, e), store.episodes[e]
        for s in range(a, b - T + 1, T):
            idx = np.arange(s, s + T)
            z = torch.from_numpy(z_all[idx].astype(np.float32))[None]
            act = torch.from_numpy(store.actions[idx].astype(np.int64))[None]
            with ctx:
                h = agent_pass(models["dynamics"], models["agent"], z, act,
                               memory=torch.from_numpy(memory[idx])[None])
            hs.append(h[0, 4:].flatten(1).float().numpy())
            ys.append(truth[idx[4:] - a])
            eps += [e] * (T - 4)
            best = models["agent"].policy_logits(h[0, 4:], offset=0)[0].argmax(-1).numpy()
            hits.append(np.where(store.slips[idx[4:]] == 1, -1, best == store.actions[idx[4:], 0]))
    return np.concatenate(hs), np.concatenate(ys), np.array(eps), np.concatenate(hits)


def probes():
    """D3: ridge probes fit on half of the held-out episodes, scored on the other half."""
    X, Y, ep, hits = agent_states(probe)
    for name, where in (("a zombie next to the player", Y[:, 9] == 1), ("none", Y[:, 9] == 0)):
        h = hits[where & (hits >= 0)]
        print(f"BC accuracy on the demonstrator's own choices, {name}: {h.mean():.3f} "
              f"({len(h)} frames)")
    fit = np.isin(ep, np.unique(ep)[::2])
    mu, sd = X[fit].mean(0), X[fit].std(0) + 1e-6
    Xs = np.c_[(X - mu) / sd, np.ones(len(X))]
    W = np.linalg.solve(Xs[fit].T @ Xs[fit] + 10.0 * np.eye(Xs.shape[1]), Xs[fit].T @ Y[fit])
    pred, rows = Xs[~fit] @ W, []
    for j, name in enumerate(_INV + ["daylight", "zombie_adjacent"] + ACHIEVEMENTS):
        y, p = Y[~fit, j], pred[:, j]
        if name in _INV or name == "daylight":
            r2 = 1 - ((y - p) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-9)
            rows.append([name, "R^2", f"{r2:.2f}", "0.00"])
        else:
            base = max(y.mean(), 1 - y.mean())
            rows.append([name, "accuracy", f"{((p > 0.5) == (y > 0.5)).mean():.2f}", f"{base:.2f}"])
    table = _markdown(rows, ["target", "score", "probe", "baseline"])
    print(f"D3 on {probe}: {fit.sum()} frames to fit, {(~fit).sum()} to score "
          f"({len(np.unique(ep))} held-out episodes)\n{table}")
    if out:
        with open(out, "w") as f:
            f.write(table + '\n')
    return table


# ---- D4: the demonstrator's labels of the agent's own states ---------------------------------
def _facing(env):
    """What the player faces: a material name or an object's class name."""
    mat, obj = env._world[tuple(env._player.pos + env._player.facing)]
    return type(obj).__name__ if obj is not None else mat or "the map edge"


def agreement():
    """D4: the agent's episodes labeled by the demonstrator; prints the summary."""
    from agent import load_policy, sample_actions
    torch.set_num_threads(threads)
    policy, rows, demo_do = load_policy(agree), [], []

    def agent_with_labels(env):
        labeler = Demonstrator(env, 0.0, env._seed, view=True)
        policy.reset(env._seed)

        def act(obs):
            label = int(labeler(obs))  # (every step: its memory follows what is on screen)
            logits = policy.agent.policy_logits(policy.observe(obs[None]), offset=0)
            policy.prev = sample_actions(logits, policy.temperature, policy.gen)
            best = int(logits[0].argmax(-1))
            rows.append((labeler.t, label, int(policy.prev[0, 0]), best, _facing(env)))
            return rows[-1][2]
        return act

    def demo_pressing_do(env):  # the data's player itself, for the 'do' reference
        demo = Demonstrator(env, 0.25, env._seed, view=True)

        def act(obs):
            a = int(demo(obs))
            if a == _DO and not demo.slip:
                demo_do.append(_facing(env))
            return a
        return act

    seeds = range(eval_seed, eval_seed + eval_episodes)
    r = evaluate(agent_with_labels, seeds, max_steps, policy.image_size)
    evaluate(demo_pressing_do, seeds, max_steps, policy.image_size)
    t, label, a, best = (np.array([row[i] for row in rows]) for i in range(4))
    faced = np.array([row[4] for row in rows])
    print(f"D4 on {agree}: {eval_episodes} episodes (seeds {eval_seed}..), "
          f"score {r['score']:.2f}%, {len(rows)} steps")
    for name, m in (("all steps", t > 0), ("steps 1-50", t <= 50), ("steps 51+", t > 50)):
        if m.any():
            agree_m, argmax_m = np.mean(a[m] == label[m]), np.mean(best[m] == label[m])
            print(f"  {name}: agreement with the demonstrator's label {agree_m:.3f} "
                  f"(argmax {argmax_m:.3f}, {m.sum()} steps)")
    shares = [np.bincount(x, minlength=len(ACTIONS)) / len(x) for x in (label, a)]
    top = np.argsort(-shares[0])[:7]
    print("  action: labels / agent: " +
          ", ".join(f"{ACTIONS[i]} {shares[0][i]:.2f} / {shares[1][i]:.2f}" for i in top))
    for name, where in (("agent", faced[a == _DO]),
                        ("demonstrator, its own episodes", np.array(demo_do))):
        kinds, n = np.unique(where, return_counts=True)
        most = sorted(zip(n, kinds))[::-1][:6]
        print(f"  'do' of the {name} faces: " + ", ".join(f"{k} {c / n.sum():.2f}"
                                                            for c, k in most))


_DO = ACTIONS.index("do")


# ---- D5: a memoryless clone on the tokenizer's latents ---------------------------------------
def _latent_input(hist, prev):
    """hist (F, N, L * Dz) latents, the current frame first; prev (N,) the previous action (-1
    none) -> the MLP's input (N, F * L * Dz + 18)."""
    return torch.cat([*hist, F.one_hot(prev + 1, len(ACTIONS) + 1).float()], 1)


class LatentPolicy:
    """Frames in, actions out (evaluate_lockstep): each frame through the tokenizer, the clone's
    action sampled from its softmax."""

    def __init__(self, tok, net, scale, ctx):
        self.tok, self.net, self.scale, self.ctx = tok, net, scale, ctx

    def reset(self, seed=0):
        self.prev, self.hist, self.gen = None, None, torch.Generator().manual_seed(seed)

    def keep(self, rows):
        self.prev, self.hist = self.prev[rows], self.hist[:, rows]

    @torch.no_grad()
    def act(self, frames):
        with self.ctx:
            z = self.tok.encode(torch.from_numpy(np.asarray(frames))[:, None])[:, 0]
        z = z.float().flatten(1) / self.scale  # (N, L * Dz)
        if self.prev is None:  # an episode's first frame stands in for the frames before it
            self.prev, self.hist = torch.full((len(z),), -1), z[None].repeat(clone_frames, 1, 1)
        self.hist = torch.cat([z[None], self.hist[:-1]])
        p = torch.softmax(self.net(_latent_input(self.hist, self.prev)).float(), -1)
        self.prev = torch.multinomial(p, 1, generator=self.gen)[:, 0]
        return self.prev.numpy()[:, None]


def latent_clone_row():
    """D5: clone the store's non-slip demonstrator actions from latents, play; prints the row."""
    from agent import load_agent
    from common import autocast_ctx, resolve_dtype
    from game import evaluate_lockstep
    from store import FrameStore
    from tokenizer import cached_latents, load_tokenizer, tokenizer_path
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ckpt = load_agent(latent_clone)
    store, tok_path = FrameStore(ckpt["data_dir"]), tokenizer_path(ckpt, latent_clone)
    store.agent_fields()
    tok, _ = load_tokenizer(tok_path, "cpu")
    ctx = autocast_ctx("cpu", resolve_dtype("cpu", "auto"))
    z = cached_latents(tok, tok_path, store, ckpt["data_dir"], "cpu", ctx)
    z = torch.from_numpy(np.asarray(z, np.float32)).flatten(1)  # (N, L * Dz)
    scale = z.std()
    z, a = z / scale, torch.from_numpy(store.actions[:, 0].astype(np.int64))
    ep = np.repeat(np.arange(len(store.episodes)), np.diff(store.episodes, axis=1)[:, 0])
    start = torch.from_numpy(store.episodes[ep, 0])  # (N,) each frame's episode start
    prev = torch.where(torch.arange(len(a)) > start, torch.roll(a, 1), -1)

    def inputs(i):  # frame numbers (B,) -> (B, D)
        i = torch.as_tensor(i)
        hist = [z[torch.maximum(i - j, start[i])] for j in range(clone_frames)]
        return _latent_input(hist, prev[i])
    ok = (store.policies[ep] == 1) & (store.slips == 0) & (store.actions[:, 0] >= 0)
    held = np.isin(ep, store.episode_ids("val"))
    tr, va = np.flatnonzero(ok & ~held), np.flatnonzero(ok & held)
    net, acc = fit(inputs, a, tr, va, 512, 0.05, "latent clone")
    copy = 100.0 * (prev[va] == a[va]).float().mean().item()
    seeds = range(eval_seed, eval_seed + eval_episodes)
    r = evaluate_lockstep(LatentPolicy(tok, net, scale, ctx), seeds, max_steps,
                          store.image_size, chunk=50)
    table = _markdown([_row(f"latent clone, {clone_frames} frame(s)", r, acc, copy)])
    print(f"D5 on {latent_clone}: {len(tr)} training frames of {len(store.episodes)} episodes, "
          f"{steps} MLP steps, seeds {eval_seed}..\n{table}")
    return r

# ---- D6: where the dream and the game part ---------------------------------------------------
def _dream_batch(models, starts, out):
    """Dream each start (z_ctx, a_ctx, m_ctx, a_fut, z_fut, world window) twice into out."""
    from agent import alive_weights, imagine, twohot_mean
    tok, dyn, agent, ctx, window = models
    z_ctx, a_ctx, m_ctx, a_fut, z_fut = (torch.stack(x) for x in zip(*starts))
    with ctx:  # the policy acting, then open loop on a_fut
        for name, acts in (("dream", None), ("open", a_fut)):
            roll = imagine(dyn, agent, z_ctx, a_ctx, horizon, m_ctx=m_ctx, actions=acts,
                           world_window=window)
            alive = alive_weights(roll["cont"].float())  # (B, H) as RL weighs them
            head = twohot_mean(agent.reward_logits(roll["h"][:, 1:])[..., 0, :], agent.bins)
            out.setdefault(name, []).append((alive * roll["rewards"]).float().numpy())
            unl = alive[..., None] * roll["unlocks"]  # (B, H, K)
            out.setdefault(name + "_unl", []).append(unl.float().numpy())
            out.setdefault(name + "_head", []).append((alive * head).float().numpy())
        x_dream, x_real = (tok.decode(z).float().clamp(0, 1) for z in (roll["z"], z_fut))
    mse = ((x_dream - x_real) ** 2).mean((-1, -2, -3)).clamp(min=1e-10)  # (B, H)
    out.setdefault("psnr", []).append((-10 * torch.log10(mse)).numpy())


@torch.no_grad()
def dream_vs_game():
    """D6: the agent plays real Crafter; from its states every `every` steps (8 real frames of
    context, the episode memory) the world model dreams `horizon` steps twice: the policy acting in
    the dream, as imagination RL does, and open loop on the actions it really took. Prints the real
    return over the first k steps beside each dream's (weighted by its continuation, as in RL): the
    means and their correlation over the starts; the open-loop frames' PSNR at step k against the
    real ones; the unlocks per achievement. Returns the arrays (starts as (seed, frame))."""
    from agent import data_targets, load_policy
    from common import autocast_ctx, resolve_dtype
    torch.set_num_threads(threads), torch.manual_seed(0)
    pol = load_policy(dream)
    models = (pol.tok, pol.dyn, pol.agent, autocast_ctx("cpu", resolve_dtype("cpu", "auto")),
              pol.world_window)  # the world model's window, as in RL
    C, H, pending = 8, horizon, []
    out = {k: [] for k in ("real", "real_unl", "valid", "starts")}  # (and _dream_batch's)
    for seed in range(eval_seed, eval_seed + eval_episodes):
        e = run_episode(seed, "agent", 0.0, max_steps, size=pol.image_size, agent=pol)
        T = len(e["actions"]) - 1  # transitions; frame t + 1 follows action t
        with models[3]:
            z = pol.tok.encode(torch.from_numpy(e["frames"])[:, None])[:, 0].float()  # (T+1, L, Dz)
        mem = data_targets(e["rewards"], e["events"].astype(np.int8), np.array([[0, T + 1]]),
                           np.array([int(e["died"])]))["memory"]
        seen = np.maximum.accumulate(e["events"], 0)  # (T + 1, K) the real unlocks: first times
        unl = e["events"] & ~np.concatenate([np.zeros((1, seen.shape[1]), bool), seen[:-1]])
        pad = lambda x: np.concatenate([x, np.zeros((H,) + x.shape[1:], x.dtype)])
        r, unl, act = pad(e["rewards"]), pad(unl), pad(np.maximum(e["actions"], 0))
        for s in [s for s in range(C - 1, T, every) if s + H <= T or e["died"]]:
            ctx_ids, fut = np.arange(s - C + 1, s + 1), np.minimum(np.arange(s + 1, s + H + 1), T)
            pending.append((z[ctx_ids], torch.from_numpy(e["actions"][ctx_ids])[:, None],
                            torch.from_numpy(mem[ctx_ids]),
                            torch.from_numpy(act[s:s + H])[:, None], z[fut]))
            out["real"].append(r[s:s + H]), out["real_unl"].append(unl[s:s + H])
            out["valid"].append(np.arange(s, s + H) < T), out["starts"].append((seed, s))
            if len(pending) == 32:
                _dream_batch(models, pending, out)
                pending = []
    if pending:
        _dream_batch(models, pending, out)
    res = {k: np.concatenate(v) if k.startswith(("dream", "open", "psnr")) else np.array(v)
           for k, v in out.items()}  # (S, H): per start, by step
    print(f"D6 on {dream}: {len(res['real'])} starts, {eval_episodes} episodes (seeds "
          f"{eval_seed}..)\n| first k steps | real return | dream, policy acts | corr | "
          "dream, real actions | corr | PSNR (real actions) |\n|---|---|---|---|---|---|---|")
    corr = lambda x, y: np.corrcoef(x, y)[0, 1] if x.std() * y.std() > 0 else float("nan")
    for k in [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= H]:
        g = {n: res[n][:, :k].sum(1) for n in ("real", "dream", "open")}
        v = res["valid"][:, k - 1]
        print(f"| {k} | {g['real'].mean():.3f} | {g['dream'].mean():.3f} | "
              f"{corr(g['dream'], g['real']):.2f} | {g['open'].mean():.3f} | "
              f"{corr(g['open'], g['real']):.2f} | {res['psnr'][v, k - 1].mean():.2f} |")
    per100 = {k: res[k + "_unl"].sum((0, 1)) * 100 / len(res["real"]) for k in ("real", "dream",
                                                                                "open")}
    print("unlocks per 100 starts (real / dream, policy acts / dream, real actions): " + ", ".join(
        f"{ACHIEVEMENTS[j]} {per100['real'][j]:.1f} / {per100['dream'][j]:.1f} / "
        f"{per100['open'][j]:.1f}" for j in np.argsort(-per100["real"] - per100["dream"])[:10]))
    u = {n: res[n + "_unl"].sum((1, 2)).mean() for n in ("real", "dream", "open")}
    print(f"reward over {H} steps: real {res['real'].sum(1).mean():.3f} (unlocks {u['real']:.3f})"
          + "".join(f"; {n} {res[n].sum(1).mean():.3f} (unlocks p > 0.5 {u[n]:.3f}, reward head "
                    f"{res[n + '_head'].sum(1).mean():.3f})" for n in ("dream", "open")))
    return res


if __name__ == "__main__":
    configure(globals())
    result = (probes() if probe else agreement() if agree else latent_clone_row() if latent_clone
              else dream_vs_game() if dream else main())
