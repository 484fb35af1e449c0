"""Dynamics (§D): shortcut forcing by hand, causality, actions, cached generation, bad input (the
trainer end to end: test_train_dynamics.py)."""
import pytest
import torch

from common import ConfigError
from dynamics import (TAU_CTX, Dynamics, ShortcutLoss, append_frames, check_tokenizer, generate,
                      next_frame, prev_actions, sample_tau_d, shortcut_loss)
from model import KVCache
from play import compile_step

TINY = dict(num_latents=8, latent_dim=8, pack=2, action_classes=(3, 2), dim=64, depth=4, n_head=4,
            n_kv_head=2, time_every=2, num_registers=2, k_max=8, max_frames=12)


def tiny(**kw):
    torch.manual_seed(0)
    return Dynamics(**{**TINY, **kw}).eval()


def inputs(B=2, T=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, 8, 8, generator=g)
    tau = torch.randint(0, 8, (B, T), generator=g) / 8
    d = 1 / 2.0 ** torch.randint(0, 4, (B, T), generator=g)
    a = torch.stack((torch.randint(-1, 3, (B, T), generator=g),
                     torch.randint(-1, 2, (B, T), generator=g)), -1)
    return z, tau, d, a


# ----------------------------------------------------------------------------------------- the loss

def test_shortcut_loss_by_hand():
    """f(z, tau, d) = theta z + tau + d on scalar latents; frame 0 flow (d = d_min), frame 1
    bootstrap. Expected values worked out by hand below; the gradient must come from the student
    only (sg on the target)."""
    theta = torch.tensor(0.5, requires_grad=True)
    calls = []

    def f(z, tau, d, a):
        calls.append(torch.is_grad_enabled())
        return theta * z + tau[..., None, None] + d[..., None, None]

    z1, z0 = torch.tensor([0.8, -0.4]).view(1, 2, 1, 1), torch.tensor([0.3, 1.2]).view(1, 2, 1, 1)
    tau, d = torch.tensor([[0.25, 0.5]]), torch.tensor([[0.25, 0.5]])  # k_max = 4: d_min = 0.25
    flow, boot, is_boot = shortcut_loss(f, z1, tau, d, torch.zeros(1, 2, 0, dtype=torch.long),
                                        1, 4, z0)
    # frame 0: z_tilde = .75*.3 + .25*.8 = .425; z1_hat = .5*.425 + .25 + .25 = .7125;
    # w = .9*.25 + .1 = .325
    assert flow[0, 0].item() == pytest.approx(0.325 * (0.7125 - 0.8) ** 2)
    # frame 1: z_tilde = .5*1.2 - .5*.4 = .4; z1_hat = .2 + 1 = 1.2;
    # b1 = (f(.4, .5, .25) - .4) / .5 = (.95 - .4) / .5 = 1.1; z_mid = .4 + 1.1*.25 = .675;
    # b2 = (f(.675, .75, .25) - .675) / .25 = (1.3375 - .675) / .25 = 2.65; target 1.875;
    # v_hat = (1.2 - .4) / .5 = 1.6; loss = w (1 - tau)^2 (v_hat - target)^2, w = .55
    assert boot[0, 1].item() == pytest.approx(0.55 * 0.25 * (1.6 - 1.875) ** 2)
    # teacher passes under no_grad
    assert is_boot.tolist() == [[False, True]] and calls == [True, False, False]
    (flow[0, 0] + boot[0, 1]).backward()
    # d/dtheta: flow .325*2*(.7125-.8)*.425; boot .55*.25*2*(1.6-1.875)*(.4/.5): the target
    # contributes nothing
    expected = 0.325 * 2 * (0.7125 - 0.8) * 0.425 + 0.55 * 0.25 * 2 * (1.6 - 1.875) * 0.8
    assert theta.grad.item() == pytest.approx(expected)
    # ramp=False: the same terms with w = 1
    flow1, boot1, _ = shortcut_loss(f, z1, tau, d, torch.zeros(1, 2, 0, dtype=torch.long), 1, 4, z0,
                                    ramp=False)
    assert flow1[0, 0].item() == pytest.approx((0.7125 - 0.8) ** 2)
    assert boot1[0, 1].item() == pytest.approx(0.25 * (1.6 - 1.875) ** 2)


@pytest.mark.parametrize("teacher_forcing", [False, True])
def test_teacher_passes_read_which_past(teacher_forcing):
    """Pins shortcut_loss's documented approximation: with diffusion forcing alone, the second
    teacher pass feeds the earlier bootstrap frames moved to z_mid (not the student's past); with
    teacher forcing, both teacher passes read the student's own context copy."""
    torch.manual_seed(0)
    calls = []

    def f(z, tau, d, a, twin=False):  # records its inputs; predicts a fixed function of them
        calls.append((z.clone(), tau.clone(), d.clone()))
        return 0.5 * z
    T = 6
    crit = ShortcutLoss(k_max=4, ramp=False, teacher_forcing=teacher_forcing, zero_frac=0.0)
    crit(f, torch.randn(2, T, 8, 8), torch.zeros(2, T, 1, dtype=torch.long), 1.0)
    student, first, second = calls
    n = len(first[0])
    if teacher_forcing:  # (n, 2T, ...): the context copy first, the targets after it
        for z, tau, d in (first, second):
            assert (torch.equal(z[:, :T], student[0][:n, :T])
                    and torch.equal(tau[:, :T], student[1][:n, :T]))
            assert torch.equal(d[:, :T], student[2][:n, :T])
    else:
        boot = student[2][:n] > 1 / 4  # the bootstrap frames: the later ones read the earlier
        assert boot[:, :-1].any()
        # pass one: the student's noisy frames, at d / 2
        assert torch.equal(first[0], student[0][:n])
        assert not torch.allclose(second[0][boot], student[0][:n][boot])  # pass two: moved to z_mid
        assert torch.equal(second[0][~boot], student[0][:n][~boot])  # flow frames ride along as is


def test_d_min_is_flow_matching():
    m = tiny()
    z1, tau, _, a = inputs()
    d = torch.full_like(tau, 1 / 8)
    calls = []
    f = lambda *x: calls.append(1) or m(*x)
    flow, boot, is_boot = shortcut_loss(f, z1, tau, d, a, 2, 8, torch.zeros_like(z1))
    z1_hat = m(tau[..., None, None] * z1, tau, d, a)
    # the 2 clips drawn for bootstrapping run their teacher passes (deciding on the host would sync
    # a GPU), but with no frame at d > d_min every frame takes the flow term
    assert len(calls) == 3 and not is_boot.any() and boot.shape == (2, tau.shape[1])
    assert torch.allclose(flow, (0.9 * tau + 0.1) * ((z1_hat - z1) ** 2).mean((-1, -2)))
    crit = ShortcutLoss(8, ramp=True, teacher_forcing=False, zero_frac=0.0).train()
    calls.clear()
    loss, terms = crit(f, z1, a, bootstrap_frac=0.0)  # no clip drawn: no teacher passes
    assert len(calls) == 1 and terms["boot"].item() == 0 and terms["n_boot"] == 0
    # one RMS step: the loss is flow over its RMS
    assert torch.allclose(terms["flow"], crit.norm.ms.sqrt() * loss)


def test_sample_tau_d_grid():
    torch.manual_seed(0)
    tau, d, n_boot = sample_tau_d(64, 16, 8, 0.25)
    k = (1 / d).round()
    assert (set(k.unique().tolist()) <= {1, 2, 4, 8} and ((tau * k) == (tau * k).round()).all()
            and (tau < 1).all())
    assert 14 <= n_boot <= 18 and (k[n_boot:] == 8).all() and len(k[:n_boot].unique()) == 4
    assert sample_tau_d(8, 4, 8, 1.0)[2] == 8 and sample_tau_d(8, 4, 8, 0.0)[2] == 0
    # context frames: as generation feeds them
    tau, d, _ = sample_tau_d(64, 16, 8, 1.0, context_frac=0.5)
    ctx = tau == TAU_CTX
    assert (0.4 < ctx.float().mean() < 0.6 and (d[ctx] == 1 / 8).all()
            and ((tau[~ctx] * 8) % 1 == 0).all())
    tau0 = sample_tau_d(64, 16, 8, 1.0)[0]
    # half the frames at pure noise, d as drawn
    tau, d, _ = sample_tau_d(64, 16, 8, 1.0, zero_frac=0.5)
    assert 0.55 < (tau == 0).float().mean() < 0.8 and (tau0 == 0).float().mean() < 0.55
    assert set((1 / d).round().unique().tolist()) == {1, 2, 4, 8}


# ---------------------------------------------------------------------------------------- the model

@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_block_causal(softcap):
    m = tiny(softcap=softcap)
    z, tau, d, a = inputs()
    out = m(z, tau, d, a)
    z2, tau2, d2, a2 = z.clone(), tau.clone(), d.clone(), a.clone()
    z2[:, 3:] += 1
    tau2[:, 3:], d2[:, 3:], a2[:, 3:] = 0.5, 1.0, 1
    out2 = m(z2, tau2, d2, a2)
    assert torch.equal(out[:, :3], out2[:, :3]) and (out[:, 3:] - out2[:, 3:]).abs().max() > 1e-3


def test_teacher_forcing_twin():
    """A clip fed twice (twin=True): each target frame t equals the model run on the context
    frames < t followed by that frame alone (what generation runs), and each context frame equals
    the plain causal run of the context."""
    m = tiny()
    past, tau, d, a = inputs()
    z = torch.randn_like(past)
    B, T = tau.shape
    tau_p = torch.full_like(tau, TAU_CTX)
    out = m(torch.cat((past, z), 1), torch.cat((tau_p, tau), 1), torch.cat((d, d), 1),
            torch.cat((a, a), 1), twin=True)
    assert torch.allclose(out[:, :T], m(past, tau_p, d, a), atol=1e-5)
    for t in range(T):
        ref = m(torch.cat((past[:, :t], z[:, t:t + 1]), 1),
                torch.cat((tau_p[:, :t], tau[:, t:t + 1]), 1), d[:, :t + 1], a[:, :t + 1])[:, -1]
        assert torch.allclose(out[:, T + t], ref, atol=1e-5)
    # the clip's length counts, not twice it
    with pytest.raises(ValueError, match="longer than the 12 frames"):
        m(*(torch.cat((x, x), 1) for x in (z.repeat(1, 3, 1, 1), tau.repeat(1, 3), d.repeat(1, 3),
                                           a.repeat(1, 3, 1))), twin=True)
    # the loss with teacher forcing: the network sees every clip twice, in the student and both
    # teacher passes
    torch.manual_seed(0)
    shapes = []
    f = lambda *x, **kw: shapes.append((x[0].shape[1], kw.get("twin"))) or m(*x, **kw)
    loss, terms = ShortcutLoss(8, zero_frac=0.0).train()(f, past, a, bootstrap_frac=1.0)
    assert shapes == [(2 * T, True)] * 3 and terms["n_boot"] == B and torch.isfinite(loss)
    shapes.clear()
    ShortcutLoss(8, ramp=True, zero_frac=0.0)(f, past[:, :1], a[:, :1], bootstrap_frac=0.0)
    assert shapes == [(1, None)]  # a single frame has no past: fed once


def test_actions():
    m = tiny()
    # (1, 4, 2): unlabeled, partly, partly, fully labeled
    a = torch.tensor([[[-1, -1], [2, -1], [-1, 1], [0, 1]]])
    tok = m.action_token(a)[0]
    # component 0 (3-way), component 1 (2-way)
    e0, e1 = m.action_embed.weight[:3], m.action_embed.weight[3:]
    assert torch.equal(tok[0], m.action_base)  # unlabeled: the base embedding only
    assert (torch.allclose(tok[1], m.action_base + e0[2])
            and torch.allclose(tok[2], m.action_base + e1[1]))
    assert torch.allclose(tok[3], m.action_base + e0[0] + e1[1])
    # learned tokens: small, never zero (§P)
    assert m.action_base.abs().min() > 0 and m.registers.abs().min() > 0
    # frame t's token carries a_{t-1}: the action that led into it; frame 0 of a window gets none
    assert prev_actions(a).tolist() == [[[-1, -1], [-1, -1], [2, -1], [-1, 1]]]
    # an empty action spec (plain video) works and gives the base embedding only
    m0 = tiny(action_classes=())
    assert torch.equal(m0.action_token(torch.zeros(1, 2, 0, dtype=torch.long))[0, 1],
                       m0.action_base)


@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_cached_equals_uncached(softcap):
    m = tiny(softcap=softcap)
    z, _, _, a = inputs(B=2, T=9)
    run = lambda cache: generate(m, z[:, :4], a, 5, K=4, generator=torch.Generator().manual_seed(3),
                                 use_cache=cache)
    cached, uncached = run(True), run(False)
    assert cached.shape == (2, 5, 8, 8)
    assert torch.allclose(cached, uncached, atol=1e-4), (cached - uncached).abs().max()
    a2 = a.clone()
    a2[:, 4:] = (a2[:, 4:] + 1) % 2
    assert not torch.allclose(cached, generate(m, z[:, :4], a2, 5,
                                               generator=torch.Generator().manual_seed(3)))


def test_compiled_generation_compiles_once():
    """Compiled at fixed shapes as play.py compiles it (C++ wrapper on a CPU; imagination compiles
    the same way without it), the closed loop gives the eager frames, and the KV cache's fixed
    shapes keep it to one graph per kind of pass: frames after the first compile nothing new."""
    m = tiny()
    z, _, _, a = inputs(B=1, T=9)
    a_in, graphs, out = prev_actions(a), [], []
    torch._dynamo.reset()
    for model in (compile_step(m, "cpu"), m):
        g, cache, frames = torch.Generator().manual_seed(3), KVCache(), []
        with torch.no_grad():
            append_frames(model, z[:, :4], a_in[:, :4], cache, torch.randn(1, 4, 8, 8, generator=g))
            for t in range(4, 9):
                frames.append(next_frame(model, cache, a_in[:, t:t + 1], 2,
                                         torch.randn(1, 1, 8, 8, generator=g)))
                append_frames(model, frames[-1], a_in[:, t:t + 1], cache,
                              torch.randn(1, 1, 8, 8, generator=g))
                graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        out.append(torch.cat(frames, 1))
    assert graphs[0] == graphs[4], graphs[:5]
    assert torch.allclose(out[0], out[1], atol=1e-4), (out[0] - out[1]).abs().max()


def test_generation_schedule():
    """Cached: the context once at tau = 0.9 (d_min), then per new frame K steps of d = 1/K from
    tau = 0 on that frame alone, then the finished frame, re-noised to 0.9 (d_min), appended;
    nothing is appended after the last one."""
    m = tiny()
    z, _, _, a = inputs(B=1, T=6)
    seen, forward = [], m.forward
    m.forward = lambda zz, tau, d, aa, cache=None: (seen.append((zz, tau, d))
                                                    or forward(zz, tau, d, aa, cache))
    out = generate(m, z[:, :4], a, 2, K=4, generator=torch.Generator().manual_seed(0))
    # (frames, taus..., ds...)
    got = [(zz.shape[1], *tau[0].tolist(), *d[0].tolist()) for zz, tau, d in seen]
    steps = [(1, i / 4, 0.25) for i in range(4)]
    expected = [(4, *[0.9] * 4, *[0.125] * 4)] + steps + [(1, 0.9, 0.125)] + steps
    assert (len(got) == len(expected)
            and all(g == pytest.approx(e) for g, e in zip(got, expected))), got
    # generate draws this first
    eps = torch.randn(1, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    # the context, re-noised to 0.9
    assert torch.allclose(seen[0][0], 0.9 * z[:, :4] + 0.1 * eps[:, :4])
    # the finished frame, likewise
    assert torch.allclose(seen[5][0], 0.9 * out[:, :1] + 0.1 * eps[:, 4:5])


def test_latent_std_scales_generation():
    """A model with latent_std s works on latents / s: its rollout from s * z is s times the unit
    model's from z (same weights, same noise), so the noise of §D meets latents at its own
    scale."""
    z, _, _, a = inputs(B=2, T=7)
    run = lambda m, ctx: generate(m, ctx, a, 3, K=2, generator=torch.Generator().manual_seed(5))
    unit, scaled = run(tiny(), z[:, :4]), run(tiny(latent_std=0.4), 0.4 * z[:, :4])
    assert (torch.allclose(scaled, 0.4 * unit, atol=1e-5)
            and not torch.allclose(unit, 0.4 * unit, atol=1e-2))


def test_bad_generate_inputs():
    m = tiny()
    z, _, _, a = inputs(B=1, T=13)
    with pytest.raises(ValueError, match="1/K must be a multiple of d_min"):
        generate(m, z[:, :4], a[:, :8], 4, K=3)
    with pytest.raises(ValueError, match="1/K must be a multiple of d_min"):
        generate(m, z[:, :4], a[:, :8], 4, K=16)
    with pytest.raises(ValueError, match="longer than the 12 frames this model was trained on"):
        generate(m, z[:, :8], a, 5)
    with pytest.raises(ValueError, match="longer than the 12 frames"):
        m(z, *inputs(1, 13)[1:])  # training windows over max_frames: an error, not a silent crop


def test_check_tokenizer():
    tok = {"image_size": 16, "latent_shape": (8, 8)}
    check_tokenizer(tok, "t.pt", 16, (8, 8))
    with pytest.raises(ConfigError, match="trained on 16px frames but the data has 32px"):
        check_tokenizer(tok, "t.pt", 32)
    with pytest.raises(ConfigError,
                       match=r"latents \(8, 8\) but the dynamics model was trained on \(16, 32\)"):
        check_tokenizer(tok, "t.pt", 16, (16, 32))
