"""Real Crafter: a deterministic env, one episode of play (collection), the Crafter score, and
evaluation of any policy.

run_episode plays one episode with the scripted demonstrator (demonstrator.py), sticky random play
or an agent, and records what data.py stores; sample_skill draws each collection episode's player
(the data mix). evaluate and evaluate_lockstep score any frames-in, actions-out policy by the
Crafter score; the agent's evaluation never reads game internals.

    python game.py --episodes=50 --max_steps=1000

prints one table: random play, the demonstrator at epsilon 0, and the default data mix.
"""
import functools
import multiprocessing as mp
import time

import crafter
import numpy as np

from common import ConfigError, configure
from demonstrator import ACHIEVEMENTS, Demonstrator

# Collection episodes are 1000 steps: the demonstrator has its wood pickaxe by step ~30-80, stone
# tools by ~40-450 and wakes from its first night's sleep at ~230; mixed-skill episodes often die
# before 1000 anyway; and more resets give more world diversity per frame than long survival would.
DEFAULT_EPISODE_LEN = 1000
KEY_ACHIEVEMENTS = ["collect_wood", "place_table", "make_wood_pickaxe", "make_wood_sword",
                    "collect_stone", "place_stone", "make_stone_pickaxe", "place_furnace",
                    "collect_coal", "collect_iron", "make_iron_pickaxe", "collect_drink", "eat_cow",
                    "wake_up", "defeat_zombie", "eat_plant"]
SHORT = {n: n.replace("collect_", "").replace("make_", "").replace("place_", "pl.")
         .replace("_pickaxe", "_pick").replace("defeat_", "kill_") for n in KEY_ACHIEVEMENTS}

# --------------------------------------------------------------------------------------------------
# config of the command (python game.py --key=value)
episodes = 50        # episodes per table row
max_steps = DEFAULT_EPISODE_LEN  # episode length
size = 64            # frame size
seed = 1_000_000     # evaluation seeds are seed, seed + 1, ...: apart from the small seeds data
                     # collection uses
workers = 2          # processes over episodes
view = True          # the screen-only demonstrator (the data's); False: the one that reads the
                     # whole map
fps_episodes = 2     # episodes timed (one core) for the frames/s of run_episode
# --------------------------------------------------------------------------------------------------


class _Env(crafter.Env):
    """crafter.Env, made deterministic given its seed: when a chunk holds too many creatures it
    despawns one drawn from a set ordered by memory address; hand it the chunk's objects ordered by
    position instead."""

    def _balance_chunk(self, chunk, objs):
        super()._balance_chunk(chunk, sorted(objs, key=lambda o: (int(o.pos[0]), int(o.pos[1]))))


def make_env(seed, max_steps, size):
    """Crafter seeded, at most max_steps steps an episode, frames of size x size pixels."""
    return _Env(area=(64, 64), size=(size, size), length=max_steps, seed=seed)


def sample_skill(seed, random_frac=0.2, eps_min=0.0, eps_max=0.5):
    """The data mix (data.py's defaults), drawn per episode from its seed: (policy, epsilon):
    'random' play with probability random_frac, else the demonstrator with
    epsilon ~ U(eps_min, eps_max)."""
    rng = np.random.default_rng([seed, 2])
    if rng.random() < random_frac:
        return "random", 1.0
    return "demo", float(rng.uniform(eps_min, eps_max))


def run_episode(seed, policy, epsilon, max_steps, size=64, view=False, agent=None):
    """Play one episode of Crafter with the demonstrator ('demo'; a fraction epsilon of its steps
    sticky random; view: the screen-only player), sticky random play ('random'), or an agent
    ('agent': agent, a Policy of agent.load_policy, plays from the frames while the demonstrator,
    epsilon 0, says what it would press in each state it reaches: labels, DAgger's). Deterministic
    given its arguments (an agent: given its seed). Returns frames uint8 (T+1, size, size, 3),
    actions int64 (T+1,) (action t leads from frame t to t+1; the last is -1), labels int64 (T+1,)
    (the demonstrator's choice in frame t where an agent acted; -1 elsewhere),
    rewards float32 (T+1,) (reward t of that transition; the last is 0), slips bool (T+1,) (action t
    was a random slip), events bool (T+1, 22) (achievement k happened on transition t, each time, in
    ACHIEVEMENTS order), died (the episode ended in death, not at max_steps), achievements (set of
    names unlocked)."""
    if policy not in ("random", "demo", "agent") or (policy == "agent") != (agent is not None):
        raise ConfigError(f"policy={policy!r}: use 'random', 'demo', or 'agent' with an agent")
    if max_steps < 1:
        raise ConfigError(f"max_steps={max_steps} must be >= 1")
    env = make_env(seed, max_steps, size)
    act = Demonstrator(env, 0.0 if agent else epsilon, seed, scripted=policy != "random", view=view)
    frames, actions, labels, rewards, slips = [env.reset()], [], [], [], []
    counts, done, info = ([np.zeros(len(ACHIEVEMENTS), np.int64)], False,
                          {"achievements": {}, "discount": 1.0})
    if agent:
        agent.reset(seed)
    while not done:
        choice = act(frames[-1])  # (each step: the demonstrator's memory follows what is on screen)
        actions.append(agent.act(frames[-1]) if agent else choice)
        labels.append(choice if agent else -1)
        slips.append(act.slip)
        obs, reward, done, info = env.step(actions[-1])
        frames.append(obs)
        rewards.append(reward)
        counts.append(np.array([info["achievements"][k] for k in ACHIEVEMENTS]))
    events = np.diff(np.stack(counts), axis=0) > 0  # (T, 22)
    return {"frames": np.stack(frames).astype(np.uint8),
            "actions": np.array(actions + [-1], np.int64),
            "labels": np.array(labels + [-1], np.int64),
            "rewards": np.array(rewards + [0.0], np.float32), "slips": np.array(slips + [False]),
            "events": np.concatenate([events, np.zeros((1, 22), bool)]),
            "died": info["discount"] == 0,
            "achievements": {k for k, v in info["achievements"].items() if v > 0}}


def crafter_score(success_rates_percent):
    """Crafter score: exp(mean_i ln(1 + s_i)) - 1 over the achievements' success rates s_i (%)."""
    s = np.asarray(list(success_rates_percent.values()) if isinstance(success_rates_percent, dict)
                   else success_rates_percent, np.float64)
    return float(np.exp(np.mean(np.log1p(s))) - 1)


_JOB = None  # (make_policy, max_steps, size) of the running evaluate(); forked workers inherit it


def _play(seed):
    make_policy, steps, size_ = _JOB
    env = make_env(seed, steps, size_)
    act = make_policy(env)
    obs, done, ret, length, info = env.reset(), False, 0.0, 0, {"achievements": {}}
    while not done:
        obs, reward, done, info = env.step(int(act(obs)))
        ret, length = ret + reward, length + 1
    return ret, length, {k for k, v in info["achievements"].items() if v > 0}


def _check_eval(seeds, max_steps):
    if not seeds or max_steps < 1:
        raise ConfigError(f"evaluate needs seeds and max_steps >= 1 (got {len(seeds)} seeds, "
                          f"max_steps={max_steps})")


def _summary(results, seeds, max_steps):
    """Per-episode (return, length, achievements) -> the evaluation dict (see evaluate)."""
    rates = {name: 100.0 * np.mean([name in r[2] for r in results]) for name in ACHIEVEMENTS}
    return {"score": crafter_score(rates), "mean_return": float(np.mean([r[0] for r in results])),
            "mean_length": float(np.mean([r[1] for r in results])), "success_rates": rates,
            "episodes": len(seeds), "seeds": seeds, "max_steps": max_steps,
            "returns": [float(r[0]) for r in results], "lengths": [int(r[1]) for r in results],
            "unlocks": [len(r[2]) for r in results]}


def evaluate(make_policy, seeds, max_steps, size=64, workers=1):
    """Play one episode of real Crafter (area 64x64, frames size x size, length max_steps) per seed
    with act = make_policy(env), act(obs uint8 (size, size, 3)) -> action id; a learned agent's
    make_policy ignores env. Returns score (%), mean_return, mean_length, success_rates
    {achievement: % of episodes}, episodes, seeds, max_steps, and per seed returns, lengths and
    unlocks (achievements unlocked). workers > 1 forks processes over episodes (keep 1 for a policy
    holding threads, e.g. torch; a batched policy plays faster with evaluate_lockstep)."""
    global _JOB
    seeds = list(seeds)
    _check_eval(seeds, max_steps)
    _JOB = (make_policy, max_steps, size)
    if workers > 1 and "fork" in mp.get_all_start_methods():
        with mp.get_context("fork").Pool(min(workers, len(seeds))) as pool:
            results = pool.map(_play, seeds, chunksize=1)
    else:
        results = [_play(s) for s in seeds]
    return _summary(results, seeds, max_steps)


def evaluate_lockstep(policy, seeds, max_steps, size=64, on_step=None, chunk=0):
    """evaluate() for a batched policy: the seeds' episodes run at once, in lockstep (chunk > 0: at
    most `chunk` of them at a time, chunk after chunk), and
    policy.act(frames (N, size, size, 3) uint8) -> actions (N, 1) is called once per step for all of
    them (after policy.reset(), once per chunk). When episodes end, policy.keep(rows) (if it has
    one) keeps only the running ones in its batch; a policy without keep() is fed the ended
    episodes' last frames (their actions dropped), so its batch keeps its shape.
    on_step(step, left): an optional progress callback; step counts on over the chunks (to max_steps
    times their number), left is the episodes not ended. Same result dict as evaluate()."""
    seeds = list(seeds)
    _check_eval(seeds, max_steps)
    chunk = chunk or len(seeds)
    results = []
    for k in range(0, len(seeds), chunk):
        later = max(0, len(seeds) - k - chunk)  # the episodes of the chunks still to come
        results += _lockstep(policy, seeds[k:k + chunk], max_steps, size, on_step,
                             k // chunk * max_steps, later)
    return _summary(results, seeds, max_steps)


def _lockstep(policy, seeds, max_steps, size, on_step, step0, later):
    """One lockstep batch of episodes (evaluate_lockstep): [(return, length, achievements)] per
    seed; on_step sees steps from step0 on, and `later` more episodes left."""
    envs = [make_env(s, max_steps, size) for s in seeds]
    obs = np.stack([env.reset() for env in envs])
    ret, length, done = np.zeros(len(envs)), np.zeros(len(envs), int), np.zeros(len(envs), bool)
    infos = [{"achievements": {}} for _ in envs]
    policy.reset()
    alive = np.arange(len(envs))  # the policy's batch: the episodes still running
    # it can drop ended episodes (else it is fed their last frames to the end)
    prune = hasattr(policy, "keep")
    while not done.all():
        rows = alive if prune else np.arange(len(envs))
        actions = np.asarray(policy.act(obs[rows])).reshape(len(rows), -1)[:, 0]
        for i, a in zip(rows, actions):
            if not done[i]:
                obs[i], reward, done[i], infos[i] = envs[i].step(int(a))
                ret[i], length[i] = ret[i] + reward, length[i] + 1
        if prune and done[alive].any():
            policy.keep(np.flatnonzero(~done[alive]))
            alive = alive[~done[alive]]
        if on_step:
            on_step(step0 + int(length.max()), later + int((~done).sum()))
    return [(ret[i], length[i], {k for k, v in infos[i]["achievements"].items() if v > 0})
            for i in range(len(envs))]


def random_policy(env):  # make_policy factories for evaluate(); they read the env's seed
    return Demonstrator(env, 1.0, env._seed, scripted=False)


def demo_policy(env, epsilon=0.0, view=False):
    return Demonstrator(env, epsilon, env._seed, view=view)


def mix_policy(env, view=False):
    policy, epsilon = sample_skill(env._seed)
    return Demonstrator(env, epsilon, env._seed, scripted=policy == "demo", view=view)


if __name__ == "__main__":
    configure(globals())
    if episodes < 1 or max_steps < 1 or workers < 1:
        raise ConfigError("episodes, max_steps and workers must be >= 1")
    seeds = list(range(seed, seed + episodes))
    print(f"{episodes} episodes per row, seeds {seed}..{seed + episodes - 1}, "
          f"max_steps {max_steps}, size {size}")
    head = f"{'policy':<12}{'score%':>7}{'return':>7}{'length':>7}" + "".join(
        f"{SHORT[n]:>{len(SHORT[n]) + 1}}" for n in KEY_ACHIEVEMENTS)
    print(head)
    rows = [("random", random_policy), ("demo eps=0", functools.partial(demo_policy, view=view)),
            ("data mix", functools.partial(mix_policy, view=view))]
    for name, make in rows:
        t0 = time.time()
        r = evaluate(make, seeds, max_steps, size, workers)
        print(f"{name:<12}{r['score']:>7.1f}{r['mean_return']:>7.2f}{r['mean_length']:>7.0f}" +
              "".join(f"{r['success_rates'][n]:>{len(SHORT[n]) + 1}.0f}"
                      for n in KEY_ACHIEVEMENTS) + f"   ({time.time() - t0:.0f}s)", flush=True)
    # frames/s of collection on one core; crafter alone: the same episodes replayed from their
    # actions (deterministic)
    t_run = t_env = 0.0
    frames = 0
    for s in range(seed, seed + fps_episodes):
        t0 = time.time()
        ep = run_episode(s, "demo", 0.0, max_steps, size, view)
        t1 = time.time()
        env = make_env(s, max_steps, size)
        env.reset()
        for a in ep["actions"][:-1]:
            env.step(a)
        t_run, t_env, frames = t_run + t1 - t0, t_env + time.time() - t1, frames + len(ep["frames"])
    print(f"run_episode demo: {frames / t_run:.0f} frames/s on one core; crafter alone, same "
          f"episodes: {frames / t_env:.0f} frames/s ({fps_episodes} episodes)")
