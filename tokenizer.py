"""Causal tokenizer (§T): a masked autoencoder over patches, tanh bottleneck, block-causal in time.

    frames (B, T, H, W, 3) uint8 --encode--> latents (B, T, L, Dz) in [-1, 1]
                                 --decode--> frames (B, T, H, W, 3)

Encoder: per frame, N patch tokens + L learned latent tokens; latents read everything, patches read
patches. Decoder: per frame, L latents (from the bottleneck) + N learned patch queries; queries read
everything, latents read latents. Both are the shared transformer (model.py), so a token of frame t
sees frames <= t only, and frames can be encoded one by one with a KV cache. Loss: MSE + 0.2 LPIPS,
each over its running RMS (§T).
"""
import hashlib
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from common import ConfigError, load_checkpoint, ticker
from model import KVCache, Transformer, RunningRMS, init_weights


def to_float(frames, device=None):
    """uint8 (..., H, W, 3) -> float in [0, 1] on the device (frames stay uint8 until there)."""
    return (frames.to(device, non_blocking=True).float().div_(255) if frames.dtype == torch.uint8
            else frames.to(device))


def region_of_patch(n, L):
    """(n*n,) index of the latent whose region holds each patch: the n x n patch grid cut into a
    sqrt(L) x sqrt(L) grid of regions. Patches and queries still attend to all patches/queries, so
    every token sees the whole frame; this locality only routes each region through its own latent,
    which learns much faster (README, tokenizer)."""
    g = math.isqrt(L)
    if g * g != L or n % g:
        raise ValueError(f"local_latents needs a square number of latents tiling the {n}x{n} patch "
                         f"grid, got {L}")
    rows, cols = torch.arange(n * n) // n, torch.arange(n * n) % n
    return (rows // (n // g)) * g + cols // (n // g)


class Tokenizer(nn.Module):
    def __init__(self, image_size=64, patch_size=8, num_latents=16, latent_dim=32, dim=256,
                 enc_depth=4, dec_depth=4, n_head=4, n_kv_head=4, time_every=4, softcap=0.0,
                 max_frames=256, time_window=0, local_latents=True):
        super().__init__()
        assert image_size % patch_size == 0, (f"image_size {image_size} must be a multiple of "
                                              f"patch_size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        self.num_latents, self.latent_dim = num_latents, latent_dim
        N, L, P = (image_size // patch_size) ** 2, num_latents, patch_size
        self.num_patches = N
        tf = dict(n_head=n_head, n_kv_head=n_kv_head, time_every=time_every, softcap=softcap,
                  max_frames=max_frames, time_window=time_window)
        self.patch_embed = nn.Linear(P * P * 3, dim, bias=False)
        # learned tokens: small and random, never zero (§P: RMSNorm would blow up their gradients)
        self.latent_tokens = nn.Parameter(torch.randn(L, dim) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.enc_pos = nn.Parameter(torch.randn(N + L, dim) * 0.02)  # spatial slot embeddings (§P)
        self.encoder = Transformer(dim, enc_depth, **tf)
        self.to_bottleneck = nn.Linear(dim, latent_dim, bias=False)
        self.from_bottleneck = nn.Linear(latent_dim, dim, bias=False)
        self.patch_queries = nn.Parameter(torch.randn(N, dim) * 0.02)
        self.dec_pos = nn.Parameter(torch.randn(L + N, dim) * 0.02)
        self.decoder = Transformer(dim, dec_depth, **tf)
        self.to_pixels = nn.Linear(dim, P * P * 3, bias=False)
        init_weights(self)
        # §T token-group masks, True = row may read column. Encoder order [patches, latents];
        # decoder [latents, queries]
        is_lat = torch.arange(N + L) >= N
        self.register_buffer("enc_mask", is_lat[:, None] | ~is_lat[None, :], persistent=False)
        is_q = torch.arange(L + N) >= L
        self.register_buffer("dec_mask", is_q[:, None] | ~is_q[None, :], persistent=False)
        # our default, not the paper's: latent i and the patches of region i read each other only
        if local_latents:
            own = region_of_patch(image_size // patch_size, L)[:, None] == torch.arange(L)  # (N, L)
            # encoder: latent reads the patches of its region (and all latents)
            self.enc_mask[N:, :N] = own.T
            # decoder: patch query reads its region's latent (and all queries)
            self.dec_mask[L:, :L] = own

    def encode(self, x, drop_prob=None, cache=None):
        """x (B, T, H, W, 3) float in [0, 1] or uint8 -> latents (B, T, L, Dz) in [-1, 1].
        drop_prob (B, T): MAE probability of replacing each patch by the mask token
        (None = no masking)."""
        x = to_float(x, self.patch_embed.weight.device)
        patches = rearrange(x * 2 - 1, "B T (h p) (w q) c -> B T (h w) (p q c)", p=self.patch_size,
                            q=self.patch_size)
        tok = self.patch_embed(patches)  # (B, T, N, D)
        if drop_prob is not None:  # masked autoencoding (§T)
            drop = torch.rand(tok.shape[:3], device=tok.device) < drop_prob[..., None]  # (B, T, N)
            tok = torch.where(drop[..., None], self.mask_token.to(tok.dtype), tok)
        lat = self.latent_tokens.expand(*tok.shape[:2], -1, -1).to(tok.dtype)
        h = self.encoder(torch.cat((tok, lat), dim=2) + self.enc_pos, self.enc_mask,
                         cache)  # (B, T, N + L, D)
        return torch.tanh(self.to_bottleneck(h[:, :, self.num_patches:]))  # (B, T, L, Dz)

    def decode(self, z, cache=None):
        """latents (B, T, L, Dz) -> frames (B, T, H, W, 3), float, roughly in [0, 1]
        (clamp for display)."""
        lat = self.from_bottleneck(z)
        q = self.patch_queries.expand(*z.shape[:2], -1, -1).to(lat.dtype)
        h = self.decoder(torch.cat((lat, q), dim=2) + self.dec_pos, self.dec_mask, cache)
        patches = self.to_pixels(h[:, :, self.num_latents:])  # (B, T, N, P*P*3)
        n = self.image_size // self.patch_size
        x = rearrange(patches, "B T (h w) (p q c) -> B T (h p) (w q) c", h=n, p=self.patch_size,
                      q=self.patch_size)
        return (x + 1) / 2

    def forward(self, x, drop_max=0.9):
        """Training reconstruction: per frame p ~ U(0, drop_max) (§T). x (B, T, H, W, 3) -> recon,
        same shape."""
        drop_prob = torch.rand(x.shape[:2], device=x.device) * drop_max
        return self.decode(self.encode(x, drop_prob))


# --------------------------------------------------------------------------------------------------
# LPIPS: VGG16 features + the standard LPIPS linear heads, from local files (no run-time download).
# vgg_path: torchvision's VGG16 ImageNet state dict (vgg16-397923af.pth, keys
# 'features.N.weight/bias'); lin_path: the LPIPS v0.1 heads (lpips repo, weights/v0.1/vgg.pth, keys
# 'linK.model.1.weight', K = 0..4).

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# torchvision's layer indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_TAPS = (3, 8, 15, 22, 29)


class LPIPS(nn.Module):
    def __init__(self, vgg_path, lin_path):
        super().__init__()
        for p in (vgg_path, lin_path):
            if not os.path.isfile(p):
                raise ConfigError(f"LPIPS weight file '{p}' does not exist "
                                  "(lpips_vgg_path, lpips_lin_path)")
        layers, c_in = [], 3
        # same indices as torchvision's vgg16().features, so its state dict loads as is
        for c in VGG16_CFG:
            layers += ([nn.MaxPool2d(2)] if c == "M"
                       else [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()])
            c_in = c if c != "M" else c_in
        self.features = nn.Sequential(*layers[:LPIPS_TAPS[-1] + 1])
        try:
            vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
            self.features.load_state_dict({k[len("features."):]: v for k, v in vgg.items()
                                           if k.startswith("features.")
                                           and int(k.split(".")[1]) <= LPIPS_TAPS[-1]})
        except Exception as e:
            raise ConfigError(f"lpips_vgg_path '{vgg_path}' is not torchvision's VGG16 state dict "
                              f"(vgg16-397923af.pth): {type(e).__name__}")
        try:
            lin = torch.load(lin_path, map_location="cpu", weights_only=True)
            self.lins = nn.ParameterList([nn.Parameter(lin[f"lin{i}.model.1.weight"].flatten())
                                          for i in range(5)])
        except Exception as e:
            raise ConfigError(f"lpips_lin_path '{lin_path}' is not LPIPS v0.1's linear heads "
                              f"(weights/v0.1/vgg.pth): {type(e).__name__}")
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def forward(self, x, y):
        """x, y (N, H, W, 3) in [0, 1] -> (N,) perceptual distances."""
        h = torch.cat((x, y)).permute(0, 3, 1, 2) * 2 - 1
        h = (h - self.shift) / self.scale
        dist, k = 0, 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in LPIPS_TAPS:
                f = h / (h.norm(dim=1, keepdim=True) + 1e-10)  # unit-normalize channels
                fx, fy = f.chunk(2)
                dist = dist + (torch.einsum("nchw,c->n", (fx - fy) ** 2, self.lins[k])
                               / (f.shape[2] * f.shape[3]))
                k += 1
        return dist


VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16 weights, as torch.hub caches them


def find_lpips_weights():
    """(vgg_path, lin_path) of LPIPS's weights where they are at hand, never downloaded:
    torchvision's VGG16 in torch's hub cache (torch.hub.get_dir()/checkpoints) and the v0.1 heads
    shipped in the `lpips` package's wheel (lpips/weights/v0.1/vgg.pth); '' for one that is not."""
    import importlib.util
    vgg = os.path.join(torch.hub.get_dir(), "checkpoints", VGG16_FILE)
    spec = importlib.util.find_spec("lpips")
    lin = (os.path.join(os.path.dirname(spec.origin), "weights", "v0.1", "vgg.pth")
           if spec and spec.origin else "")
    return vgg if os.path.isfile(vgg) else "", lin if os.path.isfile(lin) else ""


class TokenizerLoss(nn.Module):
    """MSE + lpips_weight * LPIPS, each divided by its running RMS (§T). LPIPS on `lpips_frames`
    random frames."""

    def __init__(self, lpips=None, lpips_weight=0.2, lpips_frames=16):
        super().__init__()
        self._lpips = [lpips]  # frozen weights from files: not a submodule, so not in checkpoints
        self.lpips_weight, self.lpips_frames = lpips_weight, lpips_frames
        self.mse_norm, self.lpips_norm = RunningRMS(), RunningRMS()

    def forward(self, recon, x):
        """recon, x (B, T, H, W, 3) in [0, 1] -> (loss, {raw term: 0-dim tensor}: no host sync)."""
        mse = F.mse_loss(recon.float(), x)
        loss, terms = self.mse_norm(mse), {"mse": mse.detach()}
        if self._lpips[0] is not None:
            r, t = recon.flatten(0, 1), x.flatten(0, 1)
            idx = torch.randperm(r.shape[0], device=r.device)[:self.lpips_frames]
            lp = self._lpips[0](r[idx].float(), t[idx]).mean()
            loss = loss + self.lpips_weight * self.lpips_norm(lp)
            terms["lpips"] = lp.detach()
        return loss, terms


# --------------------------------------------------------------------------------------------------
# evaluation metrics (§E) and checkpoint loading, also used by the dynamics stage

def psnr(x, y):
    """x, y (..., H, W, 3) in [0, 1] -> PSNR in dB per image (...)."""
    mse = ((x.clamp(0, 1) - y) ** 2).flatten(-3).mean(-1)
    return -10 * torch.log10(mse.clamp(min=1e-10))


def ssim(x, y, win=7, sigma=1.5):
    """x, y (..., H, W, 3) in [0, 1] -> SSIM per image (...), Gaussian window, per channel, then
    averaged."""
    shape = x.shape[:-3]
    x, y = (rearrange(a.clamp(0, 1).float(), "... h w c -> (...) c h w") for a in (x, y))
    g = torch.exp(-((torch.arange(win, dtype=torch.float32) - win // 2) ** 2) / (2 * sigma ** 2))
    g = (g[:, None] * g[None, :] / g.sum() ** 2).to(x.device).expand(3, 1, win, win)
    blur = lambda a: F.conv2d(a, g, groups=3)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).view(shape)


def load_tokenizer(path, device="cpu"):
    """A frozen tokenizer from a train_tokenizer checkpoint. Returns (model, checkpoint dict)."""
    ckpt = load_checkpoint(path, "tokenizer checkpoint")
    if (not isinstance(ckpt, dict) or "tokenizer" in ckpt
            or "patch_size" not in ckpt.get("model_args", {})):
        raise ConfigError(f"'{path}' is not a tokenizer checkpoint (made by train_tokenizer.py)")
    model = Tokenizer(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False), ckpt


def tokenizer_path(ckpt, ckpt_path, override=""):
    """The tokenizer of a dynamics or agent checkpoint: `override` if given; else the path it was
    trained with, if it is still there; else beside the checkpoint, as a run folder
    (<run>/tokenizer/ckpt.pt next to <run>/<stage>/) or a shipped set (tokenizer.pt in its folder)
    lays it out: a run folder copied elsewhere loads as it did."""
    if override:
        return override
    here, recorded = os.path.dirname(os.path.abspath(ckpt_path)), ckpt["tokenizer"]["path"]
    beside = (os.path.join(here, os.pardir, "tokenizer", "ckpt.pt"),
              os.path.join(here, "tokenizer.pt"))
    for path in (os.path.join(here, recorded), *beside):  # (relative to the checkpoint folder)
        if os.path.exists(path):
            return os.path.normpath(path)
    raise ConfigError(f"tokenizer checkpoint '{recorded}' does not exist, nor one beside "
                      f"'{ckpt_path}' (../tokenizer/ckpt.pt or tokenizer.pt): name it with "
                      f"--tokenizer_ckpt=PATH")


def cached_latents(tok, tokenizer_ckpt, store, data_dir, device, ctx, chunk=64):
    """The latents of every frame of a store, float16 (N, L, Dz) .npy beside the tokenizer
    checkpoint (shared by every later stage on that tokenizer and data): each episode streamed
    through the causal tokenizer with a KV cache (its sliding time window sees the frames before, as
    inside a long window). Built when missing or stale (the key .json, written last, names the
    tokenizer and data it was made from); written atomically. Returns them memmapped."""
    if not tok.encoder.time_window:
        raise ConfigError("a latent cache needs a tokenizer with a sliding time window "
                          "(time_window > 0)")
    name = hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:8]
    path = os.path.join(os.path.dirname(tokenizer_ckpt), f"latents_{name}.npy")
    key = {"tokenizer": os.path.abspath(tokenizer_ckpt),
           "tokenizer_mtime": os.path.getmtime(tokenizer_ckpt),
           "data_dir": os.path.abspath(data_dir), "frames": len(store)}
    try:
        if json.load(open(path + ".json")) == key:
            return np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        pass
    t0 = time.time()
    if os.path.exists(path + ".json"):
        os.remove(path + ".json")  # present and equal means complete
    lat = np.lib.format.open_memmap(path + ".tmp", "w+", np.float16,
                                    (len(store), tok.num_latents, tok.latent_dim))
    tick = ticker("latent cache", len(store))
    for start, end in store.episodes:
        cache = KVCache()
        for i in range(start, end, chunk):
            x = torch.from_numpy(np.array(store.frames[i:min(end, i + chunk)]))[None].to(device)
            with torch.no_grad(), ctx:
                lat[i:i + x.shape[1]] = tok.encode(x, cache=cache)[0].float().cpu().numpy()
            tick(i + x.shape[1], "frames")
    lat.flush()
    os.replace(path + ".tmp", path)
    json.dump(key, open(path + ".json", "w"))
    print(f"latent cache: encoded {len(store)} frames in {time.time() - t0:.0f}s into {path}",
          flush=True)
    return np.load(path, mmap_mode="r")
