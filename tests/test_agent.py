"""Agent (§A): two-hot, lambda-returns, PMPO, agent tokens, closed-loop primitives, imagination,
events, death, the policy's memory, on tiny models (the main job end to end: test_pipeline.py)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from agent import (Agent, agent_pass, bc_loss, bc_targets, data_targets, imagination_losses,
                   imagine, kl, lambda_returns, offsets, pmpo_loss, reward_loss, symexp, symlog,
                   twohot, twohot_loss, twohot_mean)
from dynamics import append_frames, generate, next_frame, prev_actions
from model import KVCache
from test_dynamics import inputs, tiny


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
    given = torch.stack([torch.randint(0, 3, (3, 5)), torch.randint(0, 2, (3, 5))], -1)
    dreamed = imagine(m, ag, z, a.clamp(min=0), horizon=5, K=2, actions=given)  # open loop
    assert torch.equal(dreamed["actions"], given) and dreamed["z"].shape == (3, 5, 8, 8)
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


def test_imagination_two_pasts():
    """The world model dreams from its own window (world_window), the agent tokens read the dream
    through the transformer's (their finetuning window): the dreamed frames of given actions do
    not depend on the agent's window, and do depend on the world's."""
    m, ag = tiny(), tiny_agent()
    z, _, _, a = inputs(B=2, T=6)
    given = torch.stack([torch.randint(0, 3, (2, 4)), torch.randint(0, 2, (2, 4))], -1)

    def dream(agent_window, world_window):
        m.transformer.time_window = agent_window
        torch.manual_seed(0)
        return imagine(m, ag, z, a.clamp(min=0), horizon=4, K=2, actions=given,
                       world_window=world_window)

    base = dream(2, 8)
    other_agent, other_world = dream(3, 8), dream(2, 2)
    assert torch.equal(base["z"], other_agent["z"])  # the agent's window leaves the dream alone
    assert not torch.allclose(base["h"], other_agent["h"])  # and is what its tokens read
    assert (base["z"] - other_world["z"]).abs().max() > 1e-3  # the world's window is the dream's


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
    assert roll["unlocks"][:, 0].tolist() == [[1, 0]] * 2 and roll["unlocks"][:, 1:].sum() == 0
    calls.clear()
    roll2 = imagine(m, ag, z, a.clamp(min=0), horizon=2, K=2,
                    m_ctx=torch.tensor([1.0, 0.0]).expand(2, 3, 2))
    assert roll2["rewards"].abs().max() < 1e-3  # the episode had it before the rollout began
    assert roll2["unlocks"].sum() == 0
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
