"""Train the agent (§A) on a dynamics checkpoint: phase 2 finetuning, then phase 3 imagination RL.

    python train_agent.py --phase=finetune --init_ckpt=out/dynamics/ckpt.pt --out_dir=out/agent_bc
    python train_agent.py --phase=imagine --init_ckpt=out/agent_bc/ckpt.pt --out_dir=out/agent_rl
    python eval_agent.py --bc_ckpt=out/agent_bc/ckpt.pt --rl_ckpt=out/agent_rl/ckpt.pt  # real game

finetune (§A.1): agent tokens are appended to every frame of the dynamics transformer, with the
episode memory of events added to their input; their output feeds the policy (behavior cloning on
the demonstrator's own choices: its recorded random slips are inputs, never targets) and reward
heads, both with multi-token prediction, the event and continuation heads, and the value head (on
the data's discounted returns-to-go: a critic with a long view), while the dynamics loss goes on
(the shortcut-forcing recipe of the dynamics checkpoint). BC learns from `bc_data` episodes; the
other losses see all of them. Eval: held-out BC accuracy beside the copy-the-last-action baseline
(§P); precision/recall of the imagined reward's unlocks (reward > 0.5) and of the event head on the
held-out transitions, of the event head on frames dreamed from the data's actions, and of the
continuation head on deaths.
imagine (§A.2): the transformer is frozen and reads the finetuning window (sliding, so any horizon
fits). Rollouts start from real context windows with their episode memory, actions sampled from the
policy, K denoising steps per frame with the KV cache, rewards from the reward head plus each event
paid once (the memory goes on from the agent's own detections), continuation from its head, and a
value bootstrap at the horizon. Only the policy and value heads train: value to the lambda-returns,
policy by PMPO (§A.3) with a KL to the behavioral prior (a frozen copy of the finetuned policy
head), both weighted by the probability of being alive (DreamerV3).
"""
import copy
import os
import time

import numpy as np
import torch
import torch.nn as nn

import common
from agent import (Agent, agent_pass, bc_loss, bc_targets, build, cont_loss, data_targets,
                   event_loss, imagination_losses, imagine, into, load_agent, reward, reward_loss,
                   value_loss_data)
from dynamics import (Dynamics, ShortcutLoss, append_frames, check_action_spec, generate,
                      next_frame, prev_actions)
from model import KVCache, matmul_peak_flops
from store import FrameStore
from tokenizer import cached_latents, load_tokenizer, psnr, to_float, tokenizer_path

# ------------------------------------------------------------------------------------------- config
phase = "finetune"  # 'finetune' (phase 2) | 'imagine' (phase 3)
init_ckpt = ""  # finetune: a dynamics checkpoint (default out/dynamics/ckpt.pt); imagine: a
                # finetuned agent one (default out/agent_bc/ckpt.pt)
data_dir = ""  # default: the data the dynamics model was trained on
tokenizer_ckpt = ""  # default: the one init_ckpt was trained with, or one beside it (a copied run
                     # folder)
out_dir = ""  # default: out/agent_bc (finetune), out/agent_rl (imagine)
init_from = "new"  # 'new' (a run from init_ckpt) | 'resume' (from out_dir/ckpt.pt)
eval_interval = 500
log_interval = 10
max_minutes = 0.0  # stop (with a final eval + checkpoint) after this wall-clock budget, a resume's
                   # earlier minutes included; 0 = no limit
# finetune (phase 2)
batch_size = 32  # windows per step (per process)
seq_len = 2  # the agent's window in finetuning, imagination and play: 4 and 16 clone worse (docs)
bc_data = "all"  # 'all' | 'demo': the episodes behavior cloning learns from (the paper clones
                 # task-relevant data)
bc_weight = 1.0
reward_weight = 1.0
event_weight = 1.0  # the event head (achievements per transition): the imagined reward and memory
cont_weight = 1.0  # the continuation head (death)
death_frac = 0.1  # share of finetuning windows ending at a death (~0.25% of frames: too few alone)
value_weight = 1.0  # the value head on the data's discounted returns-to-go (a long-view critic)
memory = True  # the episode memory of events as an agent-token input (needs a store with events)
memory_noise = 0.05  # finetune: each memory bit of a window flipped with this probability (its
                     # detections err)
num_agent_tokens = 1
mtp = 8  # multi-token prediction: offsets 0..mtp (§A.1, L = 8)
head_hidden = 256
# imagine (phase 3)
horizon = 16  # imagined steps per rollout (§A.2; the paper gives none for Minecraft); any length:
              # the dynamics model reads the finetuning window of past frames (sliding)
context_frames = 8  # real frames each rollout starts from
context_first = 0  # contexts start in an episode's first N frames (0 = anywhere; 200: worse, docs)
imagine_batch = 32  # rollouts per step
sampling_steps = 4  # denoising steps per imagined frame
alpha = 0.5  # §A.3 weight of the positive set
beta = 0.3  # §A.3 weight of the KL to the behavioral prior
value_warmup = 0  # first iterations that train the value head alone (PMPO needs a value to split
                  # D+ from D-)
value_lr = 0.0  # the value head's peak lr (0 = lr): a critic that lags the returns makes most
                # advantages >= 0
# optimizer
lr = 3e-4
min_lr_frac = 0.1
warmup_iters = 50
max_iters = 2000
weight_decay = 0.05
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
muon = True  # finetune: Muon for the transformer's matrices (as the dynamics recipe); imagine
             # trains MLP heads only
# system
device = "auto"
dtype = "auto"
compile = False  # the dynamics model's passes (finetune: shortcut forcing and the agent pass;
                 # imagine: the rollout's)
seed = 1337
threads = 0
# --------------------------------------------------------------------------------------------------
config = common.configure(globals())
common.at_least(config, batch_size=1, imagine_batch=1, sampling_steps=1, max_iters=0,
                warmup_iters=0, value_warmup=0, context_first=0, value_lr=0, weight_decay=0,
                eval_interval=1, log_interval=1, num_agent_tokens=1, head_hidden=1)
common.positive(config, "lr")

ddp, rank, local_rank, world, device = common.setup_ddp(common.auto_device(device))
master = rank == 0
if threads:
    torch.set_num_threads(threads)
dtype = common.resolve_dtype(device, dtype)
ctx = common.autocast_ctx(device, dtype)
if phase not in ("finetune", "imagine"):
    raise common.ConfigError(f"phase={phase!r}: use 'finetune' or 'imagine'")
if init_from not in ("new", "resume"):
    raise common.ConfigError(f"init_from={init_from!r}: use 'new' or 'resume'")
if bc_data not in ("all", "demo"):
    raise common.ConfigError(f"bc_data={bc_data!r}: use 'all' or 'demo'")
if seq_len < 2 or horizon < 1 or context_frames < 1 or mtp < 0:
    raise common.ConfigError("seq_len >= 2, horizon >= 1, context_frames >= 1 and mtp >= 0 "
                             "are needed")
init_ckpt = init_ckpt or {"finetune": "out/dynamics/ckpt.pt",
                          "imagine": "out/agent_bc/ckpt.pt"}[phase]
out_dir = out_dir or {"finetune": "out/agent_bc", "imagine": "out/agent_rl"}[phase]
torch.manual_seed(seed + rank)
rng = np.random.default_rng(seed)  # data: one stream shared by the DDP ranks (store.sample part)
ckpt_path = os.path.join(out_dir, "ckpt.pt")
common.fresh_run(ckpt_path, init_from)

# the starting checkpoint: a dynamics one (finetune), a finetuned agent (imagine), or ours (resume)
if init_from == "resume":
    start = load_agent(ckpt_path, "checkpoint to resume")
    if start["phase"] != phase:
        raise common.ConfigError(f"{ckpt_path} is a {start['phase']} checkpoint, not {phase}")
elif phase == "finetune":
    start = common.load_checkpoint(init_ckpt, "dynamics checkpoint")
    if "agent_args" in start or "action_spec" not in start or "tokenizer" not in start:
        raise common.ConfigError(f"init_ckpt '{init_ckpt}' is not a dynamics checkpoint (made by "
                                 f"train_dynamics.py); finetuning starts from one")
else:
    start = load_agent(init_ckpt, "finetuned agent checkpoint")  # holds the behavioral prior
source = start.get("init", {"path": os.path.abspath(init_ckpt)}) if init_from == "resume" else \
    {"path": os.path.abspath(init_ckpt), "phase": start.get("phase", "dynamics")}
data_dir = data_dir or start["data_dir"]
store = FrameStore(data_dir)
check_action_spec(store.action_spec, start["action_spec"], data_dir)
tok_path = tokenizer_path(start, ckpt_path if init_from == "resume" else init_ckpt, tokenizer_ckpt)
tok_info = {**start["tokenizer"], "path": os.path.abspath(tok_path)}
tok, tok_ckpt = load_tokenizer(tok_info["path"], device)
L, Dz = start["latent_shape"]
store.agent_fields()
rewards_all = np.asarray(store.rewards)
targets = data_targets(rewards_all, store.events, store.episodes, store.deaths)  # per frame
died = store.deaths == 1  # (E,) the episodes that ended in death
died = died if died[store.episode_ids("train")].any() else None  # None: no training episode died
if phase == "finetune" and not np.any(rewards_all != 0):
    raise common.ConfigError(f"{data_dir} has no rewards (rewards.npy is all zero): the reward "
                             f"head has nothing to learn from")
labeled = store.labeled_episodes()  # (E,) episodes with actions
keep = labeled & (store.policies >= 1 if bc_data == "demo" else True)  # (E,) BC learns from these
if phase == "finetune" and not keep.any():
    what = ("demonstrator episodes (policies.npy 1 or 2) with actions" if bc_data == "demo"
            else "labeled episodes")
    raise common.ConfigError(f"{data_dir} has no {what}: behavior cloning needs them")

# models: dynamics transformer with agent tokens, heads, and (imagine) the frozen behavioral prior
model_args = start["model_args"]
window = start.get("window", seq_len)  # the agent tokens' window: the finetuning one, ever after
if phase == "finetune" and seq_len > model_args["max_frames"]:
    raise common.ConfigError(f"seq_len={seq_len} is longer than the {model_args['max_frames']} "
                             f"frames the dynamics model was trained on")
if "agent_args" in start:
    agent_args = start["agent_args"]
    models = build(start)
else:
    agent_args = dict(dim=model_args["dim"],
                      action_classes=[c["classes"] for c in store.action_spec],
                      num_tokens=num_agent_tokens, mtp=mtp, hidden=head_hidden,
                      num_events=len(store.event_names), memory=memory)
    models = nn.ModuleDict({"dynamics": Dynamics(**model_args), "agent": Agent(**agent_args)})
    models["dynamics"].load_state_dict(start["model"])
dyn_config = start.get("dynamics_config", start["config"])  # the dynamics run's recipe
criterion = ShortcutLoss(model_args["k_max"], dyn_config["context_frac"], dyn_config["ramp"],
                         dyn_config["teacher_forcing"], dyn_config["zero_frac"])
if phase == "imagine":
    if "prior" not in models:  # §A.2 the behavioral prior: the phase-2 policy
        models["prior"] = copy.deepcopy(models["agent"].policy)
    models.requires_grad_(False)
    # the only trained parts
    models["agent"].policy.requires_grad_(True), models["agent"].value.requires_grad_(True)
    # the agent reads the dream through its finetuning window
    models["dynamics"].transformer.time_window = window
elif "criterion" in start and init_from == "new":
    criterion.load_state_dict(start["criterion"])  # the dynamics loss's running RMS carries on
models, criterion = models.to(device), criterion.to(device)
common.broadcast_from_rank0(models, ddp)  # the new agent parts were drawn from per-rank seeds
dyn, agent = models["dynamics"], models["agent"]
if phase == "finetune":
    optimizer = common.make_optimizer(models, lr, weight_decay, (beta1, beta2), device, muon,
                                      dtype=dtype)
else:  # the policy and value heads, each at its own peak lr
    optimizer = common.Optimizers(*(
        common.make_optimizer(head, head_lr, weight_decay, (beta1, beta2), device, dtype=dtype)
        for head, head_lr in ((agent.policy, lr), (agent.value, value_lr or lr))))
for g in optimizer.param_groups:
    g["peak_lr"] = g["lr"]  # the schedule below scales each group's own peak
it, minutes_before = 0, 0.0
if init_from == "resume":
    rng, minutes_before = common.restore_training_state(start, models, optimizer, criterion, rng,
                                                        rank, seed)
    it = start["iter"]
start = None
dyn_step = dyn if not compile else torch.compile(dyn, dynamic=False if phase == "imagine" else None)
params = [p for p in models.parameters() if p.requires_grad]
peak = matmul_peak_flops(device, dtype)

# data: latents from the cache beside the tokenizer, data actions, rewards
if master:
    cached_latents(tok, tok_info["path"], store, data_dir, device, ctx)
if ddp:
    torch.distributed.barrier()
latents = cached_latents(tok, tok_info["path"], store, data_dir, device, ctx)
val_ids = store.episode_ids("val")


def batch(b, noise=0.0):
    """A store.sample dict -> on the device: latents z (B, T, L, Dz), actions (B, T, C), BC mask
    keep (B,), and per frame: slip (B, T), events (B, T, K), memory (B, T, K) (noise: each bit of a
    window flipped with this probability), reward, terminal, returns (B, T) (agent.data_targets)."""
    idx = b["start"][:, None] + np.arange(b["actions"].shape[1])  # (B, T)
    labels = (b["actions"] if store.labels is None
              else store.labels[idx].astype(np.int64))  # (B, T, C)
    out = {"z": latents[idx].astype(np.float32), "actions": b["actions"], "labels": labels,
           "keep": keep[b["episode"]], "slip": store.slips[idx] == 1, "events": store.events[idx],
           "rewards": rewards_all[idx], **{k: v[idx] for k, v in targets.items()}}
    if noise:
        flip = rng.random((len(idx), 1, out["memory"].shape[-1])) < noise
        out["memory"] = np.abs(out["memory"] - flip)
    return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in out.items()}


def heldout_windows(T):
    """Windows of T frames over every held-out episode, overlapping by one frame, so the transitions
    into frames 1..T-1 of the windows are every transition of the episode (but a head shorter than a
    window); the last window ends at the episode's last frame (its death, if it died)."""
    starts = [np.arange(e - T, s - 1, 1 - T)[::-1] for s, e in store.episodes[val_ids]]
    starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    idx = starts[:, None] + np.arange(T)
    ep = np.searchsorted(store.episodes[:, 1], starts, side="right")
    return {"start": starts, "actions": store.actions[idx].astype(np.int64), "episode": ep}


def precision_recall(pred, real):
    """Counts (tp, fp, fn) of bool tensors."""
    return np.array([(pred & real).sum().item(), (pred & ~real).sum().item(),
                     (~pred & real).sum().item()])


def pr_metrics(name, counts):
    tp, fp, fn = counts
    return {f"{name}_precision": tp / max(1, tp + fp), f"{name}_recall": tp / max(1, tp + fn),
            f"{name}_events": int(tp + fn)}


@torch.no_grad()
def dreamed_events(b, g, ctx_len=8):
    """Events on imagined frames: the dynamics model continues held-out windows from their first
    ctx_len frames with the data's own actions, and the event head reads its frames; (tp, fp, fn)
    against the real events (§P: check the reward on imagined rollouts). The reward the policy
    learns from must be right inside the dream."""
    z, a, T = b["z"], b["actions"], b["z"].shape[1]
    ctx_len = min(ctx_len, T // 2)  # (short windows: half context, half dreamed)

    def noise(x):  # from g: the global RNG stays untouched by evals
        return torch.randn(x.shape, generator=g, device=device)

    cache, m = KVCache(), b["memory"]
    ctx_slots = agent.slots(len(z), ctx_len, 0, m[:, :ctx_len])
    append_frames(dyn, z[:, :ctx_len], prev_actions(a[:, :ctx_len]), cache, noise(z[:, :ctx_len]),
                  ctx_slots)
    counts = np.zeros(3, np.int64)
    for t in range(ctx_len, T):
        slots = agent.slots(len(z), 1, 0, m[:, t:t + 1])
        zt = next_frame(dyn, cache, a[:, t - 1:t], sampling_steps, noise(z[:, :1]), slots)
        h = append_frames(dyn, zt, a[:, t - 1:t], cache, noise(zt), slots)
        real = b["events"][:, t - 1:t] == 1
        counts += precision_recall((agent.events(h) > 0.5) & (b["events"][:, t - 1:t] >= 0), real)
    return counts


@torch.no_grad()
def rollout_psnr(g):
    """The world model's held-out rollouts as its dynamics run measured them (§E): context_frames
    of latents, eval_frames generated from the data's actions, decoded -> (PSNR, the copy floor's
    PSNR) in dB. Finetuning must not make it forget what it learned."""
    C, F = dyn_config["context_frames"], dyn_config["eval_frames"]
    w = store.fixed_windows(min(64, dyn_config["eval_windows"]), C + F, "val", seed)
    z, a = (batch(w)[k] for k in ("z", "actions"))
    x = to_float(torch.from_numpy(w["frames"][:, C:]).to(device))  # (N, F, H, W, 3)
    with ctx:
        y = tok.decode(torch.cat((z[:, C - 1:C], generate(dyn, z[:, :C], a, F, sampling_steps, g)),
                                 1)).float()  # (N, 1 + F, H, W, 3): the last context frame first
    return psnr(y[:, 1:], x).mean().item(), psnr(y[:, :1].expand_as(x), x).mean().item()


@torch.no_grad()
def evaluate_finetune():
    """Held-out BC accuracy (offset 0) on the demonstrator's own choices (slips left out) beside
    copying the previous action (§P); the reward head's precision and recall of unlock events
    (reward > 0.5) over the held-out transitions (§E); the event head's, on real frames and on
    frames the dynamics model dreams from the data's actions; the continuation head's of deaths."""
    models.eval()
    w = heldout_windows(seq_len)
    hit = copy_hit = n = 0
    counts = {k: np.zeros(3, np.int64) for k in ("reward", "event", "dream", "death")}
    # the same noise at every eval, the RNG untouched
    bc_losses, g = [], torch.Generator(device).manual_seed(seed)
    for i in range(0, len(w["start"]), batch_size * 4):
        b = batch({key: v[i:i + batch_size * 4] for key, v in w.items()})
        demo = torch.from_numpy(store.policies[w["episode"][i:i + batch_size * 4]] == 1).to(device)
        a, k = b["actions"], b["keep"] & demo  # accuracy on the demonstrator's own episodes
        with ctx:
            h = agent_pass(dyn, agent, b["z"], a, generator=g, memory=b["memory"])
            if i < batch_size * 16 and agent.num_events:
                counts["dream"] += dreamed_events(b, g)
        target = bc_targets(a, b["slip"], k)  # (B, T, C)
        loss, _ = bc_loss(agent, h, target)
        logits = agent.policy_logits(h, offset=0)
        ok = (target[:, 1:] >= 0)
        for c, lg in enumerate(logits):
            hit += ((lg[:, 1:].argmax(-1) == target[:, 1:, c]) & ok[..., c]).sum().item()
            copy_hit += ((a[:, :-1, c] == target[:, 1:, c]) & ok[..., c]).sum().item()
        n += ok.sum().item()
        bc_losses.append(loss.item())
        # the imagined reward, on real frames 1..T-1
        pred = reward(agent, h[:, 1:], b["memory"][:, 1:]) > 0.5
        counts["reward"] += precision_recall(pred, into(b["rewards"], 0)[:, 1:] > 0.5)
        ev = into(b["events"], -1)[:, 1:]
        counts["event"] += precision_recall((agent.events(h[:, 1:]) > 0.5) & (ev >= 0), ev == 1)
        counts["death"] += precision_recall((agent.continues(h) < 0.5) & (b["terminal"] >= 0),
                                            b["terminal"] == 1)
    rollout, floor = rollout_psnr(g)
    models.train()
    out = {"val_bc_acc": hit / max(1, n), "val_copy_acc": copy_hit / max(1, n),
           "val_rollout_psnr": rollout, "val_floor_psnr": floor,
           "val_bc_loss": float(np.mean(bc_losses)) if bc_losses else None}
    for name, c in counts.items():
        out.update(pr_metrics(name, c))
    return out


def save(it):
    minutes = (time.time() - t_start) / 60
    common.atomic_save({**common.training_state(models, optimizer, criterion, it, rng, minutes),
                        "phase": phase, "config": config, "dynamics_config": dyn_config,
                        "model_args": model_args, "agent_args": agent_args, "latent_shape": (L, Dz),
                        "image_size": store.image_size, "action_spec": store.action_spec,
                        "data_dir": os.path.abspath(data_dir), "tokenizer": tok_info,
                        "init": source, "window": window}, ckpt_path)


def finetune_step():
    # the world model goes on learning on the clips it was trained on (on the agent's short windows
    # alone it forgets all but the last frame: docs/experiments.md)
    clips = batch(store.sample(dyn_config["batch_size"], dyn_config["seq_len"], "train", rng,
                               (rank, world)))
    # the agent's windows: ending at a death, then any
    n = 0 if died is None else rng.binomial(batch_size, death_frac)
    parts = [(n, died, 1), (batch_size - n, None, 0)]
    b = batch(store.sample_parts(parts, seq_len, "train", rng, (rank, world)), memory_noise)
    z1, actions, k = b["z"], b["actions"], b["keep"]
    with ctx:
        dyn_loss, _ = criterion(dyn_step, clips["z"] / dyn.latent_std, clips["actions"],
                                dyn_config["bootstrap_frac"])
        h = agent_pass(dyn_step, agent, z1, actions, memory=b["memory"])
        bc, acc = bc_loss(agent, h, bc_targets(actions, b["slip"], k, b["labels"]))
        terms = {"bc": bc, "reward": reward_loss(agent, h, b["reward"]),
                 "event": event_loss(agent, h, b["events"]),
                 "cont": cont_loss(agent, h, b["terminal"]),
                 "value": value_loss_data(agent, h, b["returns"], k)}
    loss = dyn_loss + sum(config[f"{name}_weight"] * v for name, v in terms.items())
    # 0-dim tensors: read at log steps (common.LossLog)
    return loss, {"dyn": dyn_loss, **terms, "bc_acc": acc}


def imagine_step():
    b = batch(store.sample(imagine_batch, context_frames, "train", rng, (rank, world),
                           context_first))
    with ctx:
        roll = imagine(dyn_step, agent, b["z"], b["actions"], horizon, sampling_steps,
                       m_ctx=b["memory"], world_window=dyn_config["seq_len"])
    return imagination_losses(agent, models["prior"], roll, alpha, beta,
                              train_policy=it >= value_warmup)


if master:
    os.makedirs(out_dir, exist_ok=True)
    n_train = sum(p.numel() for p in params)
    what = f"{keep.mean():.0%} of episodes for BC ({bc_data})" if phase == "finetune" else \
        f"{imagine_batch} rollouts of {horizon} steps per iter"
    print(f"agent {phase}: {n_train / 1e6:.2f}M trained params, {what}, device {device} {dtype}, "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s")
t0 = time.time()
t_start = t0 - 60 * minutes_before  # a resumed run's clock goes on from its checkpoint
start_it = it
clock = common.progress_clock(max_iters, start_it, t_start, max_minutes)
log = common.LossLog()
while True:
    last = it >= max_iters or (max_minutes > 0 and common.rank0_decides(
        time.time() - t_start > 60 * max_minutes, ddp, device))
    if last and it == start_it and init_from == "resume":
        print(f"{ckpt_path} is already at iter {it} >= max_iters={max_iters}: nothing to do")
        break
    if master and ((it % eval_interval == 0 and (it > start_it or it == 0)) or last):
        log.read(it, ckpt_path)  # (a non-finite loss since last read ends the run before a save)
        m = evaluate_finetune() if phase == "finetune" else {}
        if m:
            print(f"iter {it}: val_bc_acc {m['val_bc_acc']:.3f} (copy {m['val_copy_acc']:.3f}); "
                  f"world model's rollout {m['val_rollout_psnr']:.2f} dB (copy "
                  f"{m['val_floor_psnr']:.2f}); precision / recall: "
                  + ", ".join(f"{k} {m[k + '_precision']:.2f} / {m[k + '_recall']:.2f} "
                              f"({m[k + '_events']})"
                              for k in ("reward", "event", "dream", "death")))
        common.log_metrics(out_dir, iter=it, phase=phase, loss=log.last.get("loss"), **m,
                           minutes=(time.time() - t_start) / 60)
        if it > start_it:
            save(it)
    if last:
        break
    for g in optimizer.param_groups:
        g["lr"] = common.lr_at(it, g["peak_lr"], warmup_iters, max_iters, min_lr_frac)
    loss, terms = finetune_step() if phase == "finetune" else imagine_step()
    loss.backward()
    if ddp:  # average the gradients over the processes (models called piecewise: no DDP wrapper)
        common.all_reduce_grads(params, world)  # (the value head has no gradient while finetuning)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    it += 1
    log.add(loss=loss, **terms, grad=grad_norm)
    if it % log_interval == 0:
        m = log.read(it, ckpt_path)  # means over the interval; every rank checks its loss
        dt, t0 = (time.time() - t0) / log_interval, time.time()
        if master:
            print(f"{clock(it)}: " + " ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "grad") +
                  f" grad {m['grad']:.3f} {dt * 1000:.0f} ms/iter", flush=True)
            common.log_metrics(out_dir, iter=it, phase=phase, **m)  # curves (tools/results.py)
common.ddp_finish(models.parameters(), ddp)
