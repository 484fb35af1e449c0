"""What every nanodreamer script shares: the configurator, device/dtype, DDP, checkpoints, lr
schedule, metrics.

The configurator is nanoGPT's "poor man's configurator", made strict:
    python train_x.py [config/file.py ...] --key=value ...
Config files are Python files that assign top-level variables; `--key=value` overrides one variable.
Every value is type-checked against the script's default, and an unknown key stops the script with
one line naming the closest valid keys.
"""
import ast
import contextlib
import difflib
import functools
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


class ConfigError(SystemExit):
    """A user error in the configuration: one line, no traceback."""

    def __init__(self, msg):
        super().__init__(f"error: {msg}")


def _coerce(key, value, default):
    """Convert `value` (a command-line str, or any config-file object) to the type of `default`."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if isinstance(default, bool) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            else:
                raise ConfigError(f"--{key}={value!r} is not a valid {type(default).__name__}")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{key}={value!r} must be of type {type(default).__name__} "
                          f"(default {default!r})")
    return value


def _unknown(key, keys):
    initials = "".join(w[0] for w in key.split("_") if w)  # lerning_rate -> lr
    close = [initials] * (initials in keys) or difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    hint = (f"; did you mean {', '.join(close)}?" if close
            else f"; valid keys: {', '.join(sorted(keys))}")
    return ConfigError(f"unknown config key '{key}'{hint}")


def print_help(g, keys):
    """The script's docstring, then every config key with its default and the comment beside it in
    the source."""
    src = open(g["__file__"]).read() if g.get("__file__") else ""
    print((g.get("__doc__") or "").strip()
          + "\n\nconfig keys (--key=value, or config files that assign them):")
    for k in keys:  # the comment may go on in indented comment lines below
        m = re.search(rf"^{k}\s*=[^#\n]*#\s*(.*(?:\n[ \t]+#.*)*)", src, re.M)
        comment = re.sub(r"\n[ \t]+#\s*", " ", m.group(1)) if m else ""
        print(f"  --{k}={g[k]!r}" + (f"  # {comment}" if m else ""))


def script_defaults(path):
    """The config variables a script assigns literal values at its top level: its defaults, as no
    config changed them (tools/bench.py's preset='default' reads the trainers' this way)."""
    out = {}
    for node in ast.parse(open(path).read()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError):
                pass
    return out


def configure(g, argv=None):
    """Override the config variables of a script's globals `g` in place; return the config (a dict).

    Config variables are the script's top-level int/float/bool/str globals defined before this call,
    except names starting with '_' and UPPER_CASE constants."""
    argv = sys.argv[1:] if argv is None else argv
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # live logs (nohup, CI), not one block at exit
    keys = [k for k, v in g.items() if not k.startswith("_") and not k.isupper()
            and isinstance(v, (int, float, bool, str))]
    if "--help" in argv or "-h" in argv:
        print_help(g, keys)
        raise SystemExit(0)
    for arg in argv:
        if arg.startswith("--"):
            if "=" not in arg:
                raise ConfigError(f"'{arg}' must be written --key=value")
            key, value = arg[2:].split("=", 1)
            if key not in keys:
                raise _unknown(key, keys)
            g[key] = _coerce(key, value, g[key])
        else:
            if not os.path.isfile(arg):
                raise ConfigError(f"config file '{arg}' does not exist "
                                  "(arguments are config files or --key=value)")
            file_g = {}
            exec(compile(open(arg).read(), arg, "exec"), file_g)
            for key, value in file_g.items():
                if (key.startswith("_") or key in ("__builtins__",) or callable(value)
                        or type(value).__name__ == "module"):
                    continue
                if key not in keys:
                    raise _unknown(key, keys)
                g[key] = _coerce(key, value, g[key])
    return {k: g[k] for k in keys}


# --------------------------------------------------------------------------------------------------
# device, precision, DDP

def auto_device(device="auto"):
    """'auto' -> cuda, then mps, then cpu; an explicit device is checked against what torch sees."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"device={device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.startswith("cuda") and not (torch.cuda.is_available()
                                          and int((device + ":0").split(":")[1])
                                          < torch.cuda.device_count()):
        raise ConfigError(f"device={device!r} but torch sees {torch.cuda.device_count()} "
                          "CUDA GPU(s)")
    if device == "mps" and not (getattr(torch.backends, "mps", None)
                                and torch.backends.mps.is_available()):
        raise ConfigError("device='mps' but torch sees no MPS device")
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_info():
    """The first processor's fields in /proc/cpuinfo ({} without one: not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:  # "key\t: value" lines, a blank line after each processor
            first = list(itertools.takewhile(str.strip, f))
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in first if ":" in ln)}


def cpu_bf16_is_fast():
    """Whether bf16 matmuls beat fp32 on this CPU: Intel with AMX, or AMD with AVX-512 BF16 (Zen 4
    on). An Intel Xeon with AVX-512 BF16 but no AMX ran every stage faster in fp32, and CPUs without
    bf16 instructions run it 60-100x slower (docs/experiments.md, Speed). torch must also dispatch
    to its AVX-512 kernels (not where ATEN_CPU_CAPABILITY=avx2 holds it to older ones, as when a
    laptop's CPU is emulated). Read from /proc/cpuinfo, not timed: a timing on a busy 2-core
    machine flipped between runs, so a resumed run could train in another dtype."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    info = cpu_info()
    flags = set(info.get("flags", "").split())
    amd = info.get("vendor_id") == "AuthenticAMD"
    return "amx_bf16" in flags or ("avx512_bf16" in flags and amd)


def cuda_has_bf16():
    """Whether the GPU runs bf16 natively (Ampere, compute capability 8.0+): on older cards torch
    emulates it, slower than fp32; is_bf16_supported() counts emulation unless asked not to."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def nvidia_gpus():
    """NVIDIA GPUs `nvidia-smi -L` lists, whether or not torch can use them; [] without a driver."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.splitlines() if ln.startswith("GPU ")]


def main_job_preset():
    """The preset pipeline.sh runs when PRESET is unset: 'gpu' where torch can use CUDA, else 'cpu'.
    With an NVIDIA GPU that torch cannot use (a CPU-only wheel, or one for a newer driver), one line
    says why, before anything runs: hours on the CPU are never a silent fallback."""
    if torch.cuda.is_available():
        return "gpu"
    gpus = nvidia_gpus()
    if gpus:
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"{gpus[0]} is here, but torch {torch.__version__} ({built}) cannot "
                          "use it: install the torch wheel for your driver (nvidia-smi shows its "
                          "CUDA version; https://pytorch.org/get-started/locally), or run on the "
                          "CPU with PRESET=cpu")
    return "cpu"


@functools.cache  # one line per message and process (eval_agent resolves a dtype per agent)
def warn_once(message):
    print(message, flush=True)


def resolve_dtype(device, dtype):
    """'bfloat16' or 'float32' from the dtype config. 'auto' is bf16 where this device runs it fast:
    CUDA with bf16, or a CPU where bf16 beats fp32 (cpu_bf16_is_fast); fp32 otherwise (mps too). An
    explicit 'bfloat16' is kept, with one warning line on a CPU where it is slower."""
    if dtype not in ("auto", "bfloat16", "float32"):
        raise ConfigError(f"dtype={dtype!r}: use 'auto', 'bfloat16' or 'float32'")
    dev = device.split(":")[0]
    if dtype == "float32" or (dtype == "bfloat16" and dev != "cpu"):
        return dtype
    if dev != "cpu":
        return "bfloat16" if dev == "cuda" and cuda_has_bf16() else "float32"
    fast = cpu_bf16_is_fast()
    if dtype == "bfloat16" and not fast:
        warn_once("warning: bf16 runs slower than fp32 on this CPU (bf16 is fast with Intel's AMX "
                  "or AMD's AVX-512 BF16); --dtype=auto picks float32")
    return "bfloat16" if fast or dtype == "bfloat16" else "float32"


def autocast_ctx(device, dtype):
    """bf16 autocast where asked for and supported; fp32 otherwise (fp16 is unusable on CPU)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype != "bfloat16":
        raise ConfigError(f"dtype={dtype!r}: use 'bfloat16' or 'float32'")
    dev_type = device.split(":")[0]
    if dev_type == "cuda" and not cuda_has_bf16():
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev_type, dtype=torch.bfloat16)


def at_least(config, **least):
    """One line for the first key below its least valid value: at_least(config, batch_size=1)."""
    for key, lo in least.items():
        if config[key] < lo:
            raise ConfigError(f"{key}={config[key]!r} must be >= {lo}")


def positive(config, *keys):
    """One line for the first of these config keys that is not > 0, e.g. positive(config, "lr")."""
    for key in keys:
        if not config[key] > 0:
            raise ConfigError(f"{key}={config[key]!r} must be > 0")


def setup_ddp(device):
    """DDP via torchrun: (ddp, rank, local_rank, world_size, device). Single process otherwise."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 0, 1, device
    rank, local_rank, world = (int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]),
                               int(os.environ["WORLD_SIZE"]))
    if device.startswith("cuda"):  # the device first: NCCL's communicator then binds to it
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return True, rank, local_rank, world, device


def all_reduce_grads(params, world):
    """Average the gradients over the DDP processes in one flat collective (for models called
    piecewise, without a DDP wrapper; parameters without a gradient are left out alike on every
    rank)."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


# --------------------------------------------------------------------------------------------------
# checkpoints, schedule, metrics

def compile_and_wrap(model, compile, ddp, local_rank, device):
    """torch.compile (if asked) and DDP (under torchrun) around a model, for its training steps."""
    if compile:
        if local_rank == 0:
            print("compiling the training step (torch.compile: ~1-3 minutes on a CPU, the first "
                  "steps are slow)", flush=True)
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device.startswith("cuda") else None)
    return model


def atomic_write(path, write, binary=False):
    """write(f) into a temp file, fsync, then rename it to path: a file is never half-written under
    its final name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb" if binary else "w") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fresh_run(ckpt_path, init_from):
    """One line instead of a new run that would overwrite another run's checkpoint at its
    first save."""
    if init_from == "new" and os.path.exists(ckpt_path):
        raise ConfigError(f"'{ckpt_path}' already holds a run: --init_from=resume goes on with it; "
                          f"for a new run pick another out_dir (or delete that one)")


def atomic_save(obj, path):
    """torch.save through atomic_write: a checkpoint is never half-written under its final name."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def load_checkpoint(path, what="checkpoint"):
    if not os.path.isfile(path):
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, or not a torch file: pickle, zip and EOF errors alike
        raise ConfigError(f"{what} '{path}' is not a readable checkpoint "
                          f"({type(e).__name__}: {str(e)[:80]})")
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{what} '{path}' is not a nanodreamer checkpoint "
                          f"(it holds a {type(ckpt).__name__})")
    if "model" in ckpt and ckpt.get("format", 1) != FORMAT:
        raise ConfigError(f"{what} '{path}' was made by another version of nanodreamer "
                          f"(checkpoint format {ckpt.get('format', 1)}, this one reads {FORMAT}): "
                          f"train it again")
    return ckpt


def make_optimizer(model, lr, weight_decay, betas, device, muon=False, *, dtype):
    """AdamW, with weight decay on matrices only (not on norms' gains or other vectors). muon=True:
    the transformer blocks' matrices use Muon instead (orthogonalized momentum; lr scaled to match
    AdamW's RMS), its Newton-Schulz in the training dtype (resolve_dtype: fp32 where bf16 is
    slow)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    is_hidden = lambda n, p: muon and ".blocks." in n and p.dim() == 2
    hidden = [p for n, p in named if is_hidden(n, p)]
    decay = [p for n, p in named if p.dim() >= 2 and not is_hidden(n, p)]
    no_decay = [p for n, p in named if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.startswith("cuda"))
    if not hidden:
        return adamw
    return Optimizers(Muon(hidden, lr, weight_decay, getattr(torch, dtype)), adamw)


def orthogonalize(gs, dtype, steps=5, eps=1e-7):
    """~U V^T of each g = U S V^T in the list gs, by torch.optim.Muon's quintic Newton-Schulz
    iteration, computed in dtype; the matrices of one shape go through it as one batch (fewer,
    larger matmuls: Muon's share of a CPU step is 20-27%)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    out, by_shape = [None] * len(gs), {}
    for i, g in enumerate(gs):
        by_shape.setdefault(g.shape, []).append(i)
    for (rows, cols), idx in by_shape.items():
        x = torch.stack([gs[i] for i in idx]).to(dtype)  # (n, rows, cols)
        x = x.mT if rows > cols else x  # (n, m, k) with m <= k
        x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)  # spectral norm <= 1
        for _ in range(steps):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        for i, u in zip(idx, x.mT if rows > cols else x):
            out[i] = u
    return out


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon(params, lr, weight_decay, adjust_lr_fn="match_rms_adamw") (nesterov momentum
    0.95, 5 Newton-Schulz steps, decoupled weight decay), its Newton-Schulz in ns_dtype: torch's
    always runs it in bf16, which on CPUs without fast bf16 costs more than the rest of the step.
    Same state ('momentum_buffer'): it resumes torch's checkpoints."""

    def __init__(self, params, lr, weight_decay, ns_dtype, momentum=0.95):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            params = [p for p in group["params"] if p.grad is not None]
            nesterov = []
            for p in params:
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - mu)
                nesterov.append(p.grad.lerp(buf, mu))
            for p, update in zip(params, orthogonalize(nesterov, self.ns_dtype)):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))


class Optimizers:
    """Optimizers stepped as one (trainers set lr on `param_groups`, step and checkpoint it)."""

    def __init__(self, *opts):
        self.opts = opts

    @property
    def param_groups(self):  # looked up each time: load_state_dict replaces their group dicts
        return [g for o in self.opts for g in o.param_groups]

    def step(self):
        for o in self.opts:
            o.step()

    def zero_grad(self, set_to_none=True):
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return [o.state_dict() for o in self.opts]

    def load_state_dict(self, states):
        for o, s in zip(self.opts, states):
            o.load_state_dict(s)


# checkpoint format: 2 since RoPE rotates contiguous halves (1: interleaved pairs, another model)
FORMAT = 2


def training_state(model, optimizer, criterion, it, rng, minutes):
    """What a resumable checkpoint holds beyond each stage's own metadata (config, shapes, specs):
    the CUDA RNGs too, so that a GPU resume draws the same noise, and the minutes trained so far, so
    that a resumed run's clock goes on."""
    rngs = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rngs["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "criterion": criterion.state_dict(), "iter": it, "rng": rngs, "format": FORMAT,
            "minutes": minutes}


def restore_training_state(ckpt, model, optimizer, criterion, rng, rank, seed):
    """Load training_state(); the data RNG (shared by the DDP ranks) and rank 0's noise RNGs
    continue exactly, other ranks' noise reseeds from the iteration. Returns the numpy RNG to use
    and the minutes trained before."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    criterion.load_state_dict(ckpt["criterion"])
    rng.bit_generator.state = ckpt["rng"]["numpy"]
    if rank != 0:
        torch.manual_seed(seed + rank + 1000003 * ckpt["iter"])
    else:
        torch.set_rng_state(ckpt["rng"]["torch"])
        cuda = ckpt["rng"].get("cuda")
        if (cuda is not None and torch.cuda.is_available()
                and len(cuda) == torch.cuda.device_count()):
            torch.cuda.set_rng_state_all(cuda)
    return rng, ckpt.get("minutes", 0.0)


def lr_at(it, lr, warmup_iters, max_iters, min_lr_frac=0.1):
    """Linear warm-up, then cosine decay to min_lr_frac * lr at max_iters."""
    if it < warmup_iters:
        return lr * (it + 1) / warmup_iters
    progress = min(1.0, (it - warmup_iters) / max(1, max_iters - warmup_iters))
    return lr * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def progress_clock(max_iters, start_it, t_start, max_minutes=0.0):
    """progress(it) -> 'iter 120/2000 (6%, eta 14m)': where a run is and when it ends. The pace
    counts from the first call on (the first log line), so compiling and the first steps do not
    inflate the eta; t_start (earlier than now in a resumed run) counts against max_minutes."""
    first, created = None, time.time()  # (time, iter) of the first call; when the clock was made

    def progress(it):
        nonlocal first
        now = time.time()
        t0, it0 = first or (created, start_it)
        first = first or (now, it)
        left = (now - t0) / max(1, it - it0) * (max_iters - it)
        if max_minutes > 0:
            left = min(left, 60 * max_minutes - (now - t_start))
        return f"iter {it}/{max_iters} ({it / max(1, max_iters):.0%}, eta {max(0, left) / 60:.0f}m)"
    return progress


def ticker(what, total, every=None):
    """tick(n, note=''): prints 'what: n/total (p%, eta Xm) note' at most every `every` seconds (2
    on a terminal, 30 in a log) and at n == total: progress for the long loops that are not training
    steps."""
    every = every if every is not None else 2 if sys.stdout.isatty() else 30
    t0, last = time.time(), [time.time()]

    def tick(n, note=""):
        if n < total and time.time() - last[0] < every:
            return
        last[0] = time.time()
        left = (time.time() - t0) / max(n, 1e-9) * (total - n)
        print(f"{what}: {n}/{total} ({n / max(1, total):.0%}, "
              f"eta {left / 60:.0f}m) {note}".rstrip(), flush=True)
    return tick


def log_metrics(out_dir, **metrics):
    """Append one JSON object to out_dir/metrics.jsonl."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(metrics) + "\n")


def broadcast_from_rank0(module, ddp):
    """Under DDP: every replica takes rank 0's parameters and buffers (what the DDP wrapper does
    when it is built; for models trained without one, whose new parts were initialized from per-rank
    seeds)."""
    if ddp:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


# The last collectives' works, kept until the interpreter exits: had gloo's worker thread dropped
# the last reference, it would free their tensors there, which takes the GIL, and if the main thread
# is already finalizing, the worker aborts the process ("terminate called without an active
# exception"; seen in about 1 in 3 2-process runs).
_final_works = []


def ddp_finish(params, ddp):
    """Under DDP, at the end of training: check that every replica holds rank 0's parameters (one
    line; an error if not), then leave the process group."""
    if not ddp:
        return
    flat = torch.cat([p.detach().float().flatten() for p in params])
    ref = flat.clone()
    _final_works.append(dist.broadcast(ref, 0, async_op=True))
    _final_works[-1].wait()
    diff = (flat - ref).abs().max()
    _final_works.append(dist.all_reduce(diff, op=dist.ReduceOp.MAX, async_op=True))
    _final_works[-1].wait()
    if dist.get_rank() == 0:
        print(f"DDP: {dist.get_world_size()} replicas, largest parameter difference from rank 0: "
              f"{diff.item():.3g}")
    dist.destroy_process_group()
    if diff > 0:
        raise SystemExit("error: the DDP replicas' parameters differ: their gradients were not "
                         "averaged alike")


class LossLog:
    """Loss terms summed on the device at every step and read on the host every log_interval steps:
    one host sync per read, none per step (a GPU would otherwise wait for the host at every .item()
    and isfinite check). A read that finds a non-finite loss stops the run; trainers read before
    each save, so no checkpoint holds one."""

    def __init__(self):
        self.sums, self.step, self.n, self.last = {}, {}, 0, {}

    def add(self, **terms):
        """terms: 0-dim tensors (detached here) or numbers; None is skipped."""
        self.step = {k: v.detach().float() if torch.is_tensor(v) else float(v)
                     for k, v in terms.items() if v is not None}
        for k, v in self.step.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def read(self, it, ckpt_path):
        """-> {term: mean since last read} ({} if no step); self.last: last step's terms. Floats."""
        if not self.n:
            return {}
        dev = [k for k, v in self.sums.items() if torch.is_tensor(v)]  # (the others: host numbers)
        last = [self.step.get(k, torch.full_like(self.sums[k], math.nan)) for k in dev]
        # the one host sync
        vals = torch.stack([self.sums[k] for k in dev] + last).tolist() if dev else []
        host = {k: v for k, v in self.sums.items() if k not in dev}
        means = {k: v / self.n for k, v in {**host, **dict(zip(dev, vals))}.items()}
        self.last = {**{k: v for k, v in self.step.items() if k in host},
                     **dict(zip(dev, vals[len(dev):]))}
        self.sums, self.n = {}, 0
        if not math.isfinite(means.get("loss", 0.0)):
            raise SystemExit(f"error: the loss became {means['loss']} by iter {it}; stopping "
                             f"(last good checkpoint: {ckpt_path})")
        return means


def rank0_decides(flag, ddp, device):
    """Rank 0's bool on all ranks (e.g. a wall-clock stop), so DDP ranks exit the loop together."""
    if not ddp:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())
