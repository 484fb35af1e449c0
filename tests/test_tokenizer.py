"""Tokenizer (§T) and shared transformer (§X): shapes, causality, caching, masking, LPIPS,
learning, trainer."""
import json
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import tokenizer
from conftest import kill_and_rerun, steps_of
from model import KVCache
from tokenizer import LPIPS, VGG16_CFG, Tokenizer, TokenizerLoss, psnr, region_of_patch, ssim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(image_size=32, patch_size=8, num_latents=4, latent_dim=16, dim=64, enc_depth=4,
            dec_depth=4, n_head=4, n_kv_head=2, time_every=2)


def tiny(**kw):
    torch.manual_seed(0)
    return Tokenizer(**{**TINY, **kw})


def test_shapes():
    m = tiny()
    x = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    z = m.encode(x)
    assert z.shape == (2, 3, 4, 16) and z.abs().max() <= 1  # tanh bottleneck
    assert m.decode(z).shape == (2, 3, 32, 32, 3)


@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_block_causal_in_time(softcap):
    m = tiny(softcap=softcap)
    x = torch.rand(2, 4, 32, 32, 3)
    x2 = x.clone()
    x2[:, 2:] = torch.rand_like(x2[:, 2:])
    z, z2 = m.encode(x), m.encode(x2)
    assert torch.equal(z[:, :2], z2[:, :2]) and (z[:, 2:] - z2[:, 2:]).abs().max() > 1e-3  # encoder
    zz = z.clone()
    zz[:, 2:] = torch.rand_like(zz[:, 2:])
    r, r2 = m.decode(z), m.decode(zz)
    assert torch.equal(r[:, :2], r2[:, :2]) and (r[:, 2:] - r2[:, 2:]).abs().max() > 1e-3  # decoder


@pytest.mark.parametrize("window", [0, 2])
def test_frame_by_frame_equals_whole_clip(window):
    m = tiny(time_window=window)
    x = torch.rand(2, 5, 32, 32, 3)
    z = m.encode(x)
    cache = KVCache()
    z_step = torch.cat([m.encode(x[:, t:t + 1], cache=cache) for t in range(5)], dim=1)
    assert torch.allclose(z, z_step, atol=1e-5)
    cache = KVCache()
    r_step = torch.cat([m.decode(z[:, t:t + 1], cache=cache) for t in range(5)], dim=1)
    assert torch.allclose(m.decode(z), r_step, atol=1e-5)


def test_local_latents():
    """Our default routing: latent i and the patches of region i read each other only; the paper's
    full pattern with local_latents=False. One space layer each, so each latent sees exactly its
    region's patches."""
    # 16 latents tile an 8x8 patch grid in 2x2 blocks
    assert torch.equal(region_of_patch(8, 16).view(8, 8),
                       torch.arange(16).view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1))
    with pytest.raises(ValueError, match="square number of latents"):
        Tokenizer(image_size=32, patch_size=8, num_latents=8)
    one = dict(enc_depth=1, dec_depth=1, time_every=2)
    m, full = tiny(**one), tiny(local_latents=False, **one)
    x = torch.rand(1, 1, 32, 32, 3)
    x2 = x.clone()
    x2[:, :, :16, :16] = torch.rand(16, 16, 3)  # region 0 of the 2x2 grid (patches 0, 1, 4, 5)
    changed = (m.encode(x2) - m.encode(x)).abs().amax(-1)[0, 0]  # (L,)
    assert changed[0] > 1e-3 and changed[1:].max() == 0
    # every latent reads every patch
    assert (full.encode(x2) - full.encode(x)).abs().amax(-1)[0, 0].min() > 1e-3
    z = torch.rand(1, 1, 4, 16) * 2 - 1
    z2 = z.clone()
    z2[..., 3, :] = 0  # latent 3: only region 3 (bottom-right 16x16 pixels) of the decoding changes
    d = (m.decode(z2) - m.decode(z)).abs()[0, 0].amax(-1)  # (H, W)
    assert d[16:, 16:].min() > 0 and d[:16].max() == 0 and d[:, :16].max() == 0


def test_mae_masking_replaces_patches():
    m = tiny()
    x1, x2 = torch.rand(1, 2, 32, 32, 3), torch.rand(1, 2, 32, 32, 3)
    ones, zeros = torch.ones(1, 2), torch.zeros(1, 2)
    # every patch replaced by the mask token: the latents no longer depend on the image at all
    assert torch.equal(m.encode(x1, ones), m.encode(x2, ones))
    assert not torch.allclose(m.encode(x1, zeros), m.encode(x2, zeros))
    assert torch.equal(m.encode(x1, zeros), m.encode(x1))  # p = 0 is no masking
    # about half the patches replaced at p = 0.5: the latents change, but less than for a different
    # image
    torch.manual_seed(1)
    d_half = (m.encode(x1, ones * 0.5) - m.encode(x1)).abs().mean()
    assert 0 < d_half < (m.encode(x2) - m.encode(x1)).abs().mean() * 2


def write_lpips_weights(tmp_path):
    """Weight files in the real on-disk formats: torchvision's vgg16 state dict and the LPIPS v0.1
    heads."""
    g = torch.Generator().manual_seed(0)
    sd, c_in, idx = {}, 3, 0
    for c in VGG16_CFG:
        if c == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = (torch.randn(c, c_in, 3, 3, generator=g)
                                        * (2 / (9 * c_in)) ** 0.5)
        sd[f"features.{idx}.bias"] = torch.zeros(c)
        c_in, idx = c, idx + 2
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # present in the real file, ignored
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
           for i, c in enumerate([64, 128, 256, 512, 512])}
    torch.save(sd, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "lin.pth")
    return str(tmp_path / "vgg16.pth"), str(tmp_path / "lin.pth"), sd


def test_lpips_loads_files_and_measures(tmp_path):
    vgg, lin, sd = write_lpips_weights(tmp_path)
    lp = LPIPS(vgg, lin)
    assert torch.equal(lp.features[28].weight, sd["features.28.weight"])  # conv5_3 from the file
    x = torch.rand(3, 32, 32, 3)
    assert lp(x, x).abs().max() < 1e-6
    d_small, d_big = (lp(x, (x + 0.05 * torch.randn_like(x)).clamp(0, 1)),
                      lp(x, torch.rand(3, 32, 32, 3)))
    assert (d_small > 0).all() and (d_big > d_small).all()
    with pytest.raises(SystemExit, match="LPIPS weight file .* does not exist"):
        LPIPS(str(tmp_path / "missing.pth"), lin)
    (tmp_path / "junk.pth").write_bytes(b"junk")  # wrong files: one clear line each, no traceback
    with pytest.raises(SystemExit, match="is not torchvision's VGG16 state dict"):
        LPIPS(str(tmp_path / "junk.pth"), lin)
    with pytest.raises(SystemExit, match="is not LPIPS v0.1's linear heads"):
        LPIPS(vgg, vgg)  # a VGG file where the linear heads belong
    # the loss uses it: MSE + 0.2 LPIPS, and LPIPS gradients reach the reconstruction
    r = torch.rand(1, 2, 32, 32, 3, requires_grad=True)
    crit = TokenizerLoss(lp)
    loss, terms = crit(r, torch.rand(1, 2, 32, 32, 3))
    loss.backward()
    assert terms["lpips"] > 0 and r.grad.abs().sum() > 0
    # checkpoints hold the normalizers, not the frozen VGG weights; LPIPS on/off resumes either way
    state = crit.state_dict()
    assert sorted(state) == ["lpips_norm.count", "lpips_norm.ms", "mse_norm.count", "mse_norm.ms"]
    TokenizerLoss().load_state_dict(state)
    crit.load_state_dict(TokenizerLoss().state_dict())


def test_psnr_ssim():
    x = torch.rand(2, 32, 32, 3)
    assert torch.allclose(psnr(x, x), torch.full((2,), 100.0))
    assert torch.allclose(psnr(torch.zeros(1, 8, 8, 3), torch.full((1, 8, 8, 3), 0.1)),
                          torch.tensor([20.0]))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert (ssim(x, torch.rand(2, 32, 32, 3)) < 0.2).all()


def crafter_clip(n=8, size=32, seed=0):
    import crafter
    env = crafter.Env(size=(size, size), seed=seed)
    frames, rng = [env.reset()], np.random.default_rng(seed)
    for _ in range(n - 1):
        frames.append(env.step(int(rng.integers(0, 17)))[0])
    return torch.from_numpy(np.stack(frames))[None]  # (1, n, size, size, 3) uint8


def test_overfits_a_crafter_clip():
    """A tiny tokenizer memorizes 8 Crafter frames. Predicting each frame's mean colour gives
    ~15 dB; 26 dB needs the tile textures, i.e. real per-patch information through the 8x16
    bottleneck (it reaches ~31 dB)."""
    m = tiny(time_window=8)
    x = crafter_clip().float() / 255
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    crit = TokenizerLoss()
    base = psnr(x.mean((1, 2, 3), keepdim=True).expand_as(x), x).mean()
    for it in range(300):
        loss, _ = crit(m(x, drop_max=0.0 if it > 200 else 0.5), x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        p = psnr(m.decode(m.encode(x)), x).mean()
    assert base < 17 and p > 26, (base, p)


# --------------------------------------------------------------------------------------------------
# train_tokenizer.py end to end (in-process, tiny config)

from conftest import run_script  # noqa: E402

TRAIN = ["--compile=False", "--dtype=float32", "--batch_size=4", "--seq_len=2", "--dim=32",
         "--enc_depth=2", "--dec_depth=2", "--n_head=2", "--n_kv_head=1", "--time_every=2",
         "--num_latents=4", "--latent_dim=8", "--warmup_iters=2", "--eval_windows=6",
         "--log_interval=1"]  # eval: a batch of 4, then 2


def test_kill9_in_tokenizer_training_loses_nothing(tiny_store, tmp_path):
    """SIGKILL three times (in steps, evals or checkpoint saves: random moments after a step is
    logged), rerun with resume each time: the same parameters as the uninterrupted run (both run as
    subprocesses)."""
    args = lambda name: ["train_tokenizer.py", *TRAIN, f"--data_dir={tiny_store}", "--max_iters=48",
                         "--eval_interval=4", f"--out_dir={tmp_path / name}"]
    _, ref = kill_and_rerun(args("a"), lambda t0: False, 0, tmp_path / "a.txt")
    log = tmp_path / "b.txt"
    # 3 kills <= 25 of 48
    landed, text = kill_and_rerun(args("b"), lambda t0: "ms/iter" in open(log).read(), 3, log,
                                  resume_if=str(tmp_path / "b/ckpt.pt"), delay=steps_of(ref, 6))
    assert landed == 3 and ("iter 48/48" in text or "nothing to do" in text)
    a, b = (torch.load(tmp_path / r / "ckpt.pt", weights_only=False) for r in "ab")
    assert a["iter"] == b["iter"] == 48 and all(torch.equal(a["model"][k], b["model"][k])
                                                for k in a["model"])
    # the evals
    metrics = [m for m in map(json.loads, open(tmp_path / "a/metrics.jsonl")) if "val_psnr" in m]
    assert ([m["iter"] for m in metrics] == list(range(0, 49, 4))
            and metrics[-1]["val_psnr"] > metrics[0]["val_psnr"])
    # (T * 2H, windows * W, 3): every eval window, not the first batch
    png = iio.imread(tmp_path / "a/recon.png")
    assert png.shape[1] * 2 * 2 == 6 * png.shape[0]


def test_lpips_weights_found_where_they_are_at_hand(tiny_store, tmp_path, monkeypatch, capsys):
    """With no paths configured, the tokenizer finds LPIPS's weights on its own: VGG16 in torch's
    hub cache, the heads in the installed lpips package (never a download); without them it trains
    on MSE and says what is missing."""
    vgg, lin, _ = write_lpips_weights(tmp_path)
    args = TRAIN + [f"--data_dir={tiny_store}", "--max_iters=2", "--eval_interval=2",
                    "--lpips_frames=2"]
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    run_script("train_tokenizer.py", *args, f"--out_dir={tmp_path}/mse")
    assert "loss: MSE alone (LPIPS needs torchvision's VGG16 in" in capsys.readouterr().out
    os.makedirs(tmp_path / "hub/checkpoints")
    shutil.copy(vgg, tmp_path / f"hub/checkpoints/{tokenizer.VGG16_FILE}")
    os.makedirs(tmp_path / "site/lpips/weights/v0.1")  # the lpips package as its wheel installs it
    (tmp_path / "site/lpips/__init__.py").write_text("")
    shutil.copy(lin, tmp_path / "site/lpips/weights/v0.1/vgg.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert tokenizer.find_lpips_weights() == (
        str(tmp_path / f"hub/checkpoints/{tokenizer.VGG16_FILE}"),
        str(tmp_path / "site/lpips/weights/v0.1/vgg.pth"))
    run_script("train_tokenizer.py", *args, f"--out_dir={tmp_path}/lpips")
    assert "loss: MSE + 0.2 LPIPS" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "lpips/ckpt.pt", weights_only=False)
    assert ckpt["criterion"]["lpips_norm.count"] == 2  # LPIPS was in both steps' loss
    # as the CPU recipe
    run_script("train_tokenizer.py", *args, f"--out_dir={tmp_path}/off", "--lpips_weight=0")
    assert "loss: MSE alone\n" in capsys.readouterr().out


def test_train_bad_inputs(tiny_store, tmp_path, monkeypatch):
    import tokenizer
    args = TRAIN + [f"--data_dir={tiny_store}", "--max_iters=4", "--eval_interval=2",
                    f"--out_dir={tmp_path}/o"]
    with pytest.raises(SystemExit, match="is not a frame store"):
        run_script("train_tokenizer.py", *args, f"--data_dir={tmp_path}")
    with pytest.raises(SystemExit, match="batch_size=100000 but split 'train' has only"):
        run_script("train_tokenizer.py", *args, "--batch_size=100000")
    with pytest.raises(SystemExit, match="square number of latents"):
        run_script("train_tokenizer.py", *args, "--num_latents=8")
    with pytest.raises(SystemExit, match="unknown config key 'lerning_rate'; did you mean"):
        run_script("train_tokenizer.py", *args, "--lerning_rate=1")
    with pytest.raises(SystemExit, match="does not exist"):
        run_script("train_tokenizer.py", *args, "--init_from=resume")
    with pytest.raises(SystemExit, match="LPIPS weight file"):
        run_script("train_tokenizer.py", *args, f"--lpips_vgg_path={tmp_path}/no.pth",
                   f"--lpips_lin_path={tmp_path}/no.pth")
    # NaN loss: a clear stop, and the last good checkpoint stays
    forward = tokenizer.TokenizerLoss.forward
    calls = []

    def nan_on_4th(self, recon, x):
        loss, terms = forward(self, recon, x)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 4 else loss), terms
    monkeypatch.setattr(tokenizer.TokenizerLoss, "forward", nan_on_4th)
    # read at the save, which it stops
    with pytest.raises(SystemExit, match="the loss became nan by iter 4"):
        run_script("train_tokenizer.py", *args)
    assert torch.load(f"{tmp_path}/o/ckpt.pt", weights_only=False)["iter"] == 2
    monkeypatch.setattr(tokenizer.TokenizerLoss, "forward", forward)
    with pytest.raises(SystemExit,
                       match="o/ckpt.pt' already holds a run: --init_from=resume goes on with it"):
        run_script("train_tokenizer.py", *args)  # a new run over it: refused, never overwritten
    # resuming on data of another image size
    other = str(tmp_path / "crafter48")
    run_script("data.py", "--source=crafter", f"--data_dir={other}", "--num_frames=200",
               "--episode_len=100", "--image_size=48", "--num_workers=1")
    with pytest.raises(SystemExit, match="48px frames but the checkpoint was trained on 32px"):
        run_script("train_tokenizer.py", *args, f"--data_dir={other}", "--init_from=resume")


@pytest.mark.parametrize("gqa", [False, True])
def test_written_out_attention_matches_sdpa(gqa):
    """model.attention equals F.scaled_dot_product_attention in fp32, values and gradients, under a
    mask, causal, and with GQA (2 query heads per key head)."""
    import torch.nn.functional as F
    from model import attention
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 10, 16, generator=g, requires_grad=True)
    k, v = (torch.randn(3, 2 if gqa else 4, 10, 16, generator=g, requires_grad=True)
            for _ in range(2))
    mask = torch.rand(10, 10, generator=g) < 0.6
    mask[:, 0] = True
    for kw in (dict(mask=mask), dict(is_causal=True)):
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=kw.get("mask"),
                                             is_causal=kw.get("is_causal", False), enable_gqa=gqa)
        y = attention(q, k, v, **kw)
        assert (y - ref).abs().max() < 1e-5
        grads = torch.autograd.grad(y.square().sum(), (q, k, v))
        for a, b in zip(grads, torch.autograd.grad(ref.square().sum(), (q, k, v))):
            assert (a - b).abs().max() < 1e-4


def test_cpu_bf16_attention_backward_is_written_out():
    """model.sdpa: under bf16 autocast on a CPU, attention that will be backpropagated is written
    out (model.attention: torch's bf16 CPU flash-attention backward is slow); its output is bf16 as
    before and matches the fp32 result."""
    import torch.nn.functional as F
    from model import attention, sdpa
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(8, 4, 20, 16, generator=g) for _ in range(3))
    mask = torch.rand(20, 20, generator=g) < 0.7
    mask[:, 0] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sdpa(qb, kb, vb, mask, False, 0.0)
        assert torch.equal(y, attention(qb, kb, vb, mask))
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.02
    y.float().sum().backward()
    assert qb.grad.dtype == torch.bfloat16 and qb.grad.abs().sum() > 0
    # no backward: bf16 SDPA as it is
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert (sdpa(qb, kb, vb, mask, False, 0.0).float() - y.float()).abs().max() < 0.05
