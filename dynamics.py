"""Interactive dynamics model (§D): next-frame latents from past latents and actions, trained with
shortcut forcing so that generating a frame takes only K=4 steps.

    latents (B, T, L, Dz), actions (B, T, C) --shortcut_loss--> loss
        (training, every frame its own tau, d)
    context (B, C, L, Dz), actions            --generate-------> (B, F, L, Dz)
        (K steps per frame, KV cache)

Per frame, S = S_z + S_r + 2 token slots of the shared transformer (model.py), all reading all:
    [ S_z spatial | S_r registers | shortcut (tau, d) | action ]
    (spatial: `pack` consecutive latents concatenated -> linear)
x-prediction: spatial outputs -> linear -> clean latents z1_hat. Block-causal in time, and the
action token of frame t carries a_{t-1} (the action that led into frame t), so frame t+1 is
predicted from frames <= t and a_t. The model works on latents / latent_std (train_dynamics measures
it): unit scale, like the noise z0 it mixes with.
"""
import math
import os

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from common import ConfigError, load_checkpoint
from model import KVCache, RunningRMS, Transformer, init_weights

TAU_CTX = 0.9  # §D.2: context frames are fed re-noised to signal level 0.9


def space_mask(num_world, num_agent=0, device=None):
    """(S, S) bool, True = row may read column: everyone reads the world tokens; agent tokens (§A,
    appended after them) read everything, and nobody else reads them. None without agent tokens: all
    read all, and attention runs unmasked (the fused kernel: ~12% off a CPU training step). Built on
    `device`: no host-to-device copy."""
    if not num_agent:
        return None
    is_agent = torch.arange(num_world + num_agent, device=device) >= num_world
    return is_agent[:, None] | ~is_agent[None, :]


def prev_actions(actions):
    """Data actions (B, T, C) (a_t leads from frame t to t+1) -> action-token inputs: frame t gets
    a_{t-1}, frame 0 of a window gets none (-1, the base embedding only)."""
    return F.pad(actions[:, :-1], (0, 0, 1, 0), value=-1)


class Dynamics(nn.Module):
    def __init__(self, num_latents=16, latent_dim=32, pack=2, action_classes=(17,), dim=256,
                 depth=4, n_head=4, n_kv_head=4, time_every=2, num_registers=4, k_max=4,
                 softcap=0.0, max_frames=64, n_fourier=64, latent_std=1.0, time_window=0):
        super().__init__()
        if num_latents % pack:
            raise ValueError(f"num_latents={num_latents} must be a multiple of pack={pack}")
        if k_max < 1 or k_max & (k_max - 1):
            raise ValueError(f"k_max={k_max} must be a power of 2")
        self.pack, self.k_max = pack, k_max
        # the model works on latents / latent_std (unit scale, like the noise z0)
        self.latent_std = latent_std
        self.num_spatial, self.latent_shape = num_latents // pack, (num_latents, latent_dim)
        S = self.num_spatial + num_registers + 2
        self.latent_in = nn.Linear(pack * latent_dim, dim, bias=False)
        # learned tokens are small and random, never zero (§P)
        self.registers = nn.Parameter(torch.randn(num_registers, dim) * 0.02)
        # Fourier features of tau
        self.register_buffer("freqs", torch.logspace(0, 3, n_fourier // 2), persistent=False)
        # continuous: context is fed at tau = 0.9, off the grid
        self.tau_embed = nn.Linear(n_fourier, dim, bias=False)
        self.d_embed = nn.Embedding(int(math.log2(k_max)) + 1, dim)  # one per level log2(1/d)
        self.action_base = nn.Parameter(torch.randn(dim) * 0.02)
        # all components in one table, at offsets
        self.action_embed = nn.Embedding(max(1, sum(action_classes)), dim)
        self.register_buffer("action_offsets", torch.tensor([0, *action_classes]).cumsum(0)[:-1],
                             persistent=False)
        self.slot_embed = nn.Parameter(torch.randn(S, dim) * 0.02)  # learned per-slot embeddings
        if depth < time_every:
            raise ValueError(f"depth={depth} < time_every={time_every}: the model would have no "
                             f"time layer and could not see the past")
        self.transformer = Transformer(dim, depth, n_head, n_kv_head, time_every, softcap=softcap,
                                       max_frames=max_frames,  # the longest window trained on
                                       # > 0: stream any length, reading the last frames
                                       time_window=time_window)
        self.latent_out = nn.Linear(dim, pack * latent_dim, bias=False)  # x-prediction head
        init_weights(self)
        nn.init.normal_(self.d_embed.weight, std=0.02)
        nn.init.normal_(self.action_embed.weight, std=0.02)
        self.register_buffer("space_mask", space_mask(S), persistent=False)  # None: all read all
        self.num_slots = S

    def level(self, d):
        """Step sizes d (B, T) on the grid {1, 1/2, ..., 1/k_max} -> embedding index log2(1/d)."""
        return torch.round(-torch.log2(d)).long()

    def action_token(self, actions):
        """actions (B, T, C) -> (B, T, D): the base embedding plus one embedding per labeled
        component (§D); an unlabeled component (-1) adds nothing, so an unlabeled frame gets the
        base embedding only."""
        labeled = (actions >= 0)[..., None]  # (B, T, C, 1)
        comps = (self.action_embed((actions + self.action_offsets).clamp(min=0))
                 * labeled)  # (B, T, C, D)
        return self.action_base + comps.sum(2)

    def forward(self, z, tau, d, actions, cache=None, twin=False, agent=None):
        """z (B, T, L, Dz) noisy latents at signal levels tau (B, T), step sizes d (B, T),
        action-token inputs actions (B, T, C) (from prev_actions; -1 = unlabeled) -> z1_hat
        (B, T, L, Dz), the clean latents (§D).
        twin: the T frames are a clip as context, then that clip as targets (model.twin_time_mask).
        agent (B, T, n, D): agent tokens (§A) appended to every frame; they read every token of
        frames <= t and no other token reads them, so z1_hat is unchanged. Then returns (z1_hat,
        their outputs (B, T, n, D))."""
        B, T = z.shape[:2]
        spatial = self.latent_in(rearrange(z, "B T (s p) z -> B T s (p z)",
                                           p=self.pack))  # (B, T, S_z, D)
        ang = tau[..., None].float() * self.freqs  # (B, T, n_fourier / 2)
        shortcut = (self.tau_embed(torch.cat((ang.sin(), ang.cos()), -1))
                    + self.d_embed(self.level(d)))  # (B, T, D)
        action = self.action_token(actions)  # (B, T, D)
        x = torch.cat((spatial, self.registers.expand(B, T, -1, -1), shortcut[:, :, None],
                       action[:, :, None]), 2)
        x, mask = x + self.slot_embed, self.space_mask
        if agent is not None:
            x = torch.cat((x, agent.to(x.dtype)), 2)
            mask = space_mask(self.num_slots, agent.shape[2], x.device)
        h = self.transformer(x, mask, cache, twin)  # (B, T, S (+ n), D)
        z1_hat = rearrange(self.latent_out(h[:, :, :self.num_spatial]),
                           "B T s (p z) -> B T (s p) z", p=self.pack)
        return z1_hat if agent is None else (z1_hat, h[:, :, self.num_slots:])


# --------------------------------------------------------------------------------------------------
# shortcut forcing (§D.1)

def sample_tau_d(B, T, k_max, bootstrap_frac=1.0, device=None, context_frac=0.0, zero_frac=0.0):
    """Per frame (diffusion forcing, §D): k ~ U{1, 2, 4, ..., K_max}, d = 1/k,
    tau ~ U{0, d, ..., 1 - d}. Only the first n_boot clips (bootstrap_frac of B, rounded
    stochastically) draw k from the full set; the others use d_min = 1/K_max only (flow matching).
    zero_frac of the frames are then put at tau = 0 (pure noise, on every grid), and context_frac of
    them fed as generation feeds its context (tau = TAU_CTX, d = d_min): our departures from §D's
    uniform grid, which spends most frames denoising (docs/experiments.md). Returns tau, d (B, T)
    and n_boot."""
    n_boot = int(bootstrap_frac * B + torch.rand(()).item())
    top = int(math.log2(k_max))
    k = 2.0 ** torch.randint(0, top + 1, (B, T), device=device)  # (B, T)
    k[n_boot:] = k_max
    tau = torch.floor(torch.rand(B, T, device=device) * k) / k  # (B, T) on the grid of its d
    if zero_frac:  # pure noise: the frame is predicted from the past alone (on every d's grid)
        tau = tau.masked_fill(torch.rand(B, T, device=device) < zero_frac, 0.0)
    if context_frac:
        ctx = torch.rand(B, T, device=device) < context_frac  # (B, T)
        tau, k = tau.masked_fill(ctx, TAU_CTX), k.masked_fill(ctx, k_max)
    return tau, 1 / k, n_boot


def shortcut_loss(f, z1, tau, d, actions, n_boot, k_max, z0=None, ramp=True):
    """f(z_tilde, tau, d, actions) -> z1_hat, the network; z1 (B, T, L, Dz) clean latents; tau, d,
    n_boot from sample_tau_d; actions (B, T, C) action-token inputs. Returns the per-frame losses
    times the ramp weight, flow (B, T) and boot (n_boot, T), and is_boot (B, T): which frames take
    the bootstrap term (the others take flow).
    A deliberate approximation (as the public ports): the two teacher passes move every bootstrap
    frame of a clip at once, so with diffusion forcing alone frame t's teacher reads earlier
    bootstrap frames at d/2, and in the second pass at z_mid, a past half a step beyond the one its
    student read. Exact teachers would take a pass per frame. With teacher forcing (the default,
    ShortcutLoss) every target reads the same fixed context copy in the student and teacher passes,
    so the past is the student's (both pinned by a test)."""
    z0 = torch.randn_like(z1) if z0 is None else z0  # noise (§D)
    t = tau[..., None, None]  # (B, T, 1, 1)
    z_tilde = (1 - t) * z0 + t * z1  # §D: z_tilde = (1 - tau) z0 + tau z1
    z1_hat = f(z_tilde, tau, d, actions).float()  # §D x-prediction
    w = 0.9 * tau + 0.1 if ramp else torch.ones_like(tau)  # §D ramp weight w(tau)
    is_boot = d > 1 / k_max  # (B, T); d == d_min: flow loss
    flow = w * ((z1_hat - z1) ** 2).mean((-1, -2))  # §D.1 flow: ||z1_hat - z1||^2
    # (the teacher passes run even if no frame drew d > d_min: no host sync)
    boot = z1.new_zeros(0, z1.shape[1])
    if n_boot:
        zt, tb, dt, ib, a = (z_tilde[:n_boot], tau[:n_boot], d[:n_boot], is_boot[:n_boot],
                             actions[:n_boot])
        half = torch.where(ib, dt / 2, 0)  # flow frames ride along in the teacher passes, unmoved
        d_in = torch.where(ib, dt / 2, dt)
        t, h = tb[..., None, None], half[..., None, None]
        with torch.no_grad():  # §D.1 the target carries no gradient: sg(.)
            # §D.1 b1 = (f(z_tilde, tau, d/2) - z_tilde) / (1 - tau)
            b1 = (f(zt, tb, d_in, a).float() - zt) / (1 - t)
            z_mid = zt + b1 * h  # §D.1 z_mid = z_tilde + b1 d/2
            b2 = (f(z_mid, tb + half, d_in, a).float() - z_mid) / (1 - t - h)  # §D.1 b2 at tau+d/2
            target = (b1 + b2) / 2  # §D.1 sg((b1 + b2) / 2)
        v_hat = (z1_hat[:n_boot] - zt) / (1 - t)  # §D.1 (z1_hat - z_tilde) / (1 - tau)
        # §D.1 (1 - tau)^2 ||.||^2
        boot = w[:n_boot] * (1 - tb) ** 2 * ((v_hat - target) ** 2).mean((-1, -2))
    return flow, boot, is_boot


class ShortcutLoss(nn.Module):
    """Mean over frames of the per-frame shortcut loss (flow or bootstrap), over one running RMS
    (§D, as §T). One normalizer, not one per term: the (1 - tau)^2 factor already puts the
    bootstrap term in x-space scale, and normalizing it on its own amplified the young teacher's
    noisy targets ~10x and stalled learning.
    teacher_forcing: the network sees each clip twice, re-noised to TAU_CTX as context and at the
    drawn (tau, d) as targets, each target reading the context frames before it
    (model.twin_time_mask): every frame trains as the next frame of a past fed as generation feeds
    it, where diffusion forcing's past is noisier (docs/experiments.md)."""

    def __init__(self, k_max, context_frac=0.0, ramp=False, teacher_forcing=True,  # the trainer's
                 zero_frac=0.75):
        super().__init__()
        self.k_max, self.context_frac, self.zero_frac = k_max, context_frac, zero_frac
        self.ramp, self.teacher_forcing = ramp, teacher_forcing
        self.norm = RunningRMS()

    def forward(self, f, z1, actions, bootstrap_frac):
        """f the network; z1 (B, T, L, Dz) clean latents; actions (B, T, C) as in the data ->
        (loss, dict of terms)."""
        B, T = z1.shape[:2]
        tau, d, n_boot = sample_tau_d(B, T, self.k_max, bootstrap_frac, z1.device,
                                      self.context_frac, self.zero_frac)
        a = prev_actions(actions)
        net = f
        if self.teacher_forcing and T > 1:  # a single frame has no past
            # §D.2 context at signal level 0.9
            past = TAU_CTX * z1 + (1 - TAU_CTX) * torch.randn_like(z1)
            tau_past, d_past = torch.full_like(tau, TAU_CTX), torch.full_like(d, 1 / self.k_max)

            # (n, T, L, Dz) targets -> their z1_hat; n = B, or n_boot in the teacher passes
            def net(z, t, s, act):
                n = len(z)
                return f(torch.cat((past[:n], z), 1), torch.cat((tau_past[:n], t), 1),
                         torch.cat((d_past[:n], s), 1), torch.cat((act, act), 1), twin=True)[:, T:]
        flow, boot, is_boot = shortcut_loss(net, z1, tau, d, a, n_boot, self.k_max, ramp=self.ramp)
        n_boot = len(boot)
        per_frame = torch.cat((torch.where(is_boot[:n_boot], boot, flow[:n_boot]),
                               flow[n_boot:]))  # (B, T)
        # 0-dim tensors: no host sync
        terms = {"flow": (flow * ~is_boot).sum() / (~is_boot).sum().clamp(min=1),
                 "boot": (boot * is_boot[:n_boot]).sum() / is_boot.sum().clamp(min=1),
                 "n_boot": n_boot}
        return self.norm(per_frame.mean()), terms


# --------------------------------------------------------------------------------------------------
# generation (§D.2)

def _pass(model, z, tau, d, a, cache, agent):
    """A forward pass at signal level tau, step size d (floats), all frames of z (B, T, L, Dz)."""
    full = lambda v: torch.full(z.shape[:2], v, device=z.device)
    if agent is None:
        return model(z, full(tau), full(d), a, cache), None
    return model(z, full(tau), full(d), a, cache, agent=agent)


def check_K(model, K):
    if model.k_max % K:
        raise ValueError(f"K={K}: 1/K must be a multiple of d_min = 1/{model.k_max}; "
                         f"use K in 1, 2, 4, ..., {model.k_max}")


def sample_frame(f, z, K):
    """§D.2: z (B, 1, L, Dz) pure noise at tau = 0 -> a clean frame in K steps of d = 1/K,
    f(z, tau, d) -> z1_hat."""
    d = 1 / K
    for i in range(K):
        tau = i * d
        z = z + d * (f(z, tau, d).float() - z) / (1 - tau)  # §D.2 z <- z + d (f - z) / (1 - tau)
    return z


def append_frames(model, z, a_in, cache, eps=None, agent=None):
    """Closed-loop primitive 1: finished frames z (B, T, L, Dz) (tokenizer scale) join the past. Fed
    re-noised to signal level 0.9 (§D.2) with action-token inputs a_in (B, T, C) (a_in[:, t] led
    into frame t, prev_actions), their time-layer keys/values are appended to cache. Returns the
    agent tokens' outputs (B, T, n, D) for agent tokens (B, T, n, D), else None. eps (B, T, L, Dz):
    the re-noising noise (default: drawn)."""
    z = z / model.latent_std  # the model's unit-scale latents
    eps = torch.randn_like(z) if eps is None else eps
    return _pass(model, TAU_CTX * z + (1 - TAU_CTX) * eps, TAU_CTX, 1 / model.k_max,
                a_in, cache, agent)[1]


def next_frame(model, cache, a_in, K=4, z0=None, agent=None):
    """Closed-loop primitive 2: the next frame (B, 1, L, Dz) (tokenizer scale) from the cached past
    and a_in (B, 1, C), the action that leads into it: K denoising steps that read the cache and
    append nothing. z0: the starting noise (default: drawn). With agent tokens in the cache, pass
    them here too (B, 1, n, D): the slots must match."""
    check_K(model, K)
    z0 = (torch.randn(a_in.shape[0], 1, *model.latent_shape, device=a_in.device) if z0 is None
          else z0)
    view = cache.fork()
    return (sample_frame(lambda z, tau, d: _pass(model, z, tau, d, a_in, view, agent)[0], z0, K)
            * model.latent_std)


@torch.no_grad()
def generate(model, context, actions, num_frames, K=4, generator=None, use_cache=True):
    """context (B, C, L, Dz) clean latents, actions (B, C + F, ncomp) as in the data -> the next
    F = num_frames frames' latents (B, F, L, Dz): a loop over the two closed-loop primitives,
    next_frame then append_frames. use_cache=False re-runs the whole sequence at every step instead
    (same noise, same result up to float error)."""
    B, C, L, Dz = context.shape
    n_max = model.transformer.max_frames
    check_K(model, K)
    if C + num_frames > n_max and not model.transformer.time_window:
        raise ValueError(f"{C} context + {num_frames} new frames is longer than the {n_max} frames "
                         f"this model was trained on (max_frames); use a shorter context")
    if actions.shape[:2] != (B, C + num_frames):
        raise ValueError(f"actions {tuple(actions.shape)} must be (B, C + F, ncomp) = "
                         f"({B}, {C + num_frames}, ...)")
    randn = lambda *s: torch.randn(*s, generator=generator, device=context.device)
    # drawn up front: both paths see the same
    eps, z0 = randn(B, C + num_frames, L, Dz), randn(B, num_frames, L, Dz)
    a_in, s = prev_actions(actions), model.latent_std
    frames = []
    if use_cache:
        cache = KVCache()
        append_frames(model, context, a_in[:, :C], cache, eps[:, :C])
        for j, n in enumerate(range(C, C + num_frames)):
            frames.append(next_frame(model, cache, a_in[:, n:n + 1], K, z0[:, j:j + 1]))
            if n + 1 < C + num_frames:
                append_frames(model, frames[-1], a_in[:, n:n + 1], cache, eps[:, n:n + 1])
        return torch.cat(frames, 1)
    full = lambda n, v: torch.full((B, n), v, device=context.device)
    # the past as append_frames feeds it, uncached
    past = TAU_CTX * context / s + (1 - TAU_CTX) * eps[:, :C]
    for j, n in enumerate(range(C, C + num_frames)):
        f = lambda z, tau, d: model(
            torch.cat((past, z), 1), torch.cat((full(n, TAU_CTX), full(1, tau)), 1),
            torch.cat((full(n, 1 / model.k_max), full(1, d)), 1), a_in[:, :n + 1])[:, -1:]
        z = sample_frame(f, z0[:, j:j + 1], K)
        frames.append(z * s)
        past = torch.cat((past, TAU_CTX * z + (1 - TAU_CTX) * eps[:, n:n + 1]), 1)
    return torch.cat(frames, 1)


# --------------------------------------------------------------------------------------------------
# checkpoints and videos, shared by train_dynamics.py and sample.py

def load_dynamics(path, device="cpu", time_window=None):
    """A dynamics model from a train_dynamics checkpoint, or the world model inside a train_agent
    one, in eval mode. Returns (model, checkpoint dict).
    time_window > 0: time layers read only the last time_window frames, so a stream of any length
    (a real episode) costs the same per frame (RoPE's relative positions: a window no longer than
    the clips trained on)."""
    ckpt = load_checkpoint(path, "dynamics checkpoint")
    if "model_args" not in ckpt or "action_spec" not in ckpt or "tokenizer" not in ckpt:
        raise ConfigError(f"'{path}' is not a dynamics checkpoint (made by train_dynamics.py)")
    model = Dynamics(**ckpt["model_args"])
    agent = "agent_args" in ckpt  # its transformer is the "dynamics." part
    model.load_state_dict({k.removeprefix("dynamics."): v for k, v in ckpt["model"].items()
                           if not agent or k.startswith("dynamics.")})
    if time_window is not None:
        model.transformer.time_window = time_window
    return model.to(device).eval(), ckpt


def check_tokenizer(tok_ckpt, path, image_size, latent_shape=None):
    """One clear line if a tokenizer checkpoint does not fit the data's image size or the expected
    latent shape."""
    if tok_ckpt["image_size"] != image_size:
        raise ConfigError(f"tokenizer '{path}' was trained on {tok_ckpt['image_size']}px frames "
                          f"but the data has {image_size}px")
    if latent_shape is not None and tuple(tok_ckpt["latent_shape"]) != tuple(latent_shape):
        raise ConfigError(f"tokenizer '{path}' has latents {tuple(tok_ckpt['latent_shape'])} but "
                          f"the dynamics model was trained on {tuple(latent_shape)}")


def check_action_spec(data_spec, model_spec, data_dir):
    """One clear line if the data's action spec is not the one the dynamics model was trained on."""
    if data_spec != model_spec:
        show = lambda spec: "[" + ", ".join(f"{c['name']}:{c['classes']}" for c in spec) + "]"
        extra = " (same components, other values)" if show(data_spec) == show(model_spec) else ""
        raise ConfigError(f"{data_dir} has actions {show(data_spec)} but the dynamics model was "
                          f"trained on {show(model_spec)}{extra}")


def side_by_side(real, gen, scale=2):
    """real, gen (B, T, H, W, 3) in [0, 1] -> uint8 video (T, B*H*scale, 2*W*scale, 3): a row per
    clip, real | generated."""
    v = torch.stack((real, gen.clamp(0, 1)), 2).float()  # (B, T, 2, H, W, 3)
    v = (rearrange(v, "B T two H W c -> T (B H) (two W) c")
         .repeat_interleave(scale, 1).repeat_interleave(scale, 2))
    return (v * 255).round().to(torch.uint8).cpu().numpy()


def write_video(path, frames, fps=4):
    """uint8 (T, H, W, 3) -> mp4 (gif by extension or if ffmpeg fails). Returns the path written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not path.endswith(".gif"):
        try:
            iio.imwrite(path, frames, fps=fps, macro_block_size=1)
            return path
        except Exception as e:  # no usable ffmpeg: fall back to a gif beside it
            print(f"warning: could not write {path} ({e}); writing a gif instead")
            path = path.rsplit(".", 1)[0] + ".gif"
    iio.imwrite(path, np.asarray(frames), duration=1000 / fps, loop=0)
    return path
