"""The one transformer of nanodreamer (§X), shared by the tokenizer, dynamics model and agent.

Tokens live on a grid (B, T, S, D): T frames, S token slots per frame. Attention is factorized:
  - space layers attend within a frame, over the S slots, under an (S, S) mask that says which token
    group may read which (§T encoder/decoder patterns, §D, §A agent tokens that nobody reads);
  - time layers (every `time_every`-th layer) attend across frames for the same slot, causally, so a
    token of frame t sees frames <= t only (block-causal in time). Only time layers look at the
    past, so a KV cache of the time layers is all that generation needs to keep.
Pre-norm RMSNorm, RoPE over time, learned slot embeddings for space (owned by the caller), SwiGLU,
QK-norm, logit soft-capping, GQA, no biases, no dropout.
Also MFU's two halves: linear_flops (a model's matmul FLOPs) and matmul_peak_flops (the device's).
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def rope(x, pos, base=10000.0):
    """Rotary position embedding on the last dim of x (..., n, hd) at integer positions pos (n,)."""
    hd = x.shape[-1]
    freqs = base ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)  # (hd/2,)
    ang = pos.to(torch.float32)[:, None] * freqs[None]  # (n, hd/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    # dim i turns with dim i + hd/2: halves, not interleaved pairs (8% off a compiled CPU
    # tokenizer step)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def attention(q, k, v, mask=None, is_causal=False, softcap=0.0):
    """softmax(q k^T / sqrt(hd)) v written out, q (N, H, n, hd), k and v (N, Hkv, m, hd) with H a
    multiple of Hkv (GQA); mask (n, m) bool, True = may attend. The logits and softmax in fp32,
    p @ v in v's dtype. softcap > 0: logits soft-capped to cap * tanh(logits / cap) first (§X)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    with torch.autocast(q.device.type, enabled=False):
        logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if softcap > 0:
            logits = softcap * torch.tanh(logits / softcap)
        if is_causal:
            mask = torch.ones(logits.shape[-2:], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits.softmax(dim=-1).to(v.dtype) @ v


def sdpa(q, k, v, mask, is_causal, softcap):
    """Attention as Attention.forward runs it: fused F.scaled_dot_product_attention, or written out
    (attention) with soft-capping and where it will be backpropagated on a CPU in bf16: there
    torch's flash-attention backward is slow, and the written-out one takes 12-15% off a compiled
    training step (docs/experiments.md, Speed)."""
    if softcap > 0 or (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad):
        return attention(q, k, v, mask, is_causal, softcap)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                          enable_gqa=q.shape[1] != k.shape[1])


class RMSNorm(nn.RMSNorm):
    """RMSNorm in the input's dtype (under bf16 autocast the fused kernel needs weight and input
    alike)."""

    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


class Attention(nn.Module):
    def __init__(self, dim, n_head, n_kv_head, softcap):
        super().__init__()
        if dim % n_head or n_head % n_kv_head or dim // n_head % 2:
            raise ValueError(f"dim={dim} must be a multiple of n_head={n_head} with an even "
                             f"quotient (RoPE rotates pairs), and n_head a multiple of "
                             f"n_kv_head={n_kv_head}")
        self.n_head, self.n_kv_head, self.softcap, hd = n_head, n_kv_head, softcap, dim // n_head
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * n_kv_head * hd, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(hd)  # QK-norm (§X): bounded logits, stable bf16
        self.k_norm = RMSNorm(hd)

    def forward(self, x, mask=None, pos=None, past_kv=None, is_causal=False):
        """x (N, n, D) sequences; mask (n, n_past + n) bool, True = may attend (or is_causal); pos
        (n,) the new tokens' positions for RoPE; past_kv: (k, v) of earlier positions, each
        (N, Hkv, n_past, hd), already rotated. Returns (out (N, n, D), (k, v) of the n new
        tokens)."""
        q = rearrange(self.wq(x), "N n (h d) -> N h n d", h=self.n_head)
        k, v = rearrange(self.wkv(x), "N n (two h d) -> two N h n d", two=2, h=self.n_kv_head)
        q, k = self.q_norm(q), self.k_norm(k)
        if pos is not None:
            q, k = rope(q, pos), rope(k, pos)
        kv = (k, v)
        if past_kv is not None:
            k, v = (torch.cat((past_kv[0].to(k.dtype), k), dim=2),
                    torch.cat((past_kv[1].to(v.dtype), v), dim=2))
        y = sdpa(q, k, v, mask, is_causal, self.softcap)
        return self.wo(rearrange(y, "N h n d -> N n (h d)")), kv


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w3 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Block(nn.Module):
    def __init__(self, dim, n_head, n_kv_head, mlp_ratio, softcap, is_time):
        super().__init__()
        self.is_time = is_time
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, n_head, n_kv_head, softcap)
        self.mlp = SwiGLU(dim, int(mlp_ratio * dim * 2 / 3 / 32 + 0.5) * 32)

    def forward(self, x, space_mask, time=None, past_kv=None):
        """x (B, T, S, D). time (time layers): (pos (T,), mask, is_causal) from
        Transformer.time_layout; past_kv: the cached (k, v) it reads before the T frames. Returns
        (x, the new frames' (k, v) or None)."""
        B, T, S, _ = x.shape
        h = self.norm1(x)
        kv = None
        if self.is_time:  # same slot across frames, causal in time (§X)
            h = rearrange(h, "B T S D -> (B S) T D")
            h, kv = self.attn(h, time[1], time[0], past_kv, time[2])
            h = rearrange(h, "(B S) T D -> B T S D", B=B)
        else:  # within a frame, under the token-group mask
            h = rearrange(h, "B T S D -> (B T) S D")
            h, _ = self.attn(h, space_mask)
            h = rearrange(h, "(B T) S D -> B T S D", B=B)
        x = x + h
        return x + self.mlp(self.norm2(x)), kv


class Transformer(nn.Module):
    """Stack of space/time blocks over (B, T, S, D); every `time_every`-th block is a time block.
    time_window > 0: time layers see only the last `time_window` frames (sliding window; with RoPE's
    relative positions, a model trained on windows of that length then runs on streams of any
    length)."""

    def __init__(self, dim, depth, n_head, n_kv_head=None, time_every=4, mlp_ratio=4.0, softcap=0.0,
                 max_frames=256, time_window=0):
        super().__init__()
        self.max_frames, self.time_window = max_frames, time_window
        self.blocks = nn.ModuleList(Block(dim, n_head, n_kv_head or n_head, mlp_ratio, softcap,
                                          is_time=(i + 1) % time_every == 0) for i in range(depth))
        self.norm = RMSNorm(dim)

    def forward(self, x, space_mask=None, cache=None, twin=False):
        """x (B, T, S, D) -> (B, T, S, D). space_mask: (S, S) bool (True = row may read column).
        cache: a KVCache; x are then the frames that follow the cached ones, and their time-layer
        keys/values are written to it. twin: x holds a clip's frames twice (training only, no
        cache): first as context, then as targets that each read the context before them
        (twin_time_mask)."""
        n = x.shape[1] // 2 if twin else x.shape[1]
        window = self.time_window if cache is None or cache.window is None else cache.window
        if cache is not None:
            cache.begin(n, window - 1 if window else self.max_frames, self.max_frames, window,
                        x.device)
        elif not window and n > self.max_frames:
            raise ValueError(f"context of {n} frames is longer than the {self.max_frames} frames "
                             f"this model was built for")
        time = self.time_layout(x.shape[1], twin, cache, window, x.device)
        for i, block in enumerate(self.blocks):
            past = None if cache is None or not block.is_time else cache.kv.get(i)
            x, kv = block(x, space_mask, time, past)
            if cache is not None and block.is_time:
                cache.write(i, kv, time[0])
        if cache is not None and not cache.frozen:
            cache.advance(time[0])
        return self.norm(x)

    def time_layout(self, T, twin, cache, window, device):
        """The time layers' (pos (T,), mask, is_causal) for T new frames: RoPE positions
        (absolute frame indices) and the mask (T, n_keys) over [the cache's slots, the new frames],
        reading the last `window` frames (0: all); None with is_causal where causal will do."""
        new = torch.arange(T, device=device)
        if twin:  # context frames, then the same frames as targets: positions 0..T/2-1 twice
            return new % (T // 2), twin_time_mask(T // 2, device), False
        pos = new if cache is None else cache.next + new  # (T,)
        if cache is None or not cache.kv:  # nothing cached yet
            if not window or window >= T:
                return pos, None, T > 1
            keys = pos
        else:
            # empty slots hold EMPTY: in the future of every query, never read
            keys = torch.cat((cache.pos, pos))
        mask = keys[None] <= pos[:, None]  # (T, n_keys)
        if window:
            mask &= pos[:, None] - keys[None] < window
        return pos, mask, False


def twin_time_mask(T, device=None):
    """(2T, 2T) bool, True = row may read column, over a clip's T frames as context followed by the
    same T frames as targets: context frame t reads context <= t (causal, as generation's past);
    target t reads context < t and itself, no other target. So every frame of a clip trains as the
    next frame of a past fed as generation feeds it."""
    i = torch.arange(T, device=device)
    before, same = i[:, None] > i[None, :], i[:, None] == i[None, :]
    return torch.cat((torch.cat((before | same, torch.zeros_like(same)), 1),
                      torch.cat((before, same), 1)))


class KVCache:
    """Keys/values of the time layers for the frames seen so far: each new frame then costs only its
    own tokens. Preallocated: per time layer a ring of `size` frame slots (the time window - 1: all
    the next frame reads; or max_frames), and `pos` (size,) the absolute frame index each slot holds
    (EMPTY where none). Every pass over a frame then has the same shapes, whatever its index, so a
    compiled step compiles once. `next` is the index of the next frame (a tensor, so that compiled
    code does not specialize on it), `length` the same as an int. `frozen` caches are read but not
    extended (the K sampling steps of one frame, §D.2). window: the time window of the passes
    through this cache (None: the transformer's time_window), so one model can read two pasts of
    different lengths (imagination: the world model's and the agent's)."""
    EMPTY = 2 ** 40

    def __init__(self, window=None):
        self.kv, self.size, self.pos, self.next, self.length = {}, 0, None, None, 0
        self.frozen, self.window = False, window

    @torch.compiler.disable
    def begin(self, n, size, max_frames, window, device):
        """Before a pass over n new frames: the checks and the bookkeeping in plain Python, out of
        compiled code."""
        if not window and self.length + n > max_frames:
            raise ValueError(f"context of {self.length + n} frames is longer than the {max_frames} "
                             f"frames this model was built for")
        if self.pos is None:
            self.size, self.next = size, torch.zeros((), dtype=torch.long, device=device)
            self.pos = torch.full((size,), self.EMPTY, dtype=torch.long, device=device)
        if not self.frozen:
            self.length += n

    def write(self, i, kv, pos):
        """The new frames' (k, v) of time layer i, each (N, Hkv, T, hd), at their positions pos
        (T,): the last min(T, size) of them go to their slots, pos % size."""
        if self.frozen or not self.size:
            return
        m = min(kv[0].shape[2], self.size)
        if i not in self.kv:
            self.kv[i] = tuple(t.new_zeros(*t.shape[:2], self.size, t.shape[3]) for t in kv)
        slots = pos[-m:] % self.size
        for buf, t in zip(self.kv[i], kv):
            buf.index_copy_(2, slots, t[:, :, -m:].to(buf.dtype))

    def advance(self, pos):
        """After a pass writing the new frames at positions pos (T,): their slots now hold them."""
        if self.size:
            m = min(len(pos), self.size)
            self.pos.index_copy_(0, pos[-m:] % self.size, pos[-m:])
        self.next += len(pos)

    def select(self, rows, batch):
        """Keep only the sequences `rows` (indices into a batch of `batch`), e.g. the episodes still
        running."""
        # (B S, ...) -> (len(rows) S, ...)
        pick = lambda t: t.unflatten(0, (batch, -1))[rows].flatten(0, 1)
        self.kv = {i: (pick(kv[0]), pick(kv[1])) for i, kv in self.kv.items()}

    def fork(self):
        """A read-only view of this cache: passes through it see the past but append nothing."""
        view = copy.copy(self)  # the same buffers
        view.frozen = True
        return view


class RunningRMS(nn.Module):
    """Divides a loss by a running estimate of its RMS (§T, §D), with no gradient through the
    normalizer. The floor keeps a shrinking loss from having its gradients amplified back up
    (§P)."""

    def __init__(self, decay=0.99, floor=1e-3):
        super().__init__()
        self.decay, self.floor = decay, floor
        self.register_buffer("ms", torch.zeros(()))
        self.register_buffer("count", torch.zeros(()))

    def forward(self, loss):
        if self.training:
            with torch.no_grad():
                self.count += 1
                w = (1 / self.count).clamp(min=1 - self.decay)  # plain mean until the EMA warms up
                self.ms.lerp_(loss.detach().float() ** 2, w)
        return loss / self.ms.sqrt().clamp(min=self.floor)


def init_weights(module, std=0.02):
    """Small normal init for linears; callers init their learned tokens small and random
    (never zero, §P)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)


def matmul_peak_flops(device, dtype):
    """Measured dense matmul FLOP/s on this device in dtype: the denominator of MFU (CPUs differ a
    lot). n doubles from 256 while one matmul takes under 10 ms (up to 2048), then the fastest of
    the repeats in 0.2 s: well under a second, also where bf16 is slow. Leaves the RNGs alone."""
    import time
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def seconds(a):
        t0 = time.perf_counter()
        a @ a
        sync()
        return time.perf_counter() - t0
    n = 256
    while True:
        # values do not matter for GEMM speed
        a = torch.ones(n, n, device=device, dtype=getattr(torch, dtype))
        seconds(a)  # the first call at a size may pick or JIT-compile its kernel
        t = seconds(a)
        if t > 0.01 or n >= 2048:
            break
        n *= 2
    t_end = time.perf_counter() + 0.2
    while time.perf_counter() < t_end:
        t = min(t, seconds(a))
    return 2 * n ** 3 / t


def linear_flops(module, tokens):
    """2 * (all nn.Linear weights) * tokens: forward matmul FLOPs of `tokens` tokens in `module`."""
    return 2 * tokens * sum(m.weight.numel() for m in module.modules()
                            if isinstance(m, torch.nn.Linear))
