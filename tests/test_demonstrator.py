"""The scripted demonstrator (demonstrator.py); game.py's episode collection, Crafter score and
evaluation (pytest; ~30 s on 2 cores)."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import demonstrator as D  # noqa: E402
import game as G  # noqa: E402
from common import ConfigError  # noqa: E402

SEEDS = [0, 1, 2, 3, 4, 5]
STEPS = 150  # the demonstrator makes its wood pickaxe within ~80 steps on these seeds
EARLY = ["collect_wood", "place_table", "make_wood_pickaxe"]


@pytest.fixture(scope="module")
def episodes():
    return {(policy, eps): [G.run_episode(s, policy, eps, STEPS) for s in SEEDS]
            for policy, eps in [("demo", 0.0), ("demo", 1.0), ("random", 1.0)]}


def _count(eps_list, name):
    return sum(name in ep["achievements"] for ep in eps_list)


def test_api_constants():
    assert len(D.ACTIONS) == 17 and D.ACTIONS[0] == "noop" and D.ACTIONS[5] == "do"
    assert len(D.ACHIEVEMENTS) == 22 and set(G.KEY_ACHIEVEMENTS) <= set(D.ACHIEVEMENTS)
    assert G.DEFAULT_EPISODE_LEN >= 500


def test_demonstrator_climbs_the_tech_tree_random_does_not(episodes):
    demo, rand = episodes["demo", 0.0], episodes["random", 1.0]
    for name in EARLY:
        assert _count(demo, name) >= len(SEEDS) - 1, (
            name, [sorted(ep["achievements"]) for ep in demo])
    assert _count(rand, "place_table") <= 1 and _count(rand, "make_wood_pickaxe") <= 1
    assert (sum(map(len, (ep["achievements"] for ep in demo)))
            > 2 * sum(map(len, (ep["achievements"] for ep in rand))))


def test_run_episode_format(episodes):
    for (policy, eps), eps_list in episodes.items():
        for ep in eps_list:
            f, a, r = ep["frames"], ep["actions"], ep["rewards"]
            T = len(a) - 1
            assert 1 <= T <= STEPS
            assert f.dtype == np.uint8 and f.shape == (T + 1, 64, 64, 3)
            assert a.dtype == np.int64 and a.shape == (T + 1,) and a[-1] == -1
            assert a[:-1].min() >= 0 and a[:-1].max() < len(D.ACTIONS)
            assert r.dtype == np.float32 and r.shape == (T + 1,) and r[-1] == 0
            assert isinstance(ep["achievements"], set) and ep["achievements"] <= set(D.ACHIEVEMENTS)
            # every achievement unlocked gives +1 reward once; health changes give +-0.1 per point
            assert abs(r.sum() - len(ep["achievements"])) < 0.1 * 9 * (T + 1)
            assert (np.abs(r - np.round(r)) > 1e-4).sum() <= T  # rewards are k + 0.1 j
    ep = G.run_episode(9, "demo", 0.0, 10, size=32)
    assert ep["frames"].shape == (11, 32, 32, 3) and len(ep["actions"]) == 11


def test_run_episode_is_deterministic():
    a, b = (G.run_episode(7, "demo", 0.3, 300) for _ in range(2))
    assert np.array_equal(a["actions"], b["actions"]) and np.array_equal(a["frames"], b["frames"])
    assert np.array_equal(a["rewards"], b["rewards"]) and a["achievements"] == b["achievements"]
    c = G.run_episode(8, "demo", 0.3, 300)
    assert not np.array_equal(a["frames"][1:50], c["frames"][1:50])


def test_epsilon_one_behaves_like_random(episodes):
    demo0, demo1, rand = episodes["demo", 0.0], episodes["demo", 1.0], episodes["random", 1.0]
    for eps_list, sleeps in [(demo1, False), (rand, True)]:
        acts = np.concatenate([ep["actions"][:-1] for ep in eps_list])
        freq = np.bincount(acts, minlength=len(D.ACTIONS)) / len(acts)
        others = np.delete(freq, D.ACTIONS.index("sleep"))
        assert others.min() > 0.015 and others.max() < 0.15, freq  # all actions, about uniformly
        # the demonstrator's slips never sleep
        assert (freq[D.ACTIONS.index("sleep")] > 0) == sleeps
    n0, n1, nr = (np.mean([len(ep["achievements"]) for ep in e]) for e in (demo0, demo1, rand))
    assert n1 < n0 / 2 and abs(n1 - nr) <= 2, (n0, n1, nr)
    assert sum(_count(demo1, name) for name in EARLY[1:]) <= 2


def test_skill_mix():
    skills = [G.sample_skill(s) for s in range(400)]
    assert skills == [G.sample_skill(s) for s in range(400)]
    rand = [e for p, e in skills if p == "random"]
    assert 0.12 < len(rand) / len(skills) < 0.28 and set(rand) == {1.0}
    demo = [e for p, e in skills if p == "demo"]
    assert 0 <= min(demo) and max(demo) <= 0.5 and 0.2 < np.mean(demo) < 0.3
    # data.py's flags
    other = [G.sample_skill(s, random_frac=0.5, eps_min=0.1, eps_max=0.2) for s in range(400)]
    assert 0.4 < np.mean([p == "random" for p, _ in other]) < 0.6
    assert all(0.1 <= e <= 0.2 for p, e in other if p == "demo")


def test_crafter_score():
    assert G.crafter_score([0] * 22) == 0
    assert abs(G.crafter_score([100] * 22) - 100) < 1e-9
    assert abs(G.crafter_score([100] + [0] * 21) - (101 ** (1 / 22) - 1)) < 1e-12
    rates = {name: (50.0 if i % 2 else 10.0) for i, name in enumerate(D.ACHIEVEMENTS)}
    hand = math.exp((11 * math.log(51) + 11 * math.log(11)) / 22) - 1
    assert abs(G.crafter_score(rates) - hand) < 1e-9
    assert G.crafter_score([0, 50]) < 50 / 2  # the geometric mean punishes a missing achievement


def _frames_only(env):
    def act(obs):
        assert obs.dtype == np.uint8 and obs.shape == (32, 32, 3)
        return 3 if obs[16].mean() > obs[:, 16].mean() else 5  # move_up or do, from pixels alone
    return act


def test_evaluate_frames_only_policy():
    r = G.evaluate(_frames_only, [3, 4, 5], 40, size=32)
    assert set(r) >= {"score", "mean_return", "mean_length", "success_rates", "episodes", "seeds",
                      "max_steps"}
    assert r["episodes"] == 3 and r["seeds"] == [3, 4, 5] and r["max_steps"] == 40
    assert 0 < r["mean_length"] <= 40 and set(r["success_rates"]) == set(D.ACHIEVEMENTS)
    assert (len(r["lengths"]) == 3 and np.mean(r["lengths"]) == r["mean_length"]
            and max(r["lengths"]) <= 40)
    for v in r["success_rates"].values():
        assert 0 <= v <= 100 and min(abs(v - k * 100 / 3) for k in range(4)) < 1e-9
    assert r["score"] == G.crafter_score(r["success_rates"]) and 0 <= r["score"] <= 100
    # processes give the same numbers
    assert r == G.evaluate(_frames_only, [3, 4, 5], 40, size=32, workers=2)


def test_evaluate_matches_run_episode(episodes):
    ep = episodes["demo", 0.0][2]
    r = G.evaluate(G.demo_policy, [SEEDS[2]], STEPS)
    assert {k for k, v in r["success_rates"].items() if v == 100} == ep["achievements"]
    assert (abs(r["mean_return"] - ep["rewards"].sum()) < 1e-4
            and r["mean_length"] == len(ep["actions"]) - 1)


def test_user_errors():
    with pytest.raises(ConfigError):
        G.run_episode(0, "human", 0.0, 10)
    with pytest.raises(ConfigError):
        G.run_episode(0, "demo", 1.5, 10)
    with pytest.raises(ConfigError):
        G.run_episode(0, "demo", 0.0, 0)


def test_command_line():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = lambda *args: subprocess.run([sys.executable, "game.py", *args], cwd=root,
                                       capture_output=True, text=True, timeout=120)
    out = run("--episodes=2", "--max_steps=30", "--workers=1", "--fps_episodes=1")
    assert out.returncode == 0, out.stderr
    assert all(row in out.stdout for row in ("random", "demo eps=0", "data mix", "frames/s"))
    bad = run("--episode=2")
    assert bad.returncode != 0 and "episodes" in bad.stderr and "Traceback" not in bad.stderr


def test_episodes_record_slips_events_and_deaths(episodes):
    """run_episode's per-step records: which actions were random slips, which achievements happened
    on each transition (each time), and whether the episode ended in death."""
    for (policy, eps), eps_list in episodes.items():
        for ep in eps_list:
            T = len(ep["actions"]) - 1
            slips, events = ep["slips"], ep["events"]
            assert (slips.shape == (T + 1,) and events.shape == (T + 1, 22) and not slips[-1]
                    and not events[-1].any())
            share = slips[:-1].mean()  # eps 1: random but where it fights or sleeps sealed in
            assert share == 1 if policy == "random" else share > 0.8 if eps == 1.0 else share == 0
            assert ({D.ACHIEVEMENTS[j] for j in range(22) if events[:, j].any()}
                    == ep["achievements"])
            assert ep["died"] == (T < STEPS)  # only death ends an episode before its length


def test_screen_only_demonstrator_sees_the_screen():
    """view=True: everything the player decides on lies in the 9x7 tiles on screen (what it
    remembers aside), and it still climbs the tech tree."""
    env = G.make_env(0, 100, 64)
    act = D.Demonstrator(env, 0.0, 0, view=True)
    env.reset()
    for _ in range(40):
        env.step(act())
    act._see()
    x, y = act.pos
    assert act.vis.sum() <= 63 and act.vis[x - 4:x + 5, y - 3:y + 4].all()
    for mask in [act.free, act.dig, act.passable, act.tiles_of("water"),
                 act.tiles_of("tree", "stone"), *act.objs.values()]:
        assert not (mask & ~act.vis).any()
    eps_list = [G.run_episode(s, "demo", 0.0, STEPS, view=True) for s in SEEDS]
    assert (_count(eps_list, "collect_wood") >= len(SEEDS) - 1
            and _count(eps_list, "place_table") >= 3)


def test_screen_only_demonstrator_does_not_pace():
    """Heading for the rock it remembers at dusk, it takes a path on the screen (or gives up a way
    that is blocked) instead of stepping back and forth between two tiles (seed 2,000,008 paced
    for 40 steps from step 150 and died in the night)."""
    env = G.make_env(2_000_008, 250, 64)
    act = D.Demonstrator(env, 0.0, 2_000_008, view=True)
    obs, done, tiles = env.reset(), False, []
    while not done:
        obs, _, done, _ = env.step(act(obs))
        tiles.append(tuple(env._player.pos))
    pacing = longest = 0
    for t in range(2, len(tiles)):
        pacing = pacing + 1 if tiles[t] == tiles[t - 2] != tiles[t - 1] else 0
        longest = max(longest, pacing)
    assert len(tiles) == 250 and longest < 10, (len(tiles), longest)
