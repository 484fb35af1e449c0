"""Agent (§A): two-hot, lambda-returns, PMPO, agent tokens, closed-loop primitives, imagination,
the real-game policy, and the finetune -> imagine -> evaluate pipeline on a tiny Crafter store."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from agent import (Agent, agent_pass, bc_loss, bc_targets, data_targets, imagination_losses,
                   imagine, kl, lambda_returns, offsets, pmpo_loss, reward_loss, symexp, symlog,
                   twohot, twohot_loss, twohot_mean)
from conftest import kill_and_rerun, run_pipeline, run_script, steps_of, write_test_preset
from data import FrameStore
from dynamics import append_frames, generate, next_frame, prev_actions
from model import KVCache
from test_dynamics import fails, inputs, metrics, tiny


def tiny_agent(mtp=2, classes=(3, 2), seed=0):
    torch.manual_seed(seed)
    return Agent(64, classes, mtp=mtp, hidden=32, num_bins=41)


# ----------------------------------------------------------------------------------------- the math

def test_twohot_round_trip_and_loss():
    bins = torch.linspace(-20, 20, 255)
    x = torch.tensor([0.0, 1.0, -0.1, 3.7, -250.0, 1e3])
    w = twohot(x, bins)
    assert torch.allclose(w.sum(-1), torch.ones(6)) and ((w > 0).sum(-1) <= 2).all()
    assert torch.allclose(symexp((w * bins).sum(-1)), x, rtol=1e-4)  # the two-hot's mean is x again
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    logits = torch.log(w.clamp(min=1e-12))  # a prediction equal to the target
    assert torch.allclose(twohot_mean(logits, bins), x, rtol=1e-3)
    # the loss: cross-entropy against the two-hot, smallest at the target, larger elsewhere
    y = torch.tensor(2.0)
    loss = lambda lg: twohot_loss(lg, y, bins).item()
    tw = twohot(y, bins)
    by_hand = -(tw * torch.log_softmax(torch.zeros(255), -1)).sum().item()
    assert loss(torch.zeros(255)) == pytest.approx(by_hand) == pytest.approx(np.log(255))
    assert (loss(torch.log(tw.clamp(min=1e-12))) < 0.7
            < loss(torch.log(twohot(torch.tensor(5.0), bins).clamp(min=1e-9))))


def test_lambda_returns_by_hand():
    r = torch.tensor([[1.0, 0.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, -1.0, 3.0]])
    g, lam = 0.9, 0.5
    R3 = 3.0
    R2 = 2.0 + g * ((1 - lam) * 3.0 + lam * R3)
    R1 = 0.0 + g * ((1 - lam) * -1.0 + lam * R2)
    R0 = 1.0 + g * ((1 - lam) * 1.0 + lam * R1)
    assert torch.allclose(lambda_returns(r, v, gamma=g, lam=lam), torch.tensor([[R0, R1, R2]]))
    c = torch.tensor([[1.0, 0.0, 1.0]])  # a terminal after step 1: nothing beyond it counts
    assert lambda_returns(r, v, c, gamma=g, lam=lam)[0, 1].item() == pytest.approx(0.0)
    # Monte Carlo
    assert lambda_returns(r, v, gamma=1.0, lam=1.0)[0, 0].item() == pytest.approx(1 + 0 + 2 + 3)


def test_pmpo_by_hand_and_on_a_toy():
    logp, adv, k = (torch.tensor([-1.0, -2.0, -3.0, -0.5]), torch.tensor([1.0, -0.1, 0.0, -5.0]),
                    torch.ones(4))
    by_hand = 0.5 * (-2.0 - 0.5) / 2 - 0.5 * (-1.0 - 3.0) / 2 + 0.3 * 1.0  # each set over its size
    assert pmpo_loss(logp, adv, k).item() == pytest.approx(by_hand)
    assert pmpo_loss(logp, adv * 1000, k).item() == pytest.approx(by_hand)  # sign only, no scale
    # a toy: one state, 4 actions; action 0 has a positive advantage, action 1 a negative one
    prior = torch.zeros(4)
    for beta, check in ((0.0, "signs"), (5.0, "prior")):
        logits = torch.tensor([0.0, 0.0, 2.0, 0.0], requires_grad=True)
        opt = torch.optim.SGD([logits], lr=0.5)
        p0 = logits.softmax(-1).detach()
        for _ in range(50):
            a, adv = torch.tensor([0, 1]), torch.tensor([1.0, -1.0])
            lp = torch.log_softmax(logits, -1)[a]
            loss = pmpo_loss(lp, adv, kl([logits[None]], [prior[None]]).expand(2), beta=beta)
            opt.zero_grad(), loss.backward(), opt.step()
        p = logits.softmax(-1).detach()
        if check == "signs":
            assert p[0] > p0[0] + 0.3 and p[1] < p0[1] / 2
        else:  # a strong KL term pulls the policy to the uniform prior: action 2's lead shrinks
            assert (kl([logits[None].detach()], [prior[None]]).item()
                    < kl([torch.tensor([[0.0, 0, 2, 0]])], [prior[None]]).item() / 2)


def test_bc_and_reward_targets():
    """MTP targets: offset k of frame t is a_{t+k} (BC) and r_{t+k-1} (reward into frame t+k),
    inside the window."""
    x = torch.arange(5)[None]
    assert offsets(x, 2, -1)[0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, -1],
                                              [4, -1, -1]]
    ag = tiny_agent(mtp=1, classes=(3,))
    h = torch.randn(1, 3, 1, 64)
    actions = torch.tensor([[[2], [0], [-1]]])  # the last one unlabeled
    logits = ag.policy_logits(h)[0]  # (1, 3, 2, 3)
    lp = torch.log_softmax(logits, -1)
    # (t, k): (0,0)=a0 (0,1)=a1 (1,0)=a1
    by_hand = -(lp[0, 0, 0, 2] + lp[0, 0, 1, 0] + lp[0, 1, 0, 0]) / 3
    no_slip = torch.zeros(1, 3, dtype=torch.bool)
    loss, _ = bc_loss(ag, h, bc_targets(actions, no_slip, torch.tensor([True])))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    # not BC's window
    assert bc_loss(ag, h, bc_targets(actions, no_slip, torch.tensor([False])))[0].item() == 0
    slip = torch.tensor([[False, True, False]])  # a_1 was a random slip: no target, at any offset
    by_hand = -lp[0, 0, 0, 2]
    assert (bc_loss(ag, h, bc_targets(actions, slip, torch.tensor([True])))[0].item()
            == pytest.approx(by_hand.item()))
    # an agent pressed a_0, the demonstrator would have pressed 1 (DAgger)
    labels = torch.tensor([[[1], [-1], [-1]]])
    assert (bc_targets(actions, no_slip, torch.tensor([True]), labels)[0, :, 0].tolist()
            == [1, 0, -1])
    assert bc_targets(actions, slip, torch.tensor([True]), labels)[0, :, 0].tolist() == [1, -1, -1]
    nn.init.normal_(ag.reward[-1].weight)
    rew = torch.tensor([[0.0, 1.0, 5.0]])  # r_2 leads out of the window: never a target
    rl = ag.reward_logits(h)  # (1, 3, 2, nbins)
    b = ag.bins
    by_hand = (twohot_loss(rl[0, 1, 0], rew[0, 0], b) + twohot_loss(rl[0, 2, 0], rew[0, 1], b) +
               twohot_loss(rl[0, 0, 1], rew[0, 0], b) + twohot_loss(rl[0, 1, 1], rew[0, 1], b)) / 4
    assert reward_loss(ag, h, rew).item() == pytest.approx(by_hand.item(), rel=1e-5)


# ------------------------------------------------------------------------------------- agent tokens

def test_agent_tokens_leave_the_world_model_unchanged():
    m, ag = tiny(), tiny_agent()
    z, tau, d, a = inputs()
    plain = m(z, tau, d, a)
    with_agent, h = m(z, tau, d, a, agent=ag.slots(*z.shape[:2]))
    assert torch.allclose(plain, with_agent, atol=1e-5) and h.shape == (2, 6, 1, 64)
    # other agent inputs: the world is the same
    other, h2 = m(z, tau, d, a, agent=ag.slots(*z.shape[:2]) * 5 + 1)
    assert torch.allclose(plain, other, atol=1e-5) and not torch.allclose(h, h2, atol=1e-3)
    z2 = z.clone()
    z2[:, 4:] += 1  # block-causal: the agent tokens of frame t read frames <= t only
    _, h3 = m(z2, tau, d, a, agent=ag.slots(*z.shape[:2]))
    assert (torch.allclose(h[:, :4], h3[:, :4], atol=1e-5)
            and not torch.allclose(h[:, 4:], h3[:, 4:], atol=1e-3))
    # small and random, never zero (§P)
    assert ag.tokens.abs().min() > 0 and ag.task_embed.abs().min() > 0


def test_closed_loop_primitives_reproduce_generate():
    m, ag = tiny(), tiny_agent()
    z, _, _, a = inputs(B=2, T=8)
    C, F = 4, 4
    g = torch.Generator().manual_seed(3)
    ref = generate(m, z[:, :C], a, F, K=4, generator=g)
    g = torch.Generator().manual_seed(3)
    eps, z0 = torch.randn(2, C + F, 8, 8, generator=g), torch.randn(2, F, 8, 8, generator=g)
    a_in = prev_actions(a)
    for agent in (None, ag):  # with agent tokens in the cache too: the frames are the same
        slots = lambda T: None if agent is None else agent.slots(2, T)
        cache, frames = KVCache(), []
        with torch.no_grad():
            append_frames(m, z[:, :C], a_in[:, :C], cache, eps[:, :C], slots(C))
            for j in range(F):
                frames.append(next_frame(m, cache, a_in[:, C + j:C + j + 1], 4, z0[:, j:j + 1],
                                         slots(1)))
                append_frames(m, frames[-1], a_in[:, C + j:C + j + 1], cache,
                              eps[:, C + j:C + j + 1], slots(1))
        assert torch.allclose(torch.cat(frames, 1), ref, atol=1e-4), (
            torch.cat(frames, 1) - ref).abs().max()


def test_time_window_streams_at_constant_cost():
    """With a time window, a stream much longer than max_frames runs and the cache holds window - 1
    frames."""
    m = tiny()
    m.transformer.time_window = 4
    z, _, _, a = inputs(B=1, T=6)
    cache = KVCache()
    with torch.no_grad():
        for t in range(30):  # 30 frames through a model built for 12
            append_frames(m, z[:, t % 6:t % 6 + 1], a[:, :1], cache)
    assert cache.length == 30 and all(kv[0].shape[2] == 3 for kv in cache.kv.values())
    # the cache is a ring of window - 1 slots: streamed one by one, or in chunks longer than the
    # ring, each frame's output is what one pass over the whole stream under the window mask gives
    zs, a_in = torch.randn(1, 30, 8, 8), torch.randint(0, 2, (1, 30, 2))
    tau, d = torch.rand(1, 30), torch.full((1, 30), 0.25)
    with torch.no_grad():
        whole = m(zs, tau, d, a_in)
        for n in (1, 7):
            cache = KVCache()
            step = torch.cat([m(zs[:, t:t + n], tau[:, t:t + n], d[:, t:t + n], a_in[:, t:t + n],
                                cache) for t in range(0, 30, n)], 1)
            assert torch.allclose(step, whole, atol=1e-5), (n, (step - whole).abs().max())
    # 16 > 12 frames with a window
    out = generate(m, z[:, :6], torch.zeros(1, 16, 2, dtype=torch.long), 10, K=2)
    assert out.shape == (1, 10, 8, 8) and torch.isfinite(out).all()


def test_cache_select_keeps_running_episodes():
    """Dropping ended episodes from a KV cache (with agent tokens in it) leaves the others' outputs
    as they were."""
    m, ag = tiny(), tiny_agent()
    z, _, _, a = inputs(B=3, T=6)
    eps = torch.randn_like(z)
    with torch.no_grad():
        full, part = KVCache(), KVCache()
        for cache in (full, part):
            append_frames(m, z[:, :4], a[:, :4], cache, eps[:, :4], ag.slots(3, 4))
        part.select(torch.tensor([0, 2]), 3)
        h_full = append_frames(m, z[:, 4:], a[:, 4:], full, eps[:, 4:], ag.slots(3, 2))
        h_part = append_frames(m, z[[0, 2], 4:], a[[0, 2], 4:], part, eps[[0, 2], 4:],
                               ag.slots(2, 2))
    assert torch.allclose(h_full[[0, 2]], h_part, atol=1e-5) and part.length == full.length == 6


def test_reward_head_sees_the_action_taken():
    """The reward of transition t (read at frame t+1) changes with a_t, not with a_{t+1}."""
    m, ag = tiny(), tiny_agent()
    nn.init.normal_(ag.reward[-1].weight, std=0.5)
    z, _, _, a = inputs(B=1, T=6)
    a = a.clamp(min=0)
    # (1, T): the reward into frame t
    r = lambda acts: twohot_mean(ag.reward_logits(agent_pass(m, ag, z, acts))[:, :, 0], ag.bins)
    torch.manual_seed(0)
    base = r(a)
    t = 2
    a_t, a_next = a.clone(), a.clone()
    a_t[:, t, 0] = (a[:, t, 0] + 1) % 3
    a_next[:, t + 1, 0] = (a[:, t + 1, 0] + 1) % 3
    torch.manual_seed(0)
    changed_t = r(a_t)
    torch.manual_seed(0)
    changed_next = r(a_next)
    assert (changed_t[0, t + 1] - base[0, t + 1]).abs() > 1e-4  # r_t (at frame t + 1) sees a_t
    # r_{<=t} do not see a_{t+1}
    assert torch.allclose(changed_next[0, :t + 2], base[0, :t + 2], atol=1e-6)


def test_imagination_rollout():
    m, ag = tiny(), tiny_agent()
    prior = ag.policy
    z, _, _, a = inputs(B=3, T=4)
    roll = imagine(m, ag, z, a.clamp(min=0), horizon=5, K=2)
    assert roll["h"].shape == (3, 6, 1, 64) and roll["actions"].shape == (3, 5, 2)
    assert roll["rewards"].shape == (3, 5) and roll["z"].shape == (3, 5, 8, 8)
    assert (roll["actions"][..., 0] < 3).all() and (roll["actions"][..., 1] < 2).all()
    m.requires_grad_(False)
    loss, info = imagination_losses(ag, prior, roll)
    loss.backward()
    assert all(p.grad is None for p in m.parameters())  # nothing reaches the frozen transformer
    assert ag.policy[-1].weight.grad.abs().sum() > 0 and ag.value[-1].weight.grad.abs().sum() > 0
    # prior == policy at first
    assert ag.tokens.grad is None and float(info["kl_prior"]) == pytest.approx(0, abs=1e-6)
    assert 0 <= float(info["positive_adv"]) <= 1 and np.isfinite(float(info["imagined_return"]))
    ag.zero_grad()
    # the value warm-up: no policy gradient
    imagination_losses(ag, prior, roll, train_policy=False)[0].backward()
    assert ag.policy[-1].weight.grad is None and ag.value[-1].weight.grad.abs().sum() > 0


SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
         "__format__")
# torch.rand(()) drawn on the CPU whatever the device: no wait for a GPU
HOST_SIDE = {("sample_tau_d", "item")}


def host_syncs(monkeypatch, script, *args):
    """Calls of the Tensor methods that wait for a GPU (item, tolist, bool(), ...) that the
    project's own files make while `script` runs here, by file:line (torch's internals left out: on
    a GPU its fused optimizers do not sync)."""
    import collections
    import sys
    root, counts = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    collections.Counter())
    for name in SYNCS:
        def counted(self, *a, _f=getattr(torch.Tensor, name), _name=name, **k):
            code = sys._getframe(1).f_code
            if (code.co_filename.startswith(root)
                    and os.sep + "tests" + os.sep not in code.co_filename
                    and (code.co_name, _name) not in HOST_SIDE):
                counts[f"{os.path.basename(code.co_filename)}:"
                       f"{sys._getframe(1).f_lineno} {_name}"] += 1
            return _f(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    run_script(script, *args)
    monkeypatch.undo()
    return counts


@pytest.mark.slow
def test_no_host_sync_in_a_training_step(agent_run, tmp_path, monkeypatch):
    """Every trainer's step, and an imagination step, waits for the device only at log, eval and
    save steps: a run of 4 steps makes exactly the syncs of a run of 2 (logs and evals far apart). A
    new .item() or bool() per step fails here, with its file:line."""
    out, store, ft, im, _ = agent_run
    cfg = out.parent / "config"
    runs = {"tokenizer": ["train_tokenizer.py", str(cfg / "tokenizer_test.py"),
                          f"--data_dir={store}"],
            "dynamics": ["train_dynamics.py", str(cfg / "dynamics_test.py"), f"--data_dir={store}",
                         f"--tokenizer_ckpt={out / 'tokenizer/ckpt.pt'}"],
            "finetune": ft, "imagine": im}
    for stage, args in runs.items():
        n = [host_syncs(monkeypatch, *args, f"--out_dir={tmp_path / stage}{steps}",
                        f"--max_iters={steps}", "--log_interval=100", "--eval_interval=100")
             for steps in (2, 4)]
        # (some syncs at evals and saves: the counter works)
        assert n[0] and n[1] == n[0], (stage, n[1] - n[0])


# --------------------------------------------------------------------------------------- end to end

# the test preset of the main job: every stage of pipeline.sh, a few steps each, on the tiny 32x32
# Crafter store
@pytest.mark.slow
def test_main_job_at_128x128(tmp_path):
    """The GPU recipe's 128x128 variant in miniature (config/*_gpu128.py): a 128x128 store through
    every stage of pipeline.sh, with 16x16 patches, 4 latents per dynamics token, at test sizes."""
    config = write_test_preset(tmp_path, data=dict(image_size=128), tokenizer=dict(patch_size=16),
                               dynamics=dict(pack=4),
                               eval=dict(episodes=2, baseline_episodes=1, max_steps=8))
    # (its data stage makes the store)
    run_pipeline(config, str(tmp_path / "crafter128"), tmp_path / "out")
    tok, dyn, rl = (torch.load(tmp_path / f"out/{s}/ckpt.pt", weights_only=False)
                    for s in ("tokenizer", "dynamics", "agent_rl"))
    assert tok["model_args"]["image_size"] == 128 and tok["model_args"]["patch_size"] == 16
    assert dyn["model_args"]["pack"] == 4 and rl["image_size"] == 128
    assert "| BC | 2 |" in (tmp_path / "out/results.md").read_text()


@pytest.mark.slow
def test_main_job(agent_run, tmp_path):
    tmp, store, ft, im, stdout = agent_run
    import imageio.v3 as iio
    # every stage's training curves, beside results.md
    assert iio.imread(tmp / "curves.png").shape == (360, 1200, 3)
    # the plan, first
    assert "main job: preset test" in stdout and "tokenizer ~30 s: a few seconds" in stdout
    assert "total      ~3 min (0.1 h)" in stdout  # six stages of ~30 s
    bc = [m for m in metrics(tmp / "agent_bc") if "val_bc_acc" in m]  # (the eval appends scores)
    rl = metrics(tmp / "agent_rl")
    assert (bc[-1]["iter"] == 4 and 0 <= bc[-1]["val_bc_acc"] <= 1
            and 0 <= bc[-1]["reward_recall"] <= 1)
    assert bc[-1]["reward_events"] > 0  # the held-out episodes have unlock events to find
    assert ([m["iter"] for m in rl[:5]] == [0, 1, 2, 3, 3]
            and all(np.isfinite(m["imagined_return"]) for m in rl[1:4]))
    assert all(0 <= m["positive_adv"] <= 1 for m in rl[1:4])
    a, b = (torch.load(tmp / f"{p}/ckpt.pt", weights_only=False) for p in ("agent_bc", "agent_rl"))
    frozen = [k for k in a["model"] if k.startswith("dynamics.") or k.startswith("agent.reward")]
    # imagination trains the heads only
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in frozen)
    assert not torch.equal(a["model"]["agent.policy.3.weight"], b["model"]["agent.policy.3.weight"])
    # the frozen BC head
    assert torch.equal(b["model"]["prior.3.weight"], a["model"]["agent.policy.3.weight"])
    assert b["init"]["phase"] == "finetune" and a["init"]["phase"] == "dynamics"
    # real game: every policy on the same seeds, one table, the paired comparison, metrics, a video
    res = json.load(open(tmp / "eval.json"))
    assert set(res["rows"]) == {"random", "demo eps=0", "data mix", "BC", "BC argmax", "RL",
                                "RL argmax"}
    # the baselines on the first 2 seeds (baseline_episodes)
    agents = ("BC", "BC argmax", "RL", "RL argmax")
    assert all(r["seeds"] == [1_000_000, 1_000_001, 1_000_002][:3 if n in agents else 2]
               for n, r in res["rows"].items())
    assert all(0 < r["mean_length"] <= 12 for r in res["rows"].values())
    assert 0 <= res["paired"]["returns"]["sign_p"] <= 1 and "RL - BC per seed" in stdout
    assert (metrics(tmp / "agent_rl")[-1]["eval_episodes"] == 3
            and "crafter_score" in metrics(tmp / "agent_bc")[-1])
    for f in ("agent_episode.mp4", "rollout.mp4", "rollout.gif", "tokenizer/recon.png", "eval.md"):
        assert os.path.getsize(tmp / f) > 0, f
    # results.md: every figure there and finite, hardware and commit named, a wall time per stage
    text = open(tmp / "results.md").read()
    figures = ["tokenizer val PSNR", "tokenizer val SSIM", "rollout PSNR", "floor", "ceiling",
               "shuffle ratio", "BC accuracy", "imagined reward's unlocks",
               "event head, real frames", "imagined return", "| random |", "| demo eps=0 |",
               "| data mix |", "| BC |", "| RL |", "| total |"]
    figures += [f"| {s} |" for s in ("data", "tokenizer", "dynamics", "video", "finetune",
                                      "imagine", "eval")]
    for name in figures:
        line = next(ln for ln in text.splitlines() if name in ln)
        values = [float(v) for v in re.findall(r"[-+]?\d+\.\d+", line)]
        assert values and all(np.isfinite(values)), line
    assert ("commit " in text and ("CPU: " in text or "GPU: " in text)
            and not re.search(r"\bnan\b|\binf\b", text.lower()))
    # a rerun skips every stage: nothing trains again, the eval is not replayed
    again = run_pipeline(tmp.parent / "config", store, tmp)
    assert again.count("nothing to do") == 5 and "== eval" not in again and "== video" not in again


@pytest.mark.slow
def test_label_study_job(agent_run, tmp_path):
    """LABEL_STUDY=... bash pipeline.sh: the main job's store, tokenizer and dynamics run (as f1.0),
    then one dynamics run per name in LABEL_RUNS, its settings read from the name, then the study
    table; no agent stage; a rerun skips."""
    out, store, _, _, _ = agent_run
    env = dict(LABEL_STUDY=str(tmp_path / "study"), LABEL_RUNS="f0.5_lb0.5 f0.5_alone f0.0")
    stdout = run_pipeline(out.parent / "config", store, out, **env)
    assert ("label study" in stdout and "and 3 more dynamics runs" in stdout
            and "total      ~3 min" in stdout)
    # data, tokenizer, dynamics: done
    assert stdout.count("nothing to do") == 3 and "== finetune" not in stdout
    want = {"f0.5_lb0.5": (0.5, 0.5, True), "f0.5_alone": (0.5, 0.0, False),
            "f0.0": (0.0, 0.0, True)}
    for name, (frac, lb, video) in want.items():
        c = torch.load(out / "labels" / name / "ckpt.pt", weights_only=False)
        assert (c["config"]["action_label_frac"],
                c["config"]["labeled_batch_frac"]) == (frac, lb), name
        assert c["config"]["unlabeled_video"] == video and c["iter"] == 10, name
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ") for ln in open(tmp_path / "study.md")
            if ln.startswith("| f") and ln.count("|") == 12}
    assert (set(rows) == {"f1.0", *want} and rows["f0.0"][1] == "0%"
            and rows["f0.5_alone"][3] == "no")
    # as drawn: all or none labeled
    assert [rows[n][2] for n in ("f1.0", "f0.5_lb0.5", "f0.0")] == ["0%", "50%", "0%"]
    # the test preset: one episode, no gain
    assert "no error bars" in stdout and "tie in rollout PSNR" in stdout
    assert all(np.isfinite(float(r[4])) and np.isfinite(float(r[10].strip(" |\n")))
               for r in rows.values())
    video = next(ln for ln in open(tmp_path / "study.md")
                 if ln.startswith("| f0.5_lb0.5 - f0.5_alone | "))
    assert float(video.split(" | ")[1].split(" ± ")[0]) == pytest.approx(
        float(rows["f0.5_lb0.5"][4]) - float(rows["f0.5_alone"][4]), abs=0.016)
    again = run_pipeline(out.parent / "config", store, out, **env)
    assert again.count("nothing to do") == 6 and "wrote" in again


def test_eval_reuses_bc_rows(agent_run, tmp_path, capsys):
    """bc_eval: another RL run scored against the BC rows of an earlier eval on the same seeds, not
    replayed; an eval.json of other seeds, or of a BC checkpoint that changed since, is refused with
    one line."""
    tmp, _, _, _, _ = agent_run
    prev = json.load(open(tmp / "eval.json"))
    args = ["eval_agent.py", str(tmp.parent / "config/eval_test.py"),
            f"--bc_ckpt={tmp / 'agent_bc/ckpt.pt'}", f"--rl_ckpt={tmp / 'agent_rl/ckpt.pt'}",
            "--baselines=False", f"--bc_eval={tmp / 'eval.json'}"]
    capsys.readouterr()
    run_script(*args, f"--out={tmp_path / 'again.json'}")
    res = json.load(open(tmp_path / "again.json"))
    assert ("BC: score" in capsys.readouterr().out
            and set(res["rows"]) == {"BC", "BC argmax", "RL", "RL argmax"})
    assert (res["rows"]["BC"] == prev["rows"]["BC"]
            and res["rows"]["BC argmax"] == prev["rows"]["BC argmax"])
    d = np.array(res["rows"]["RL"]["returns"]) - np.array(prev["rows"]["BC"]["returns"])
    assert res["paired"]["returns"]["mean_diff"] == pytest.approx(d.mean())
    d = np.array(res["rows"]["RL"]["lengths"]) - np.array(prev["rows"]["BC"]["lengths"])
    assert res["paired"]["lengths"]["mean_diff"] == pytest.approx(d.mean()) and len(d) == 3
    assert "was played with episodes=3, not 2" in fails(*args, "--episodes=2",
                                                        f"--out={tmp_path / 'x.json'}")
    assert "is not an eval.json" in fails(*args[:-1], f"--bc_eval={tmp / 'agent_bc/ckpt.pt'}")
    bc2, stale = tmp_path / "bc2.pt", tmp_path / "stale.json"
    shutil.copy(tmp / "agent_bc/ckpt.pt", bc2)  # a newer file
    assert "not bc_ckpt" in fails(*args, f"--bc_ckpt={bc2}", f"--out={tmp_path / 'x.json'}")
    prev["rows"]["BC"]["ckpt"] = str(bc2)
    stale.write_text(json.dumps(prev))
    assert "the file changed since" in fails(*args, f"--bc_ckpt={bc2}", f"--bc_eval={stale}",
                                             f"--out={tmp_path / 'x.json'}")
    assert not os.path.exists(tmp_path / "x.json")


@pytest.mark.parametrize("phase", ["finetune", "imagine"])
def test_agent_phases_resume_exactly(agent_run, phase):
    """Stopped halfway and resumed: the same parameters as the pipeline's uninterrupted run
    (imagination: two optimizers, the value head at its own lr)."""
    tmp, _, ft, im, _ = agent_run
    cmd, full, n = (ft, "agent_bc", 4) if phase == "finetune" else (im, "agent_rl", 3)
    # subprocesses, as the pipeline's run was: in this process, after other tests, bf16 kernels may
    # differ (1e-5)
    never, log, part = ((lambda t0: False), tmp / f"{phase}_part.txt",
                        f"--out_dir={tmp / (phase + '_part')}")
    kill_and_rerun([*cmd, part, f"--max_iters={n // 2}"], never, 0, log)
    kill_and_rerun([*cmd, part, f"--max_iters={n}", "--init_from=resume"], never, 0, log)
    a, b = (torch.load(tmp / f"{p}/ckpt.pt", weights_only=False) for p in (full, phase + "_part"))
    assert a["iter"] == b["iter"] == n and all(torch.equal(a["model"][k], b["model"][k])
                                               for k in a["model"])


@pytest.mark.slow
def test_kill9_anywhere_in_finetuning_loses_nothing(agent_run, tmp_path):
    """SIGKILL three times (in steps, evals or checkpoint saves: random moments after a step is
    logged), rerun with resume each time: the same parameters as the uninterrupted run."""
    tmp, _, ft, _, _ = agent_run
    flags = ["--max_iters=24", "--eval_interval=3", "--log_interval=1"]
    # the reference runs as a subprocess too: in-process runs may pick other kernels
    never = lambda t0: False
    _, ref = kill_and_rerun([*ft, f"--out_dir={tmp_path / 'ref'}", *flags], never, 0,
                            tmp_path / "ref.txt")
    out, log = tmp_path / "killed", tmp_path / "log.txt"
    # 3 kills <= 15 of 24 steps
    landed, text = kill_and_rerun([*ft, f"--out_dir={out}", *flags],
                                  lambda t0: "ms/iter" in open(log).read(), 3, log,
                                  resume_if=str(out / "ckpt.pt"), delay=steps_of(ref))
    a, b = (torch.load(p / "ckpt.pt", weights_only=False) for p in (tmp_path / "ref", out))
    assert landed == 3 and ("iter 24/24" in text or "nothing to do" in text)
    assert a["iter"] == b["iter"] == 24 and all(torch.equal(a["model"][k], b["model"][k])
                                                for k in a["model"])


def test_sample_from_the_finetuned_world_model(agent_run, tmp_path):
    """sample.py (and every load_dynamics) takes an agent checkpoint too: the world model in it."""
    tmp = agent_run[0]
    run_script("sample.py", f"--dynamics_ckpt={tmp / 'agent_bc/ckpt.pt'}", "--num_windows=1",
               "--context_frames=2", "--num_frames=2", f"--out={tmp_path / 'a.gif'}")
    assert os.path.getsize(tmp_path / "a.gif") > 0
    assert fails("train_agent.py", "--imagine_batch=0") == "error: imagine_batch=0 must be >= 1"


def test_a_run_folder_travels(agent_run, tmp_path):
    """A run folder copied to another machine (the tokenizer path its checkpoints name is gone
    there) loads as it did: the tokenizer beside them (<run>/tokenizer) is found; a checkpoint alone
    names the missing path and the flag."""
    from agent import load_policy
    from play import load
    moved = tmp_path / "moved"
    shutil.copytree(agent_run[0], moved,
                    ignore=shutil.ignore_patterns("latents_*", "*.mp4", "*.gif"))
    for stage in ("dynamics", "agent_bc", "agent_rl"):
        ckpt = torch.load(moved / stage / "ckpt.pt", weights_only=False)
        ckpt["tokenizer"]["path"] = "/gone/out/tokenizer/ckpt.pt"  # as on the training machine
        torch.save(ckpt, moved / stage / "ckpt.pt")
    policy = load_policy(str(moved / "agent_rl/ckpt.pt"))
    assert 0 <= policy.act(np.zeros((32, 32, 3), np.uint8)) < 17
    tok = load(str(moved / "dynamics/ckpt.pt"), "cpu")[0]
    assert torch.equal(tok.state_dict()["patch_embed.weight"], torch.load(
        moved / "tokenizer/ckpt.pt", weights_only=False)["model"]["patch_embed.weight"])
    run_script("sample.py", f"--dynamics_ckpt={moved / 'dynamics/ckpt.pt'}", "--num_windows=1",
               "--context_frames=2", "--num_frames=2", f"--out={tmp_path / 'a.gif'}")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(moved / "agent_rl/ckpt.pt", alone / "ckpt.pt")
    with pytest.raises(SystemExit, match="'/gone/out/tokenizer/ckpt.pt' does not exist, nor one "
                                         "beside .* name it with --tokenizer_ckpt=PATH"):
        load_policy(str(alone / "ckpt.pt"))
    assert 0 <= load_policy(str(alone / "ckpt.pt"), tokenizer_ckpt=str(
        moved / "tokenizer/ckpt.pt")).act(np.zeros((32, 32, 3), np.uint8)) < 17


def test_exported_checkpoints_load_as_a_runs_do(agent_run, tmp_path):
    """export.py: a run's tokenizer and RL agent as bf16 weights (the shipped pretrained/ files);
    the ordinary loading code takes them: the policy acts as the run's does (bf16-rounded weights),
    sample.py makes a rollout from real Crafter where the data is not here, eval_agent.py scores the
    agent without writing into its folder."""
    from agent import load_policy
    run_script("export.py", f"--run={agent_run[0]}", f"--out={tmp_path / 'pre'}")
    agent = torch.load(tmp_path / "pre/agent.pt", weights_only=False)
    assert "optimizer" not in agent and not any(k.startswith("prior.") for k in agent["model"])
    assert (agent["model"]["agent.policy.3.weight"].dtype == torch.bfloat16
            and agent["tokenizer"]["path"] == "tokenizer.pt")
    ours, theirs = (load_policy(p) for p in (str(tmp_path / "pre/agent.pt"),
                                             str(agent_run[0] / "agent_rl/ckpt.pt")))
    for a, b in ((ours.agent, theirs.agent), (ours.dyn, theirs.dyn), (ours.tok, theirs.tok)):
        assert all(torch.equal(v, b.state_dict()[k].bfloat16().float())
                   for k, v in a.state_dict().items()
                   if v.is_floating_point())  # the run's weights, rounded to bf16
    assert 0 <= ours.act(np.zeros((32, 32, 3), np.uint8)) < 17
    agent["data_dir"] = "/gone/data/crafter"  # as on another machine
    torch.save(agent, tmp_path / "pre/agent.pt")
    run_script("sample.py", f"--dynamics_ckpt={tmp_path / 'pre/agent.pt'}", "--num_windows=1",
               "--context_frames=2", "--num_frames=2", f"--out={tmp_path / 'a.gif'}")
    assert os.path.getsize(tmp_path / "a.gif") > 0
    run_script("eval_agent.py", f"--rl_ckpt={tmp_path / 'pre/agent.pt'}", "--episodes=1",
               "--max_steps=5", "--baselines=False", "--argmax=False",
               f"--out={tmp_path / 'eval.json'}")
    # nothing written beside them
    assert sorted(os.listdir(tmp_path / "pre")) == ["agent.pt", "tokenizer.pt"]


def test_policy_plays_real_episodes(agent_run):
    from agent import load_policy
    from demonstrator import evaluate, evaluate_lockstep
    tmp = agent_run[0]
    policy = load_policy(str(tmp / "agent_bc/ckpt.pt"))
    ckpt = torch.load(tmp / "agent_bc/ckpt.pt", weights_only=False)
    # the window it learned on
    assert policy.dyn.transformer.time_window == ckpt["window"] == ckpt["config"]["seq_len"]
    assert load_policy(str(tmp / "agent_bc/ckpt.pt"),
                       time_window=3).dyn.transformer.time_window == 3
    a = policy.act(np.zeros((32, 32, 3), np.uint8))
    assert isinstance(a, int) and 0 <= a < 17
    # one episode at a time
    one = evaluate(lambda env: policy.reset() or policy.act, [5, 6], 15, size=32)
    both = evaluate_lockstep(policy, [5, 6], 15, size=32)  # batched, in lockstep
    assert (0 < one["mean_length"] <= 15 and 0 < both["mean_length"] <= 15
            and len(both["returns"]) == 2)


def test_dagger_store_labels_the_agents_states(agent_run, tmp_path):
    """data.py --agent: the agent plays, the screen-only demonstrator's choice in each state it
    reaches is stored as the label (replaying the stored actions, a fresh demonstrator says the same
    in every state); the store mixes with another through --source=stores, labels kept; finetuning
    reads them."""
    from demonstrator import Demonstrator, _make_env
    ckpt, d = agent_run[0] / "agent_bc/ckpt.pt", tmp_path / "dagger"
    run_script("data.py", f"--data_dir={d}", f"--agent={ckpt}", "--num_frames=20",
               "--episode_len=12", "--image_size=32", "--seed=5", "--num_workers=1")
    st = FrameStore(str(d))
    assert (st.policies == 2).all() and len(st.episodes) >= 2 and (st.slips == 0).all()
    for (a, b), name in zip(st.episodes, st.meta["episode_names"]):
        seed = int(name.removeprefix("seed"))
        env = _make_env(seed, 12, 32)
        obs, demo = env.reset(), Demonstrator(env, 0.0, seed, view=True)
        for t in range(a, b - 1):
            assert np.array_equal(obs, st.frames[t]) and demo(obs) == st.labels[t, 0]
            obs = env.step(int(st.actions[t, 0]))[0]
        assert st.labels[b - 1, 0] == -1
    assert (st.labels[:, 0] != st.actions[:, 0]).any()  # the agent is not the demonstrator
    mix = tmp_path / "mix"
    run_script("data.py", "--source=stores", f"--src={agent_run[1]},{d}", f"--data_dir={mix}",
               "--image_size=32")
    m = FrameStore(str(mix))
    assert np.array_equal(m.labels[-len(st):], st.labels) and (m.labels[:-len(st)] == -1).all()
    assert set(m.policies.tolist()) >= {1, 2}
    run_script(*agent_run[2], f"--data_dir={mix}", f"--out_dir={tmp_path / 'bc'}", "--max_iters=2")
    with pytest.raises(SystemExit, match="plays 32x32 frames, not --image_size=64"):
        run_script("data.py", f"--data_dir={tmp_path / 'x'}", f"--agent={ckpt}", "--image_size=64")


def test_d4_labels_the_agents_own_states(agent_run, capsys):
    """diagnose.py --agree: the agent plays, the demonstrator labels each state it reaches;
    agreement in [0, 1] over the agent's steps (two episodes of <= 15 steps: all in steps 1-50)."""
    run_script("diagnose.py", f"--agree={agent_run[0] / 'agent_bc/ckpt.pt'}", "--eval_episodes=2",
               "--max_steps=15", "--eval_seed=5", "--threads=2")
    out = capsys.readouterr().out
    phases = r"  (all steps|steps 1-50|steps 51\+): agreement .* \(argmax [0-9.]+, (\d+) steps\)"
    steps = dict(re.findall(phases, out))
    agree = [float(x) for x in re.findall(r"label ([0-9.]+) \(argmax", out)]
    assert (2 <= int(steps["all steps"]) == int(steps["steps 1-50"]) <= 30
            and "steps 51+" not in steps), out
    assert len(agree) == 2 and all(0.0 <= x <= 1.0 for x in agree), out
    assert "'do' of the demonstrator, its own episodes faces:" in out


def test_d5_clones_from_latents(agent_run, capsys):
    """diagnose.py --latent_clone: an MLP on the tokenizer's latents (2 frames) and the last action
    learns the store's demonstrator, plays two real episodes; held-out accuracy is a percentage."""
    run_script("diagnose.py", f"--latent_clone={agent_run[0] / 'agent_bc/ckpt.pt'}",
               "--clone_frames=2", "--steps=30", "--eval_episodes=2", "--max_steps=15",
               "--eval_seed=5", "--threads=2")
    out = capsys.readouterr().out
    row = re.search(r"\| latent clone, 2 frame\(s\) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| "
                    r"[0-9.]+ \| ([0-9]+) \|", out)
    assert row, out
    acc, copy, score, length = (float(x) for x in row.groups())
    assert 0 <= acc <= 100 and 0 <= copy <= 100 and 0 <= score <= 100 and 1 <= length <= 15


def test_lockstep_evaluation_equals_one_at_a_time():
    """A batched policy in lockstep plays the same episodes as one episode at a time (fixed action
    sequences)."""
    from demonstrator import evaluate, evaluate_lockstep
    # moves, then noop (an ended episode's actions drop)
    seq = lambda t: [5, 1, 2, 3, 4][t % 5] if t < 40 else 0

    class Fixed:
        def reset(self):
            self.t = 0

        def act(self, frames):
            self.t += 1
            return np.full((len(frames), 1), seq(self.t - 1))

    def one_at_a_time(env):
        p = Fixed()
        p.reset()
        return lambda frame: int(p.act(frame[None])[0, 0])
    one = evaluate(one_at_a_time, [3, 4, 9], 60)
    both = evaluate_lockstep(Fixed(), [3, 4, 9], 60)
    assert (one["returns"] == both["returns"] and one["unlocks"] == both["unlocks"]
            and one["lengths"] == both["lengths"])
    steps = []
    chunked = evaluate_lockstep(Fixed(), [3, 4, 9], 60, on_step=lambda *a: steps.append(a),
                                chunk=2)  # 2, then 1
    assert chunked["returns"] == one["returns"] and chunked["seeds"] == [3, 4, 9]
    assert (steps[0] == (1, 3) and steps[59] == (60, 1) and steps[60] == (61, 1)
            and steps[-1] == (120, 0))
    assert (one["mean_length"] == both["mean_length"] == 60
            and one["success_rates"] == both["success_rates"])


def test_bad_agent_inputs(agent_run, tmp_path):
    tmp, store, ft, im, _ = agent_run
    ft_base = [x for x in ft if not x.startswith("--init_ckpt")]
    im_base = [x for x in im if not x.startswith("--init_ckpt")]
    out = f"--out_dir={tmp_path / 'x'}"
    assert "is not an agent checkpoint" in fails(*im_base,
                                                 f"--init_ckpt={tmp / 'dynamics/ckpt.pt'}", out)
    assert "is not a dynamics checkpoint" in fails(*ft_base,
                                                   f"--init_ckpt={tmp / 'agent_bc/ckpt.pt'}", out)
    assert "is not a dynamics checkpoint" in fails(*ft_base,
                                                   f"--init_ckpt={tmp / 'tokenizer/ckpt.pt'}", out)
    assert "does not exist" in fails(*ft_base, f"--init_ckpt={tmp_path / 'none.pt'}", out)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")  # not a torch file; and one cut short
    (tmp_path / "cut.pt").write_bytes(open(tmp / "agent_bc/ckpt.pt", "rb").read()[:5000])
    for bad in ("junk.pt", "cut.pt"):
        assert "is not a readable checkpoint" in fails(*im_base, f"--init_ckpt={tmp_path / bad}",
                                                       out)
        assert "is not a readable checkpoint" in fails("eval_agent.py",
                                                       f"--bc_ckpt={tmp_path / bad}", "--rl_ckpt=")
    torch.save([1, 2], tmp_path / "list.pt")
    assert "is not a nanodreamer checkpoint (it holds a list)" in fails(
        *ft_base, f"--init_ckpt={tmp_path / 'list.pt'}", out)
    old = torch.load(tmp / "dynamics/ckpt.pt", weights_only=False)
    del old["format"]  # made before RoPE rotated halves: the same weights would make another model
    torch.save(old, tmp_path / "old.pt")
    assert "checkpoint format 1, this one reads 2" in fails(
        *ft_base, f"--init_ckpt={tmp_path / 'old.pt'}", out)
    assert "phase='play'" in fails(*ft, "--phase=play", out)
    old = torch.load(tmp / "agent_bc/ckpt.pt", weights_only=False)
    del old["window"]  # made before the event, continuation and value heads
    torch.save(old, tmp_path / "old_agent.pt")
    predates = fails(*im_base, f"--init_ckpt={tmp_path / 'old_agent.pt'}", out)
    assert "predates the event, continuation and value heads" in predates
    assert "predates" in fails("eval_agent.py", f"--bc_ckpt={tmp_path / 'old_agent.pt'}",
                               "--rl_ckpt=")
    # a store whose action spec differs, one without rewards, one without labels
    import shutil
    for name, edit, msg in (("spec", "meta", "but the dynamics model was trained on"),
                            ("norew", "rewards", "has no rewards"),
                            ("nolab", "actions", "has no labeled episodes"),
                            ("old", "fields", "predates slips/events/deaths (the agent's targets); "
                                              "rebuild it")):
        d = str(tmp_path / name)
        shutil.copytree(store, d)
        if edit == "fields":  # a store made before the agent's fields
            for f in ("slips", "events", "deaths"):
                os.remove(f"{d}/{f}.npy")
        elif edit == "meta":
            meta = json.load(open(f"{d}/meta.json"))
            meta["action_spec"][0]["classes"] = 5
            json.dump(meta, open(f"{d}/meta.json", "w"))
        else:
            arr = np.load(f"{d}/{edit}.npy")
            np.save(f"{d}/{edit}.npy", np.zeros_like(arr) - (edit == "actions"))
        assert msg in fails(*ft, f"--data_dir={d}", out), name
    assert "no demonstrator episodes" in fails(*ft, f"--data_dir={tmp_path / 'nolab'}",
                                               "--bc_data=demo", out)
    assert not os.path.exists(tmp_path / "x" / "ckpt.pt")
    # the real game: a checkpoint that is not an agent one, or missing
    assert "is not an agent checkpoint" in fails(
        "eval_agent.py", f"--bc_ckpt={tmp / 'dynamics/ckpt.pt'}", "--rl_ckpt=")
    assert "does not exist" in fails("eval_agent.py", f"--rl_ckpt={tmp_path / 'none.pt'}",
                                     "--bc_ckpt=")
    ckpt = torch.load(tmp / "agent_bc/ckpt.pt", weights_only=False)
    ckpt["action_spec"] = [{"name": "action", "classes": 5}]  # an agent of another game
    torch.save(ckpt, tmp_path / "other.pt")
    assert "not Crafter's one 17-way action" in fails(
        "eval_agent.py", f"--bc_ckpt={tmp_path / 'other.pt'}", "--rl_ckpt=")


# ---------------------------------------------------------------------------- events, death, memory

def test_data_targets_by_hand():
    """Per-frame targets from a store's arrays: the memory lags the events by one frame (m_t:
    transitions into frames 1..t-1), the reward loses its first-unlock term, the terminal is the
    last frame of a death, and the return-to-go stops at the episode's end."""
    # two episodes: frames 0-3 and 4-6
    rewards = np.array([1.0, 0.1, 1.0, 0.0, 0.0, 1.0, 0.0], np.float32)
    events = np.zeros((7, 2), np.int8)
    # event 0 twice in episode 0, then again in 1
    events[0, 0] = events[1, 0] = events[2, 1] = events[5, 0] = 1
    episodes, deaths = np.array([[0, 4], [4, 7]]), np.array([1, 0], np.int8)
    t = data_targets(rewards, events, episodes, deaths, gamma=0.5)
    # event 1 (into frame 3) is in no frame's memory
    assert t["memory"][:, 0].tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert t["memory"][:, 1].tolist() == [0] * 7 and t["memory"].dtype == np.float32
    # a repeat pays no unlock
    assert t["reward"].tolist() == pytest.approx([0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert t["terminal"].tolist() == [0, 0, 0, 1, 0, 0, 0]  # episode 1 was cut, not ended by death
    assert t["returns"][0] == pytest.approx(1 + 0.5 * 0.1 + 0.25 * 1) and t["returns"][3] == 0
    assert t["returns"][4] == pytest.approx(0.5) and t["returns"][6] == 0
    unknown = data_targets(rewards, np.full((7, 2), -1, np.int8), episodes,
                           np.array([-1, -1], np.int8))
    assert (unknown["terminal"] == -1).all() and unknown["reward"].tolist() == rewards.tolist()


def event_agent(p_event0=0.99):
    """A tiny agent with 2 events whose event head says event 0 with probability p_event0, event 1
    never."""
    ag = Agent(64, (3, 2), mtp=1, hidden=32, num_bins=41, num_events=2)
    nn.init.zeros_(ag.event[-1].weight)
    ag.event[-1].bias.data = torch.tensor([float(np.log(p_event0 / (1 - p_event0))), -20.0])
    return ag


def test_imagined_events_pay_once_and_death_weighs():
    """The imagined reward pays an event once per episode (the memory takes it after the first
    time), not at all when the context's memory already has it; the continuation head enters the
    returns and the loss weights."""
    torch.manual_seed(0)
    m, ag = tiny(), event_agent()
    z, _, _, a = inputs(B=2, T=3)
    head, calls = ag.events, []
    # not at s_0, then event 0 at every frame
    ag.events = lambda h: head(h) * (len(calls.append(1) or calls) > 1)
    roll = imagine(m, ag, z, a.clamp(min=0), horizon=4, K=2)
    r = roll["rewards"]  # the reward head is zero at init: the events alone
    assert r[:, 0].tolist() == pytest.approx([0.99, 0.99], abs=1e-3) and r[:, 1:].abs().max() < 1e-3
    calls.clear()
    roll2 = imagine(m, ag, z, a.clamp(min=0), horizon=2, K=2,
                    m_ctx=torch.tensor([1.0, 0.0]).expand(2, 3, 2))
    assert roll2["rewards"].abs().max() < 1e-3  # the episode had it before the rollout began
    # p = 0.4 < 0.5: never remembered, so paid its probability at every step
    ag.events = lambda h: head(h) * 0.4
    r = imagine(m, ag, z, a.clamp(min=0), horizon=3, K=2)["rewards"]
    assert r.flatten().tolist() == pytest.approx([0.396] * 6, abs=1e-3)
    assert roll["cont"].shape == (2, 4) and ((roll["cont"] > 0) & (roll["cont"] < 1)).all()
    roll["cont"] = torch.tensor([[1.0, 0.0, 1.0, 1.0]]).expand(2, 4)  # death on entering s_2
    _, info = imagination_losses(ag, ag.policy, roll)
    assert float(info["alive"]) == pytest.approx(0.0)


def test_policy_keeps_a_memory_of_what_it_saw():
    """Acting, the agent's episode memory takes what its own event head detects (frames in, actions
    out), feeds it back to the agent tokens, and starts empty with every episode."""
    from agent import Policy
    from tokenizer import Tokenizer
    torch.manual_seed(0)
    dyn = tiny()
    tok = Tokenizer(image_size=16, patch_size=4, num_latents=8, latent_dim=8, dim=32, enc_depth=1,
                    dec_depth=1, n_head=2, n_kv_head=2, time_every=1, time_window=1,
                    local_latents=False).eval()
    for p_event0, expect in ((0.99, [1.0, 0.0]), (0.01, [0.0, 0.0])):
        ag = event_agent(p_event0)
        policy = Policy(tok, dyn, ag)
        frames = np.zeros((3, 16, 16, 3), np.uint8)
        policy.act(frames)
        assert policy.memory[:, 0].tolist() == [expect] * 3
        before = ag.slots(3, 1, 0, torch.zeros(3, 1, 2))
        # the tokens read it
        assert torch.equal(ag.slots(3, 1, 0, policy.memory), before) == (p_event0 < 0.5)
        policy.keep([0, 2])
        assert policy.memory.shape == (2, 1, 2)
        policy.reset()
        assert policy.memory is None  # a new episode remembers nothing


def test_event_death_and_value_losses_by_hand():
    """The event head learns the transition into frame t (frames 1..), unknown targets (-1) count
    nowhere; the continuation head learns 1 - terminal; the value head learns returns on BC's
    windows only."""
    from agent import cont_loss, event_loss, value_loss_data
    ag = event_agent(0.7)
    h = torch.randn(2, 3, 1, 64)
    events = torch.tensor([[[1, 0], [0, -1], [0, 0]], [[-1, -1], [1, 1], [0, 0]]], dtype=torch.int8)
    p = ag.events(h)  # (2, 3, 2), 0.7 for event 0, ~0 for event 1

    def bce(q, y):
        return -np.log(q) if y else -np.log(1 - q)
    pairs = [(p[0, 1, 0], 1), (p[0, 1, 1], 0), (p[0, 2, 0], 0), (p[1, 2, 0], 1), (p[1, 2, 1], 1)]
    assert event_loss(ag, h, events).item() == pytest.approx(
        np.mean([bce(q.item(), y) for q, y in pairs]), rel=1e-3)
    terminal = torch.tensor([[0, 0, 1], [-1, -1, -1]], dtype=torch.int8)
    c = ag.continues(h)
    by_hand = np.mean([bce(c[0, 0].item(), 1), bce(c[0, 1].item(), 1), bce(c[0, 2].item(), 0)])
    assert cont_loss(ag, h, terminal).item() == pytest.approx(by_hand, rel=1e-4)
    nn.init.normal_(ag.value[-1].weight)
    returns = torch.tensor([[1.0, 2.0, 3.0], [50.0, 50.0, 50.0]])
    only_first = value_loss_data(ag, h[:1], returns[:1], torch.tensor([True]))
    assert (value_loss_data(ag, h, returns, torch.tensor([True, False])).item()
            == pytest.approx(only_first.item()))
    assert value_loss_data(ag, h, returns, torch.tensor([False, False])).item() == 0
