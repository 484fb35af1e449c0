"""Speed of each stage's hot loop, with MFU, at the config matched with other implementations
(docs/experiments.md, "Speed"), at the trainers' own defaults (preset='default') or at the GPU
recipe's sizes (preset='gpu').

    python tools/bench.py                # everything; the last stdout line is one JSON object
    python tools/bench.py --what=tokenizer --compile=True
    python tools/bench.py --preset=default --compile=True  # as the trainers run (they compile)
    python tools/bench.py --what=gpu     # on a GPU machine, first (docs/gpu.md)

Matched config: 64x64 RGB, patch 8, batch 4, 16 frames, width 256, depth 4 (tokenizer encoder,
decoder, dynamics), 16 latents x 32, 4 heads of 64, one 17-way action, 2 threads, LPIPS off.
Figures: training steps (tokenizer; dynamics flow / shortcut on latents; the agent's finetune and
imagination steps), tokenizer encode and decode frames/s, generation frames/s (K = 4; batch 1 and
16; cached, uncached, decoded), acting in the real game and play.py's loop, peak RSS. Each figure is
the median of `repeats` timed calls after `warmup`; each stage runs in its own process so that its
peak RSS is its own. Speed figures mean something only beside a peer's measured in the same run on
the same machine.
"""
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

# the repo's folder (this script is in tools/): its modules, scripts and config files
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
from model import linear_flops, matmul_peak_flops  # noqa: E402

what = "all"  # 'all' | 'tokenizer' | 'dynamics' | 'agent' | 'gpu' (the GPU check: gpu_check)
device = "auto"
dtype = "auto"  # 'auto' (bf16 where this device runs it fast, else fp32) | 'bfloat16' | 'float32'
compile = False  # the training steps (and generation, the play loop and imagination, at fixed
                 # shapes) compiled
profile = False  # also run each figure's timed calls under torch.profiler; its top ops to stderr
threads = 2
warmup = 2
repeats = 5
preset = "matched"  # 'matched': the peer's matched config (below); 'default': the trainers' own
                    # defaults (train_tokenizer.py, train_dynamics.py: model sizes, batch shapes,
                    # the dynamics recipe)
batch_size = 4  # matched: clips per training step (default: each trainer's own)
seq_len = 16  # matched: frames per clip (default: each trainer's own)
horizon = 16  # imagined frames per rollout (the agent stage)
peak_tflops = 0.0  # matmul peak in dtype, MFU's denominator (0: measured in this process); 'all'
                   # measures it once and hands it to every stage, so that their MFU figures share
                   # one denominator
peer = ""  # a command printing another implementation's figures (same names) as its last stdout
           # line in JSON: run after ours in the same bench, each shared figure printed beside ours
           # with the ratio
config = common.configure(globals())
device = common.auto_device(device)
torch.set_num_threads(threads)
dtype = common.resolve_dtype(device, dtype)
ctx = common.autocast_ctx(device, dtype)
if preset == "matched":  # the dynamics loss: flow matching + shortcut, diffusion forcing
    TOK = dict(image_size=64, patch_size=8, num_latents=16, latent_dim=32, dim=256, enc_depth=4,
               dec_depth=4, n_head=4, n_kv_head=4, time_every=4)
    DYN = dict(num_latents=16, latent_dim=32, action_classes=(17,), dim=256, depth=4, n_head=4,
               n_kv_head=4, time_every=4, k_max=8)
    LOSS = dict(ramp=True, teacher_forcing=False, zero_frac=0.0)
    TOK_BATCH, DYN_BATCH, MUON = (batch_size, seq_len), (batch_size, seq_len), (True, False)
    # the agent's finetuning keeps the CPU recipe's
    AGENT_LOSS = dict(teacher_forcing=True, zero_frac=0.75)
    AGENT_BATCH = (batch_size, seq_len)  # (B, T)
    IMAGINE = (batch_size, 8, horizon)  # (rollouts, context frames, horizon)
elif preset in ("default", "gpu"):  # gpu: config/*_gpu.py over the trainers' defaults
    def _settings(script, stage):
        gpu = (common.script_defaults(os.path.join(ROOT, f"config/{stage}_gpu.py"))
               if preset == "gpu" else {})
        return common.script_defaults(os.path.join(ROOT, script)) | gpu
    _t, _d = (_settings("train_tokenizer.py", "tokenizer"),
              _settings("train_dynamics.py", "dynamics"))
    _f, _i = _settings("train_agent.py", "finetune"), _settings("train_agent.py", "imagine")
    TOK = {k: _t[k] for k in ("patch_size", "num_latents", "latent_dim", "dim", "enc_depth",
                              "dec_depth", "n_head", "n_kv_head", "time_every",
                              "local_latents")} | {"image_size": 64}
    DYN = {k: _d[k] for k in ("pack", "dim", "depth", "n_head", "n_kv_head", "time_every",
                              "num_registers", "k_max")}
    DYN |= {"num_latents": TOK["num_latents"], "latent_dim": TOK["latent_dim"],
            "action_classes": (17,)}
    TOK_BATCH, DYN_BATCH = (_t["batch_size"], _t["seq_len"]), (_d["batch_size"], _d["seq_len"])
    LOSS = {k: _d[k] for k in ("context_frac", "ramp", "teacher_forcing", "zero_frac")}
    MUON, AGENT_LOSS = (_t["muon"], _d["muon"]), LOSS
    AGENT_BATCH = (_f["batch_size"], _f["seq_len"])
    IMAGINE = (_i["imagine_batch"], _i["context_frames"], _i["horizon"])
else:
    raise common.ConfigError(f"preset={preset!r}: use 'matched', 'default' or 'gpu'")
if device.startswith("cuda") and preset == "gpu":  # as a 12 GB RTX 3060 with a display: 11 GiB
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 11 * 2 ** 30 / total))


def peak_flops():
    return peak_tflops * 1e12 or matmul_peak_flops(device, dtype)


def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()


CUDA_FIGURES = {}  # on CUDA: each timed function's host syncs per call, the stage's peak memory


def host_syncs(fn):
    """The host syncs of one call of fn on CUDA (torch's sync debug mode warns at each one)."""
    import warnings
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def median_time(name, fn, n_warmup=None, n_repeats=None):
    """The median seconds of fn over the timed repeats after the warm-up calls; with profile=True,
    the same repeats once more under torch.profiler, whose top ops by self time are printed under
    the figure's name. On CUDA, also the host syncs of one more call (CUDA_FIGURES)."""
    for _ in range(warmup if n_warmup is None else n_warmup):
        fn()
    sync()
    if device.startswith("cuda"):
        CUDA_FIGURES[f"{name}_host_syncs"] = host_syncs(fn)
    ts = []
    for _ in range(repeats if n_repeats is None else n_repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    if profile:
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if
                                                        device.startswith("cuda") else [])
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(len(ts)):
                fn()
            sync()
        key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
        print(f"== profile of {name}, {len(ts)} calls\n"
              + prof.key_averages().table(sort_by=key, row_limit=15), file=sys.stderr)
    return statistics.median(ts)


def inference(model):
    """model compiled for fixed-shape inference passes (the KV cache is preallocated), as
    imagination runs it (play.py: play.compile_step), where compile=True; else model."""
    return torch.compile(model, dynamic=False) if compile else model


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def bench_tokenizer():
    from tokenizer import Tokenizer, TokenizerLoss
    torch.manual_seed(0)
    B, T = TOK_BATCH
    model = Tokenizer(**TOK, time_window=T).to(device)
    criterion = TokenizerLoss().to(device)
    opt = common.make_optimizer(model, 3e-4, 0.05, (0.9, 0.95), device, muon=MUON[0],
                                dtype=dtype)  # the trainer's
    fwd = torch.compile(model) if compile else model
    x = torch.randint(0, 256, (B, T, 64, 64, 3), dtype=torch.uint8).to(device).float() / 255

    def step():
        with ctx:
            recon = fwd(x)
        loss, _ = criterion(recon, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    s = median_time("tokenizer_step_s", step)
    flops = 3 * linear_flops(model, B * T * (model.num_patches + model.num_latents))
    out = dict(tokenizer_step_s=s, tokenizer_peak_rss_gb=peak_rss_gb(),
               tokenizer_params=sum(p.numel() for p in model.parameters()),
               tokenizer_mfu=flops / s / peak_flops())
    model.eval()
    with torch.no_grad(), ctx:
        z = model.encode(x)
        for name, fn in (("encode", lambda: model.encode(x)), ("decode", lambda: model.decode(z))):
            out[f"tokenizer_{name}_frames_per_s"] = B * T / median_time(
                f"tokenizer_{name}_frames_per_s", fn)
    return out


def bench_dynamics():
    """Training steps on pre-encoded latents (flow only / bootstrap on every clip), then K=4
    generation of 8 frames after 4 context frames at batch 1 and 16, cached (compiled with
    compile=True) and uncached, and cached + decoded to pixels (frames/s counts every frame of the
    batch)."""
    from dynamics import Dynamics, ShortcutLoss, generate
    from tokenizer import Tokenizer
    torch.manual_seed(0)
    B, T = DYN_BATCH
    model = Dynamics(**DYN, max_frames=T).to(device)
    criterion = ShortcutLoss(model.k_max, **LOSS).to(device)
    opt = common.make_optimizer(model, 3e-4, 0.05, (0.9, 0.95), device, muon=MUON[1],
                                dtype=dtype)  # the trainer's
    fwd = torch.compile(model) if compile else model
    z1 = torch.rand(B, T, DYN["num_latents"], DYN["latent_dim"], device=device) * 2 - 1
    actions = torch.randint(0, 17, (B, T, 1), device=device)
    out = dict(dynamics_params=sum(p.numel() for p in model.parameters()))
    for name, frac in (("flow", 0.0), ("shortcut", 1.0)):
        def step():
            with ctx:
                loss, _ = criterion(fwd, z1, actions, frac)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        out[f"dynamics_{name}_step_s"] = median_time(f"dynamics_{name}_step_s", step)
    model.eval()
    tok = Tokenizer(**TOK, time_window=T).to(device).eval()
    gen_model = inference(model)
    for n in (1, 16):
        ctx_z = torch.rand(n, 4, DYN["num_latents"], DYN["latent_dim"], device=device) * 2 - 1
        gen_actions = torch.randint(0, 17, (n, 12, 1), device=device)

        def gen(use_cache, decode=False):
            with torch.no_grad(), ctx:
                z = generate(gen_model if use_cache else model, ctx_z, gen_actions, 8, K=4,
                             use_cache=use_cache)
                return tok.decode(z) if decode else z
        for name, kw in (("cached", dict(use_cache=True)), ("uncached", dict(use_cache=False)),
                         ("cached_decoded", dict(use_cache=True, decode=True))):
            name = f"gen_frames_per_s_{name}" + (f"_batch{n}" if n > 1 else "")
            out[name] = 8 * n / median_time(name, lambda: gen(**kw))
    # forward + backward; teacher forcing: the clip twice
    passes = 3 * (2 if LOSS.get("teacher_forcing") else 1)
    flops = passes * linear_flops(model, B * T * model.num_slots)
    out["dynamics_flow_mfu"] = flops / out["dynamics_flow_step_s"] / peak_flops()
    return out


def bench_agent():
    """Phase 2 finetune step (shortcut forcing with teacher forcing + the agent pass, BC and reward
    losses), a phase 3 imagination step (rollouts of `horizon` frames from 8-frame contexts, K=4,
    PMPO + value on the heads), and acting in the real game (tokenizer encode + dynamics append +
    policy head per frame) at batch 1 and batch 50, and play.py's dreamed frames (K=4 denoising +
    append + decode + heads) at batch 1."""
    import torch.nn as nn
    from agent import (Agent, Policy, agent_pass, bc_loss, cont_loss, event_loss,
                       imagination_losses, imagine, reward_loss, value_loss_data)
    from dynamics import Dynamics, ShortcutLoss
    from play import Dream, compile_step
    from tokenizer import Tokenizer
    torch.manual_seed(0)
    (B, T), (n_roll, n_ctx, horizon) = AGENT_BATCH, IMAGINE
    model = Dynamics(**DYN, max_frames=max(32, T)).to(device)
    ag = Agent(DYN["dim"], [17], num_events=22).to(device)
    models = nn.ModuleDict({"dynamics": model, "agent": ag})
    criterion = ShortcutLoss(model.k_max, **AGENT_LOSS).to(device)
    opt = common.make_optimizer(models, 1e-3, 0.05, (0.9, 0.95), device, muon=True, dtype=dtype)
    z1 = torch.rand(B, T, DYN["num_latents"], DYN["latent_dim"], device=device) * 2 - 1
    actions = torch.randint(0, 17, (B, T, 1), device=device)
    clips = torch.rand(*DYN_BATCH, DYN["num_latents"], DYN["latent_dim"], device=device) * 2 - 1
    clip_actions = torch.randint(0, 17, (*DYN_BATCH, 1), device=device)  # the world model's loss
    rewards = (torch.rand(B, T, device=device) < 0.05).float()
    keep = torch.ones(B, dtype=torch.bool, device=device)
    events = (torch.rand(B, T, 22, device=device) < 0.01).to(torch.int8)
    memory, terminal = (torch.zeros(B, T, 22, device=device),
                        torch.zeros(B, T, dtype=torch.int8, device=device))

    fwd = torch.compile(model) if compile else model  # as train_agent.py compiles it

    def finetune_step():
        with ctx:
            loss = criterion(fwd, clips, clip_actions, 0.25)[0]
            h = agent_pass(fwd, ag, z1, actions, memory=memory)
            loss = loss + bc_loss(ag, h, actions)[0] + reward_loss(ag, h, rewards) + \
                event_loss(ag, h, events) + cont_loss(ag, h, terminal) + \
                value_loss_data(ag, h, rewards, keep)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    out = dict(agent_finetune_step_s=median_time("agent_finetune_step_s", finetune_step))
    model.eval()
    prior = ag.policy
    heads = torch.optim.AdamW([*ag.policy.parameters(), *ag.value.parameters()], lr=3e-4)
    model.transformer.time_window = T  # imagining and acting read the agent's window (train_agent)
    zc = torch.rand(n_roll, n_ctx, DYN["num_latents"], DYN["latent_dim"], device=device) * 2 - 1
    ac, dyn = torch.randint(0, 17, (n_roll, n_ctx, 1), device=device), inference(model)

    def imagine_step():
        with ctx:
            roll = imagine(dyn, ag, zc, ac, horizon, 4, world_window=DYN_BATCH[1])
        imagination_losses(ag, prior, roll)[0].backward()
        heads.step()
        heads.zero_grad(set_to_none=True)
    name = f"agent_imagine_step_s_batch{n_roll}_h{horizon}"
    torch._dynamo.reset()  # each loop compiled afresh, as in its own process: one process's loops
    #   would pass dynamo's limit of 8 graphs per function and time the rest eagerly
    out[name] = median_time(name, imagine_step, 1, 3)
    tok = Tokenizer(**TOK, time_window=1).to(device).eval()
    policy = Policy(tok, model, ag, device=device)
    for n in (1, 50):
        frames = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        policy.reset()
        for _ in range(T):  # a full time window first: the steady-state cost
            policy.act(frames)
        name = f"act_frames_per_s_batch{n}"
        out[name] = n / median_time(name, lambda: policy.act(frames), 2, 10)
    # play.py's world model: K=4 steps, append, decode, the heads
    torch._dynamo.reset()
    dream = Dream(tok, compile_step(model, device) if compile else model, ag, 4, ctx, device)
    dream.reset(frames[:1], np.zeros((1, 1), np.int64))
    for _ in range(T):
        dream.step([0])
    out["play_frames_per_s"] = 1 / median_time("play_frames_per_s", lambda: dream.step([0]), 2, 10)
    return out


STAGES = {"tokenizer": bench_tokenizer, "dynamics": bench_dynamics, "agent": bench_agent}


def run_json(cmd, what):
    """Run cmd and return the JSON object on the last line of its stdout."""
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    except OSError as e:
        raise SystemExit(f"error: {what} did not start: {e}")
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise SystemExit(f"error: {what} failed (exit {r.returncode})")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise SystemExit(f"error: {what} printed no JSON on its last line: {lines[-1][:100]!r}")


def beside_peer(ours, theirs):
    """peer_<k> and vs_peer_<k> = ours / peer for every figure both measured (a time: below 1 is
    faster; a rate: above 1), each printed as a line."""
    out = {}
    for k in sorted(set(theirs) & set(ours)):
        if isinstance(ours[k], float) and isinstance(theirs[k], (int, float)) and theirs[k] > 0:
            out[f"peer_{k}"], out[f"vs_peer_{k}"] = theirs[k], ours[k] / theirs[k]
            print(f"{k}: ours {ours[k]:.4g}, peer {theirs[k]:.4g}, "
                  f"ours / peer {ours[k] / theirs[k]:.3g}", file=sys.stderr)
    return out


def gpu_check():
    """what=gpu, the first thing to run on a GPU machine (~10 minutes): the environment; every
    stage's steps at the GPU recipe's sizes (config/*_gpu.py) with the allocator capped at 11 GiB
    (fits a 12 GB card?), their host syncs and peak memory; the main job's tiny preset end to end on
    CUDA. One line per finding, the JSON last."""
    import shutil
    import tempfile
    if not device.startswith("cuda"):
        common.main_job_preset()  # an NVIDIA GPU that torch cannot use: its one line
        raise common.ConfigError("what=gpu checks a CUDA GPU, and torch sees none here")
    p = torch.cuda.get_device_properties(0)
    smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    driver = (subprocess.run(smi, capture_output=True, text=True).stdout if shutil.which(smi[0])
              else "")
    out = dict(gpu=p.name, gpu_memory_gb=p.total_memory / 2 ** 30,
               capability=f"{p.major}.{p.minor}", torch=torch.__version__, cuda=torch.version.cuda,
               driver=driver.strip(), bf16_native=common.cuda_has_bf16(), dtype=dtype)
    try:
        torch.compile(lambda x: torch.nn.functional.gelu(x) * 2)(torch.randn(8, device=device))
        out["compile"] = "ok"
    except Exception as e:  # Triton or a C compiler missing
        out["compile"] = ("fails, train with --compile=False: "
                          f"{str(e).strip().splitlines()[0][:200]}")
    for dt in ("bfloat16", "float32"):
        out[f"matmul_peak_tflops_{dt}"] = matmul_peak_flops(device, dt) / 1e12
    for name in STAGES:
        cmd = [sys.executable, __file__, f"--what={name}", "--preset=gpu", f"--dtype={dtype}",
               f"--compile={compile}", f"--peak_tflops={out[f'matmul_peak_tflops_{dtype}']}"]
        try:
            out.update(run_json(cmd, f"the {name} stage at the GPU recipe's sizes"))
        except SystemExit as e:  # out of memory under the cap, say: recorded, the check goes on
            out[f"{name}_error"] = str(e)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PRESET": "tiny", "OUT": f"{tmp}/out", "DATA": f"{tmp}/data"}
        t0 = time.time()
        try:
            r = subprocess.run(["bash", "pipeline.sh"], env=env, capture_output=True, text=True,
                               timeout=420, cwd=ROOT)
            out["tiny_main_job"] = "ok" if r.returncode == 0 else \
                f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            out["tiny_main_job"] = "did not finish in 7 minutes"
        out["tiny_main_job_minutes"] = (time.time() - t0) / 60
    for k, v in out.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


def main():
    if what in STAGES:
        out = STAGES[what]()
        if device.startswith("cuda"):
            CUDA_FIGURES[f"{what}_gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
        print(json.dumps(out | CUDA_FIGURES))
        return
    if what == "gpu":
        return gpu_check()
    if what != "all":
        raise common.ConfigError(f"what={what!r}: use 'all' or one of {', '.join(STAGES)}")
    out = dict(matmul_peak_tflops=peak_flops() / 1e12)
    print(f"matmul peak {out['matmul_peak_tflops']:.3g} TFLOP/s ({dtype})", file=sys.stderr)
    for name in STAGES:  # a fresh process per stage: its own peak RSS, no cross-talk
        # the dtype as resolved here, and its peak
        args = sys.argv[1:] + [f"--what={name}", f"--dtype={dtype}",
                               f"--peak_tflops={out['matmul_peak_tflops']}"]
        res = run_json([sys.executable, __file__] + args, f"bench stage {name}")
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in res.items()), file=sys.stderr)
        out.update(res)
    if peer:
        out.update(beside_peer(out, run_json(shlex.split(peer), "the peer")))
    out.update(device=device, dtype=dtype, compile=compile, threads=threads,
               torch=torch.__version__)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
