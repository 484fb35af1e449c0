"""Score agents in real Crafter (§E), frames in, actions out, vs random play and the demonstrator.

    python eval_agent.py --bc_ckpt=out/agent_bc/ckpt.pt --rl_ckpt=out/agent_rl/ckpt.pt --episodes=50
    python eval_agent.py                 # the shipped agent (pretrained/agent.pt) -> out/eval.json

Every policy plays the same seeds (from 1,000,000 up: data collection uses small seeds), episodes
capped at max_steps. Prints one table (Crafter score, mean return, mean length, success rate of each
key achievement) and a paired comparison of RL against BC over the seeds (per-seed return, unlock
count and episode length: sign test and Wilcoxon signed-rank p-values, two-sided). Appends
crafter_score, eval_episodes, mean_return and the success rates to each agent's metrics.jsonl,
writes the whole table as JSON (out) and an mp4 of one agent episode.
Per-seed returns of RL and BC differ with a standard deviation of ~2.7, so a mean difference shows
(p < 0.05) on 50 seeds only above ~0.8, on 400 seeds above ~0.27. Another RL run scored against the
same BC and seeds reuses its rows:
    python eval_agent.py ... --rl_ckpt=out/agent_rl2/ckpt.pt --bc_eval=out/agent_rl/eval.json
To score any checkpoint on seeds of your own:
    policy = agent.load_policy("out/agent_rl/ckpt.pt")
    game.evaluate_lockstep(policy, seeds, 1000)
"""
import functools
import json
import math
import os
import time

import numpy as np
import torch

import common
from agent import load_agent, load_policy
from demonstrator import ACTIONS
from dynamics import write_video
from game import (KEY_ACHIEVEMENTS, SHORT, demo_policy, evaluate, evaluate_lockstep, make_env,
                  mix_policy, random_policy)

# ------------------------------------------------------------------------------------------- config
bc_ckpt = ""  # after phase 2, e.g. out/cpu/agent_bc/ckpt.pt ('' = skip)
rl_ckpt = "pretrained/agent.pt"  # after phase 3 ('' = skip; default: the shipped agent, README)
episodes = 50  # seeds per policy
max_steps = 1000  # episode length cap
seed = 1_000_000  # seeds seed .. seed + episodes - 1
temperature = 1.0  # of the agents' sampled actions (1: the policy as trained)
argmax = True  # also play the agents with argmax actions (a reproduction saw argmax collapse to
               # random play)
argmax_episodes = 0  # seeds for the argmax rows (the first ones); 0 = all of them
bc_eval = ""  # an eval.json of this bc_ckpt on the same seeds: its BC rows are reused, not replayed
baselines = True  # random play, the demonstrator at epsilon 0, and the data mix
view = True  # the baselines' demonstrator: the screen-only one, as in the default data (False: the
             # map-reading one)
baseline_episodes = 0  # seeds for the baselines (the first ones); 0 = all of them
workers = 2  # processes for the scripted baselines
lockstep = 50  # episodes an agent plays at once, batched; more seeds play in chunks (memory stays
               # bounded)
time_window = 0  # past frames the agents' dynamics model reads (0: each checkpoint's own, its
                 # finetuning window)
tokenizer_ckpt = ""  # default: the one each agent was trained with, or one beside it (a copied run
                     # folder)
out = ""  # the table as JSON (default: beside rl_ckpt, or bc_ckpt; out/eval.json for a shipped
          # checkpoint)
video = ""  # an mp4 of one agent episode (default: beside out)
device = "auto"
dtype = "auto"  # the agents' acting: 'auto' (bf16 where this device runs it fast, else fp32) |
                # 'bfloat16' | 'float32' (the same agent acts a little differently in each)
threads = 0
# --------------------------------------------------------------------------------------------------
config = common.configure(globals())
device = common.auto_device(device)
dtype = common.resolve_dtype(device, dtype)  # (a wrong name stops here, before any game is played)
if threads:
    torch.set_num_threads(threads)
common.at_least(config, episodes=1, max_steps=1, lockstep=1, baseline_episodes=0, argmax_episodes=0)
common.positive(config, "temperature")
agents = {name: path for name, path in (("BC", bc_ckpt), ("RL", rl_ckpt)) if path}
for name, path in agents.items():
    spec = load_agent(path, f"{name.lower()}_ckpt")["action_spec"]
    if [c["classes"] for c in spec] != [len(ACTIONS)]:
        raise common.ConfigError(f"{name.lower()}_ckpt '{path}' acts in "
                                 f"{[c['classes'] for c in spec]} classes, not Crafter's one "
                                 f"{len(ACTIONS)}-way action")


def run(path):
    """Whether path is a trainer's run-folder checkpoint (a shipped file's folder is left alone)."""
    return os.path.basename(path) == "ckpt.pt"


out = out or os.path.join(
    os.path.dirname(rl_ckpt or bc_ckpt) if run(rl_ckpt or bc_ckpt) else "out", "eval.json")
if not out.endswith(".json"):
    raise common.ConfigError(f"out={out!r}: name a .json file (the table's .md goes beside it)")
video = video or os.path.join(os.path.dirname(out), "agent_episode.mp4")
seeds = list(range(seed, seed + episodes))


def reused_bc_rows(path):
    """The BC rows of an earlier eval.json, checked to be this bc_ckpt on these seeds, cap,
    temperature and window."""
    try:
        prev = json.load(open(path))
        old, rows = prev["config"], {k: v for k, v in prev["rows"].items() if k.startswith("BC")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise common.ConfigError(f"bc_eval '{path}' is not an eval.json written by eval_agent.py "
                                 f"({e})")
    if rows.get("BC", {}).get("ckpt") != os.path.abspath(bc_ckpt):
        raise common.ConfigError(f"bc_eval '{path}' scored {rows.get('BC', {}).get('ckpt')}, "
                                 f"not bc_ckpt '{bc_ckpt}'")
    if rows["BC"].get("ckpt_mtime") != os.path.getmtime(bc_ckpt):
        raise common.ConfigError(f"bc_eval '{path}' scored an older {bc_ckpt} "
                                 "(the file changed since)")
    if "lengths" not in rows["BC"]:
        raise common.ConfigError(f"bc_eval '{path}' predates episode lengths: play BC again "
                                 "(without --bc_eval)")
    keys = ["episodes", "seed", "max_steps", "temperature", "time_window", "lockstep"] + \
        (["argmax_episodes"] if argmax and "BC argmax" in rows else [])
    for k in keys:
        if old.get(k) != config[k]:
            raise common.ConfigError(f"bc_eval '{path}' was played with {k}={old.get(k)!r}, "
                                     f"not {config[k]!r}")
    return rows


def sign_test(d):
    """Two-sided exact sign test of paired differences d (zeros dropped): p-value."""
    d = np.asarray(d)
    n, k = int((d != 0).sum()), int((d > 0).sum())
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def wilcoxon(d):
    """Two-sided Wilcoxon signed-rank test of paired differences d (zeros dropped; normal
    approximation, average ranks for ties): p-value."""
    d = np.asarray(d, np.float64)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    order = np.abs(d).argsort()
    ranks = np.empty(n)
    ranks[order] = np.arange(1, n + 1)
    for v in np.unique(np.abs(d)):  # average ranks of ties
        tie = np.abs(d) == v
        ranks[tie] = ranks[tie].mean()
    w = ranks[d > 0].sum()
    z = (w - n * (n + 1) / 4) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return math.erfc(abs(z) / math.sqrt(2))


def play_agent(path, temperature, seeds, name):
    policy = load_policy(path, device, temperature, time_window, dtype,
                         tokenizer_ckpt=tokenizer_ckpt)
    chunks = -(-len(seeds) // lockstep)
    # the eta is an upper bound: episodes end sooner
    tick = common.ticker(f"  {name}: step", max_steps * chunks)
    return evaluate_lockstep(
        policy, seeds, max_steps, policy.image_size,
        lambda step, left: tick(step, f"({left} of {len(seeds)} episodes left)"), lockstep)


if bc_eval and not bc_ckpt:
    raise common.ConfigError("bc_eval needs bc_ckpt: the BC checkpoint whose rows it holds")
reused = reused_bc_rows(bc_eval) if bc_eval else {}
rows = {}
print(f"{episodes} episodes per row, seeds {seeds[0]}..{seeds[-1]}, max_steps {max_steps}",
      flush=True)
if baselines:
    scripted = (("random", random_policy),
                ("demo eps=0", functools.partial(demo_policy, view=view)),
                ("data mix", functools.partial(mix_policy, view=view)))
    for name, make in scripted:
        t0 = time.time()
        rows[name] = {**evaluate(make, seeds[:baseline_episodes or episodes], max_steps,
                                 workers=workers), "seconds": time.time() - t0}
        print(f"{name}: score {rows[name]['score']:.2f}% ({rows[name]['seconds']:.0f}s)",
              flush=True)
for name, path in agents.items():
    for greedy in (False, True) if argmax else (False,):
        row = f"{name} argmax" if greedy else name
        if row in reused:
            rows[row] = reused[row]
            print(f"{row}: score {rows[row]['score']:.2f}% (from {bc_eval})", flush=True)
            continue
        t0 = time.time()
        row_seeds = seeds[:argmax_episodes or episodes] if greedy else seeds
        rows[row] = {**play_agent(path, 0 if greedy else temperature, row_seeds, row),
                     "seconds": time.time() - t0, "ckpt": os.path.abspath(path),
                     "ckpt_mtime": os.path.getmtime(path)}
        print(f"{row}: score {rows[row]['score']:.2f}% ({rows[row]['seconds']:.0f}s)", flush=True)
        if not greedy and run(path):
            r = rows[row]
            common.log_metrics(os.path.dirname(path), crafter_score=r["score"],
                               eval_episodes=episodes, mean_return=r["mean_return"],
                               mean_length=r["mean_length"], eval_max_steps=max_steps,
                               eval_seed=seed,
                               **{f"success_{k}": v for k, v in r["success_rates"].items()})

print(f"\n{'policy':<12}{'score%':>7}{'return':>7}{'length':>7}"
      + "".join(f"{SHORT[n]:>{len(SHORT[n]) + 1}}" for n in KEY_ACHIEVEMENTS))
for name, r in rows.items():
    print(f"{name:<12}{r['score']:>7.2f}{r['mean_return']:>7.2f}{r['mean_length']:>7.0f}" +
          "".join(f"{r['success_rates'][n]:>{len(SHORT[n]) + 1}.0f}" for n in KEY_ACHIEVEMENTS))
paired = {}
if "BC" in rows and "RL" in rows:
    for what in ("returns", "unlocks", "lengths"):  # lengths: survival
        d = np.array(rows["RL"][what]) - np.array(rows["BC"][what])
        paired[what] = {"mean_diff": float(d.mean()), "rl_better": int((d > 0).sum()),
                        "bc_better": int((d < 0).sum()), "sign_p": sign_test(d),
                        "wilcoxon_p": wilcoxon(d)}
        p = paired[what]
        print(f"RL - BC per seed ({what}): mean {p['mean_diff']:+.3f}, RL better on "
              f"{p['rl_better']}, BC on {p['bc_better']} of {episodes}; sign test p = "
              f"{p['sign_p']:.3g}, Wilcoxon p = {p['wilcoxon_p']:.3g}")

def markdown(rows, paired):
    """The table as markdown (eval.md beside eval.json), for results pages and the README."""
    keys = ["collect_wood", "place_table", "make_wood_pickaxe", "collect_stone",
            "make_stone_pickaxe", "collect_coal", "collect_iron", "collect_drink", "eat_cow",
            "defeat_zombie"]
    lines = [f"{episodes} episodes per policy on seeds {seeds[0]}-{seeds[-1]} (baselines: the "
             f"first {baseline_episodes or episodes}; argmax rows: the first "
             f"{argmax_episodes or episodes}), episodes capped at {max_steps} steps.", "",
             "| policy | episodes | Crafter score | return | length | "
             + " | ".join(SHORT[k] for k in keys) + " |",
             "|---" * (5 + len(keys)) + "|"]
    lines += [f"| {name} | {r['episodes']} | {r['score']:.2f}% | {r['mean_return']:.2f} | "
              f"{r['mean_length']:.0f} | "
              + " | ".join(f"{r['success_rates'][k]:.0f}%" for k in keys) + " |"
              for name, r in rows.items()]
    for what, p in paired.items():
        lines.append(f"\nRL - BC per seed ({what}): mean {p['mean_diff']:+.3f}; RL better on "
                     f"{p['rl_better']}, BC on {p['bc_better']} of {episodes} seeds; "
                     f"sign test p = {p['sign_p']:.3g}, Wilcoxon p = {p['wilcoxon_p']:.3g}.")
    return "\n".join(lines) + "\n"


for path, text in ((out, json.dumps({"config": config, "rows": rows, "paired": paired}, indent=1)),
                   (os.path.splitext(out)[0] + ".md", markdown(rows, paired))):
    common.atomic_write(path, lambda f: f.write(text))
print(f"wrote {out} and {os.path.splitext(out)[0]}.md")

if agents:  # one agent episode, sampled actions, as the table plays it
    name, path = list(agents.items())[-1]
    policy = load_policy(path, device, temperature, time_window, dtype,
                         tokenizer_ckpt=tokenizer_ckpt)
    env = make_env(seeds[0], max_steps, policy.image_size)
    frames, done = [env.reset()], False
    while not done:
        obs, _, done, _ = env.step(policy.act(frames[-1]))
        frames.append(obs)
    path = write_video(video, np.repeat(np.repeat(np.stack(frames), 4, 1), 4, 2), fps=15)
    print(f"wrote {path}: {name}, seed {seeds[0]}, {len(frames) - 1} steps")
