"""The agent (§A): agent tokens on the dynamics transformer, heads with multi-token prediction, the
losses of phase 2 (behavior cloning, reward) and phase 3 (lambda-returns, value, PMPO), the
imagination rollout, and the policy that plays the real game from pixels.

    frames --tokenizer--> latents --dynamics + agent tokens--> h (B, T, n, D)
           --heads--> policy, reward, value

Alignment: frame t's agent tokens read frames <= t and, via the action tokens, the actions a_{<t}.
policy head, offset k:  p(a_{t+k} | h_t)    k = 0..mtp; k = 0 acts
reward head, offset k:  p(r_{t+k-1} | h_t)  r_{t-1} is the reward of the transition into frame t, so
                                            offset 0 sees the frame it led to and the action taken
event head:             p(e_{t-1,k} | h_t)  event k (an achievement, each time) on that transition
continuation head:      p(c_t | h_t)        c_t = 0: frame t is terminal (the episode died there)
value head:             v(h_t)              ~ sum_k gamma^k r_{t+k} the return after frame t
Rewards and values are symexp two-hot distributions over bins uniform in symlog space.
Episode memory (ours, in the spirit of the paper's task inputs): m_t (K,) = the events of the
transitions into frames 1..t-1, added to the agent tokens' input. In the data it comes from the
store; when acting and imagining the agent keeps it from its own event head (frames in, actions
out). With events the reward head learns the reward without its achievement term, and the imagined
reward pays each event once per episode: r = reward head + sum_k p(e_k) (1 - m_k), Crafter's reward
with the episode's state made explicit, so repeating an event never pays.
"""
import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from common import ConfigError, autocast_ctx, load_checkpoint, resolve_dtype
from dynamics import Dynamics, append_frames, next_frame, prev_actions
from model import KVCache
from tokenizer import load_tokenizer, tokenizer_path

GAMMA = 0.997  # §A.2 discount (the paper's)
LAMBDA = 0.95  # §A.2 lambda of the lambda-return: the paper gives none; DreamerV3's default


# --------------------------------------------------------------------------------------------------
# symexp two-hot (§A)

def symlog(x):
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x):
    return torch.sign(x) * torch.expm1(x.abs())


def twohot(x, bins):
    """x (...) -> (..., nbins): symlog(x) spread over its two nearest bins, weights by distance
    (they sum to 1)."""
    y = symlog(x).clamp(bins[0], bins[-1])
    # hi (...): the upper neighbour
    hi = torch.searchsorted(bins, y.contiguous(), right=True).clamp(1, len(bins) - 1)
    lo_v, hi_v = bins[hi - 1], bins[hi]
    w_hi = ((y - lo_v) / (hi_v - lo_v))[..., None]
    out = torch.zeros(*y.shape, len(bins), device=y.device)
    return out.scatter_(-1, hi[..., None] - 1, 1 - w_hi).scatter_add_(-1, hi[..., None], w_hi)


def twohot_loss(logits, x, bins):
    """Cross-entropy of logits (..., nbins) against the two-hot of x (...): (...)."""
    return -(twohot(x, bins) * F.log_softmax(logits.float(), -1)).sum(-1)


def twohot_mean(logits, bins):
    """Prediction: symexp of the expected bin value under softmax(logits) (..., nbins) -> (...)."""
    return symexp((F.softmax(logits.float(), -1) * bins).sum(-1))


# --------------------------------------------------------------------------------------------------
# agent tokens and heads (§A.1)

def mlp(d_in, hidden, d_out, zero_out=False):
    """A small head: RMSNorm, Linear, SiLU, Linear. zero_out: the last layer starts at zero
    (predicts 0 at first)."""
    net = nn.Sequential(nn.RMSNorm(d_in), nn.Linear(d_in, hidden), nn.SiLU(),
                        nn.Linear(hidden, d_out))
    if zero_out:
        nn.init.zeros_(net[-1].weight), nn.init.zeros_(net[-1].bias)
    return net


class Agent(nn.Module):
    """Agent-token slots and task embedding (inputs), and the policy, reward and value heads
    (on their outputs)."""

    def __init__(self, dim, action_classes, num_tokens=1, num_tasks=1, mtp=8, hidden=256,
                 num_bins=255, num_events=0, memory=True):
        super().__init__()
        self.action_classes, self.mtp, self.num_events = list(action_classes), mtp, num_events
        # learned tokens are small and random, never zero (§P)
        self.tokens = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.task_embed = nn.Parameter(torch.randn(num_tasks, dim) * 0.02)
        self.memory_embed = (nn.Linear(num_events, dim, bias=False) if memory and num_events
                             else None)
        if self.memory_embed is not None:
            nn.init.normal_(self.memory_embed.weight, std=0.02)
        d_in, A = num_tokens * dim, sum(self.action_classes)
        # one output layer per MTP offset, side by side
        self.policy = mlp(d_in, hidden, (mtp + 1) * A)
        self.reward = mlp(d_in, hidden, (mtp + 1) * num_bins, zero_out=True)
        self.value = mlp(d_in, hidden, num_bins, zero_out=True)
        self.event = mlp(d_in, hidden, max(1, num_events))  # (a dummy output without events)
        self.cont = mlp(d_in, hidden, 1)
        self.register_buffer("bins", torch.linspace(-20, 20, num_bins),  # symlog space
                             persistent=False)

    def slots(self, B, T, task=0, memory=None):
        """The agent tokens' inputs (B, T, n, D): the learned slots plus the task embedding (plus
        the episode memory (B, T, K) where the agent has one)."""
        x = (self.tokens + self.task_embed[task]).expand(B, T, -1, -1)
        if self.memory_embed is None:
            return x
        memory = torch.zeros(B, T, self.num_events, device=x.device) if memory is None else memory
        return x + self.memory_embed(memory.float())[:, :, None]

    def events(self, h):
        """h (..., n, D) -> p(event k on the transition into this frame) (..., K)."""
        return torch.sigmoid(self.event(h.flatten(-2).float())[..., :self.num_events])

    def continues(self, h):
        """h (..., n, D) -> p(this frame is not terminal) (...)."""
        return torch.sigmoid(self.cont(h.flatten(-2).float())[..., 0])

    def policy_logits(self, h, offset=None, head=None):
        """h (..., n, D) -> one logit tensor per action component, (..., mtp + 1, classes), or
        (..., classes) at one MTP offset. head: another policy head's (the behavioral prior's)."""
        head = self.policy if head is None else head
        logits = rearrange(head(h.flatten(-2).float()), "... (k a) -> ... k a", k=self.mtp + 1)
        logits = logits if offset is None else logits[..., offset, :]
        return logits.split(self.action_classes, -1)

    def reward_logits(self, h):
        """h (..., n, D) -> (..., mtp + 1, nbins)."""
        return rearrange(self.reward(h.flatten(-2).float()), "... (k b) -> ... k b", k=self.mtp + 1)

    def value_logits(self, h):
        return self.value(h.flatten(-2).float())  # (..., nbins)


def log_prob(logits, actions):
    """ln pi(a|s) of actions (..., C) under a logit tensor (..., classes) per component, summed."""
    return sum(F.log_softmax(lg, -1).gather(-1, actions[..., c:c + 1])[..., 0]
               for c, lg in enumerate(logits))


def entropy(logits):
    return sum(-(F.softmax(lg, -1) * F.log_softmax(lg, -1)).sum(-1) for lg in logits)


def kl(logits, prior_logits):
    """KL[pi || pi_prior] (...), summed over the action components (the reverse KL of §A.3)."""
    return sum((F.softmax(p, -1) * (F.log_softmax(p, -1) - F.log_softmax(q, -1))).sum(-1)
               for p, q in zip(logits, prior_logits))


def sample_actions(logits, temperature=1.0, generator=None):
    """One action per component from logits (..., classes) each -> (..., C) int64: sampled from
    softmax(logits / temperature), or the argmax at temperature 0."""
    pick = lambda lg: lg.argmax(-1) if temperature == 0 else torch.multinomial(
        F.softmax(lg.float().flatten(0, -2) / temperature, -1), 1,
        generator=generator).view(lg.shape[:-1])
    return torch.stack([pick(lg) for lg in logits], -1)


# --------------------------------------------------------------------------------------------------
# phase 2: finetuning with agent tokens (§A.1)

def offsets(x, k, fill):
    """x (B, T, ...) -> (B, T, k + 1, ...): out[:, t, j] = x[:, t + j], `fill` beyond the window."""
    pad = torch.full((x.shape[0], k, *x.shape[2:]), fill, dtype=x.dtype, device=x.device)
    return torch.cat((x, pad), 1).unfold(1, k + 1, 1).movedim(-1, 2)


def bc_targets(actions, slip, keep, labels=None):
    """BC's targets (B, T, C): the data actions (B, T, C) where the demonstrator chose them, its
    labels (B, T, C) where an agent played and it said what it would press (DAgger; -1 elsewhere);
    -1 (none) on its random slips, slip (B, T), and in the windows BC does not learn from, keep (B,)
    False. (The action tokens keep every action really pressed: the states after a slip are the
    demonstrator's recovery, worth cloning.)"""
    targets = actions if labels is None else torch.where(labels >= 0, labels, actions)
    return targets.masked_fill(slip[..., None] | ~keep[:, None, None], -1)


def bc_loss(agent, h, targets):
    """§A.1 behavior cloning with multi-token prediction, -sum_k ln p_k(a_{t+k} | h_t), k = 0..mtp:
    h (B, T, n, D), targets (B, T, C) (bc_targets; -1 none). Mean over the (t, k, component) targets
    inside the window; (loss, offset-0 accuracy)."""
    target = offsets(targets, agent.mtp, -1)  # (B, T, mtp + 1, C)
    logits = agent.policy_logits(h)
    ce = sum(F.cross_entropy(lg.flatten(0, -2), target[..., c].flatten(), ignore_index=-1,
                             reduction="sum") for c, lg in enumerate(logits))
    n = (target >= 0).sum()
    hit = sum(((lg[:, :, 0].argmax(-1) == target[:, :, 0, c]) & (target[:, :, 0, c] >= 0)).sum()
              for c, lg in enumerate(logits))
    return ce / n.clamp(min=1), hit / (target[:, :, 0] >= 0).sum().clamp(min=1)


def reward_loss(agent, h, rewards):
    """§A.1 reward with multi-token prediction, -sum_k ln p_k(r_{t+k-1} | h_t): h (B, T, n, D),
    rewards (B, T) as in the data (reward t leads from frame t to t + 1). Targets are the
    transitions into frames 1..T-1 of the window."""
    # (B, T): the reward of the transition into frame t
    r_in = F.pad(rewards[:, :-1], (1, 0), value=float("nan"))
    target = offsets(r_in, agent.mtp, float("nan"))  # (B, T, mtp + 1)
    ok = ~target.isnan()
    return twohot_loss(agent.reward_logits(h)[ok], target[ok], agent.bins).mean()


def data_targets(rewards, events, episodes, deaths, gamma=GAMMA):
    """Per-frame targets of phase 2 from a store's arrays: rewards (N,), events (N, K) (1 / 0 / -1
    unknown), episodes (E, 2), deaths (E,) (1 / 0 / -1). Returns
      memory (N, K) float32: m_t, the events of the transitions into frames 1..t-1 of its episode
      reward (N,) float32: the reward without its achievement term where events are known (Crafter
               pays 1 for the first unlock of an achievement: the imagined reward pays events from
               the memory instead)
      terminal (N,) int8: 1 at the last frame of an episode that died, 0 elsewhere, -1 in episodes
               not known
      returns (N,) float32: the discounted return-to-go sum_k gamma^k r_{t+k} within the episode
               (0 past a death)."""
    K = events.shape[1]
    memory, terminal = np.zeros(events.shape, np.float32), np.zeros(len(rewards), np.int8)
    reward, returns = np.array(rewards, np.float32), np.zeros(len(rewards), np.float32)
    for (a, b), died in zip(episodes, deaths):
        # seen: the events <= t
        seen = np.maximum.accumulate(events[a:b] == 1, 0) if K else np.zeros((b - a, 0), bool)
        memory[a + 2:b] = seen[:b - a - 2]
        # first (n, K): the first unlocks
        first = (events[a:b] == 1) & ~np.concatenate([np.zeros((1, K), bool), seen[:-1]])
        reward[a:b] -= first.any(1) & (events[a:b] >= 0).all(1)
        terminal[a:b] = -1 if died < 0 else 0
        terminal[b - 1] = died if died >= 0 else -1
        R = 0.0
        for t in range(b - 1, a - 1, -1):
            R = returns[t] = rewards[t] + gamma * R
    return {"memory": memory, "reward": reward, "terminal": terminal, "returns": returns}


def masked_mean(x, mask):
    """The mean of x over mask (same shape), 0 where the mask is empty (no host sync)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def into(x, fill):
    """Per-transition data x (B, T, ...) (x_t: transition t -> t + 1) -> per frame: out[:, t] =
    x[:, t - 1], the transition into frame t; frame 0 of a window gets `fill`."""
    return torch.cat((torch.full_like(x[:, :1], fill), x[:, :-1]), 1)


def event_loss(agent, h, events):
    """Binary cross-entropy of the event head at h_t (B, T, n, D) against the events of the
    transition into frame t, events (B, T, K) as in the data (1 / 0, -1 unknown). Frames 1..T-1 of
    the window."""
    target = into(events, -1).float()
    logits = agent.event(h.flatten(-2).float())[..., :agent.num_events]
    return masked_mean(F.binary_cross_entropy_with_logits(logits, target.clamp(min=0),
                                                          reduction="none"), target >= 0)


def cont_loss(agent, h, terminal):
    """Binary cross-entropy of the continuation head at h_t (B, T, n, D): terminal (B, T) 1 where
    frame t ended its episode in death, 0 where it did not, -1 unknown."""
    logits = agent.cont(h.flatten(-2).float())[..., 0]
    bce = F.binary_cross_entropy_with_logits(logits, 1 - terminal.clamp(min=0).float(),
                                             reduction="none")
    return masked_mean(bce, terminal >= 0)


def value_loss_data(agent, h, returns, keep):
    """§A.2 value head, pretrained on the data (phase 2): v(h_t) against the discounted
    return-to-go of the data returns (B, T) from frame t, on the windows keep (B,)
    (the behavior BC clones): a critic with a long view."""
    return masked_mean(twohot_loss(agent.value_logits(h), returns, agent.bins),
                       keep[:, None].expand_as(returns))


def agent_pass(dyn, agent, z, actions, task=0, generator=None, memory=None):
    """The agent tokens' outputs (B, T, n, D) over real latents z (B, T, L, Dz) and data actions
    (B, T, C) (memory (B, T, K): the episode memory of each frame): frames fed as append_frames
    feeds them (re-noised to signal 0.9), so training sees what acting and imagination see."""
    eps = torch.randn(z.shape, generator=generator, device=z.device)
    return append_frames(dyn, z, prev_actions(actions), None, eps,
                         agent.slots(*z.shape[:2], task, memory))


# --------------------------------------------------------------------------------------------------
# phase 3: imagination RL (§A.2, §A.3)

def lambda_returns(rewards, values, cont=None, gamma=GAMMA, lam=LAMBDA):
    """§A.2 R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1}), R_H = v_H. rewards
    (B, H): r_t of the transition t -> t + 1; values (B, H + 1): v(s_0..s_H); cont (B, H): c_t, 1
    where nothing terminates. -> (B, H)."""
    cont = torch.ones_like(rewards) if cont is None else cont
    R, out = values[:, -1], []
    for t in reversed(range(rewards.shape[1])):
        R = rewards[:, t] + gamma * cont[:, t] * ((1 - lam) * values[:, t + 1] + lam * R)
        out.append(R)
    return torch.stack(out[::-1], 1)


def pmpo_loss(logp, adv, kl_prior, alpha=0.5, beta=0.3, weight=None):
    """§A.3 PMPO (eq. 11): only the sign of the advantage counts.
    L = (1 - alpha) / |D-| sum_{D-} ln pi(a|s) - alpha / |D+| sum_{D+} ln pi(a|s)
        + beta / N sum KL[pi || pi_prior].
    logp, adv, kl_prior (N,). Each set is normalized by its own size. weight (N,): each state's
    weight (the probability that the rollout is still alive there, as DreamerV3 weights imagined
    states; default 1)."""
    w = torch.ones_like(logp) if weight is None else weight
    pos, neg = w * (adv >= 0), w * (adv < 0)
    return ((1 - alpha) * (logp * neg).sum() / neg.sum().clamp(min=1e-6)
            - alpha * (logp * pos).sum() / pos.sum().clamp(min=1e-6)
            + beta * (w * kl_prior).sum() / w.sum())


def reward(agent, h, memory):
    """The reward of the transition into the frames of h (B, T, n, D), given the episode memory
    (B, T, K) before them: the reward head's offset 0 plus each event paid once per episode, sum_k
    p_k (1 - m_k)."""
    return (twohot_mean(agent.reward_logits(h)[..., 0, :], agent.bins)
            + (agent.events(h) * (1 - memory)).sum(-1))


@torch.no_grad()
def imagine(dyn, agent, z_ctx, a_ctx, horizon, K=4, task=0, generator=None, m_ctx=None,
            actions=None, world_window=None):
    """§A.2 rollout from real contexts: z_ctx (B, C, L, Dz) latents, a_ctx (B, C, ncomp) their data
    actions, m_ctx (B, C, K) their episode memory (events only). From the last context frame s_0,
    each step samples a_t from the policy (offset 0) (or takes actions[:, t], (B, H, C) given: an
    open-loop dream of a known action sequence), denoises s_{t+1} in K steps from the KV-cached
    past, appends it and reads the agent tokens: h (B, H + 1, n, D) of s_0..s_H, actions (B, H, C),
    rewards (B, H) of the transitions t -> t + 1 (the reward head's offset 0 at s_{t+1}, plus each
    event paid once: sum_k p_k(s_{t+1}) (1 - m_k)), cont (B, H) p(s_{t+1} is not terminal), z
    (B, H, L, Dz), unlocks (B, H, K) (events detected, p > 0.5, not yet in the memory). The memory
    m goes on from the context's with the events the agent detects. Two pasts of one model: the
    world model dreams from the last world_window frames (the clips it was trained on; None: the
    transformer's time_window), the agent tokens read the dream through the transformer's
    time_window (the window they were finetuned on), as they read the real game in play."""
    B, C = z_ctx.shape[:2]
    m = torch.zeros(B, C, agent.num_events, device=z_ctx.device) if m_ctx is None else m_ctx.float()
    world, past = KVCache(world_window), KVCache()  # the two pasts
    append_frames(dyn, z_ctx, prev_actions(a_ctx), world)
    hs = [append_frames(dyn, z_ctx, prev_actions(a_ctx), past,
                        agent=agent.slots(B, C, task, m))[:, -1:]]
    m = torch.maximum(m[:, -1:], (agent.events(hs[0]) > 0.5).float())  # (B, 1, K): memory of s_1
    acts, zs, rewards, unlocks = [], [], [], []
    for t in range(horizon):
        a = (actions[:, t:t + 1] if actions is not None else sample_actions(
            agent.policy_logits(hs[-1][:, 0], offset=0), generator=generator)[:, None])  # (B, 1, C)
        z = next_frame(dyn, world, a, K)
        append_frames(dyn, z, a, world)
        hs.append(append_frames(dyn, z, a, past, agent=agent.slots(B, 1, task, m)))
        rewards.append(reward(agent, hs[-1], m))  # (B, 1)
        seen = (agent.events(hs[-1]) > 0.5).float()  # (B, 1, K)
        unlocks.append(seen * (1 - m))
        m = torch.maximum(m, seen)
        acts.append(a), zs.append(z)
    h = torch.cat(hs, 1)
    return {"h": h, "actions": torch.cat(acts, 1), "rewards": torch.cat(rewards, 1),
            "cont": agent.continues(h[:, 1:]), "z": torch.cat(zs, 1),
            "unlocks": torch.cat(unlocks, 1)}


def alive_weights(cont):
    """DreamerV3's weights of imagined states: cont (B, H) p(s_{t+1} not terminal) -> (B, H)
    p(alive at s_t) = prod_{j < t} c_j."""
    return torch.cumprod(F.pad(cont[:, :-1], (1, 0), value=1.0), 1)


def imagination_losses(agent, prior, roll, alpha=0.5, beta=0.3, train_policy=True):
    """Value loss (two-hot against the lambda-returns) and PMPO on one rollout; only the policy and
    value heads get gradients. prior: the frozen behavioral prior (a copy of the phase-2 policy
    head). train_policy=False: the value loss alone (a warm-up: with a value still near 0, every
    advantage of a sparse reward is >= 0, and PMPO imitates the policy's own samples, collapsing its
    entropy, §P). -> (loss, metrics)."""
    h, actions, cont = roll["h"], roll["actions"], roll["cont"]  # (B, H + 1, n, D) (B, H, C) (B, H)
    v_logits = agent.value_logits(h)  # (B, H + 1, nbins)
    v = twohot_mean(v_logits, agent.bins).detach()
    R = lambda_returns(roll["rewards"], v, cont)  # (B, H)
    w = alive_weights(cont)  # (B, H)
    value_loss = (w * twohot_loss(v_logits[:, :-1], R, agent.bins)).mean()
    adv = R - v[:, :-1]  # §A.3 A = R - v, its sign only
    logits = agent.policy_logits(h[:, :-1], offset=0)
    with torch.no_grad():
        prior_logits = agent.policy_logits(h[:, :-1], offset=0, head=prior)
    kl_prior = kl(logits, prior_logits)
    policy_loss = pmpo_loss(log_prob(logits, actions).flatten(), adv.flatten(), kl_prior.flatten(),
                            alpha, beta, w.flatten())
    metrics = {"imagined_return": R[:, 0].mean(), "imagined_reward": roll["rewards"].sum(1).mean(),
               "alive": w[:, -1].mean(), "value": v[:, 0].mean(), "entropy": entropy(logits).mean(),
               "kl_prior": kl_prior.mean(), "positive_adv": (adv >= 0).float().mean(),
               "value_loss": value_loss, "policy_loss": policy_loss}
    # 0-dim tensors, read at log steps (no host sync here)
    metrics = {k: v.detach() for k, v in metrics.items()}
    return value_loss + policy_loss if train_policy else value_loss, metrics


# --------------------------------------------------------------------------------------------------
# checkpoints and acting in the real game (§E)

def build(ckpt):
    """Dynamics model, agent and (from imagination on) the behavioral prior of a train_agent
    checkpoint, as one ModuleDict {'dynamics', 'agent'[, 'prior']} with its weights."""
    models = nn.ModuleDict({"dynamics": Dynamics(**ckpt["model_args"]),
                            "agent": Agent(**ckpt["agent_args"])})
    if any(k.startswith("prior.") for k in ckpt["model"]):
        models["prior"] = copy.deepcopy(models["agent"].policy)
    models.load_state_dict(ckpt["model"])
    return models


def load_agent(path, what="agent checkpoint"):
    """A train_agent checkpoint, checked to be one (one clear line otherwise)."""
    return check_agent(load_checkpoint(path, what), path)


def check_agent(ckpt, path):
    """ckpt, checked to be a train_agent checkpoint of today (one clear line otherwise)."""
    if not isinstance(ckpt, dict) or "agent_args" not in ckpt:
        raise ConfigError(f"'{path}' is not an agent checkpoint (made by train_agent.py)")
    if "window" not in ckpt:
        raise ConfigError(f"agent checkpoint '{path}' predates the event, continuation and value "
                          f"heads; train it again with train_agent.py")
    return ckpt


class Policy:
    """Frames in, actions out, in the real game: every frame streams through the tokenizer's and the
    dynamics model's KV caches (a sliding time window, so any episode length costs the same per
    frame); the agent tokens' output goes to the policy head (offset 0), sampled at `temperature`
    (0: argmax). The episode memory goes on from the agent's own event head. Batched: act() takes
    one frame (H, W, 3) or N frames (N, H, W, 3). world_window: the frames its world model dreams
    from (imagine), for tools that dream from the policy's states."""

    def __init__(self, tok, dyn, agent, temperature=1.0, task=0, device="cpu", dtype="float32",
                 world_window=None):
        self.tok, self.dyn, self.agent, self.task, self.device = tok, dyn, agent, task, device
        self.temperature, self.world_window = temperature, world_window
        self.ctx = autocast_ctx(device, dtype)
        self.image_size = tok.image_size  # the frames it takes: (image_size, image_size, 3)
        self.reset()

    def reset(self, seed=0):
        self.tok_cache, self.cache, self.prev, self.memory = KVCache(), KVCache(), None, None
        self.gen = torch.Generator(self.device).manual_seed(seed)

    @torch.no_grad()
    def observe(self, frames):
        """frames uint8 (N, H, W, 3) -> the agent tokens' outputs (N, n, D) for them, after the
        actions taken."""
        x = torch.as_tensor(np.asarray(frames), device=self.device)[:, None]  # (N, 1, H, W, 3)
        N = x.shape[0]
        if self.prev is None:  # an episode's first frame: no action led to it, nothing happened yet
            self.prev = torch.full((N, len(self.agent.action_classes)), -1, dtype=torch.long,
                                   device=self.device)
            self.memory = torch.zeros(N, 1, self.agent.num_events, device=self.device)
        with self.ctx:
            z = self.tok.encode(x, cache=self.tok_cache).float()  # (N, 1, L, Dz)
            eps = torch.randn(z.shape, generator=self.gen, device=self.device)
            slots = self.agent.slots(N, 1, self.task, self.memory)
            h = append_frames(self.dyn, z, self.prev[:, None], self.cache, eps,
                              slots)  # (N, 1, n, D)
        self.memory = torch.maximum(self.memory,
                                    (self.agent.events(h) > 0.5).float())  # what it saw happen
        return h[:, 0]

    def keep(self, rows):
        """Keep only episodes `rows` of the batch (the others ended): their caches, last actions."""
        rows = torch.as_tensor(rows, device=self.device)
        for cache in (self.tok_cache, self.cache):
            cache.select(rows, len(self.prev))
        self.prev, self.memory = self.prev[rows], self.memory[rows]

    def act(self, frame):
        """frame uint8 (H, W, 3) -> action (int, for a one-component spec, else an array), or
        (N, H, W, 3) -> (N, C)."""
        single = np.ndim(frame) == 3
        h = self.observe(np.asarray(frame)[None] if single else frame)
        self.prev = sample_actions(self.agent.policy_logits(h, offset=0), self.temperature,
                                   self.gen)  # (N, C)
        a = self.prev.cpu().numpy()
        return (int(a[0, 0]) if a.shape[1] == 1 else a[0]) if single else a


def load_policy(path, device="cpu", temperature=1.0, time_window=0, dtype="auto",
                tokenizer_ckpt=""):
    """A policy that plays the real game from an agent checkpoint: policy.reset(seed),
    policy.act(frame) -> action. temperature: of the sampled actions (1: the policy as trained; 0:
    argmax). time_window: how many past frames the dynamics model's time layers read (0: the
    checkpoint's, the window its agent was finetuned on). dtype: 'auto' (bf16 where it is fast),
    'bfloat16' or 'float32'. tokenizer_ckpt: its tokenizer, where it is neither where it was trained
    nor beside it (tokenizer_path)."""
    ckpt = load_agent(path)
    models = build(ckpt).to(device).eval().requires_grad_(False)
    models["dynamics"].transformer.time_window = time_window or ckpt["window"]
    tok, _ = load_tokenizer(tokenizer_path(ckpt, path, tokenizer_ckpt), device)
    return Policy(tok, models["dynamics"], models["agent"], temperature, device=device,
                  dtype=resolve_dtype(device, dtype),
                  world_window=ckpt["dynamics_config"]["seq_len"])
