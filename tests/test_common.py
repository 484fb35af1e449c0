"""The configurator and the small shared pieces of common.py."""
import copy
import math
import os
import re
import time

import pytest
import torch

import common


def cfg(*argv, **defaults):
    g = dict(defaults)
    return common.configure(g, list(argv)), g


def test_overrides_are_type_checked():
    c, g = cfg("--lr=3e-4", "--batch_size=8", "--compile=False", "--out_dir=out/x", "--dropout=1",
               lr=1e-3, batch_size=4, compile=True, out_dir="out", dropout=0.0)
    assert c == {"lr": 3e-4, "batch_size": 8, "compile": False, "out_dir": "out/x", "dropout": 1.0}
    # the script's globals are overridden
    assert g["batch_size"] == 8 and isinstance(g["dropout"], float)
    for bad, msg in [("--batch_size=2.5", "must be of type int"),
                     ("--compile=maybe", "not a valid bool"),
                     ("--batch_size=8=9", "not a valid int"), ("--lr=fast", "not a valid float")]:
        with pytest.raises(SystemExit, match=msg):
            cfg(bad, lr=1e-3, batch_size=4, compile=True)


def test_unknown_key_names_the_closest():
    with pytest.raises(SystemExit,
                       match=r"unknown config key 'batchsize'; did you mean batch_size\?"):
        cfg("--batchsize=3", batch_size=4, seed=0)
    # the initials
    with pytest.raises(SystemExit, match=r"unknown config key 'lerning_rate'; did you mean lr\?"):
        cfg("--lerning_rate=1", lr=1e-3, lpips_frames=4)
    with pytest.raises(SystemExit, match="must be written --key=value"):
        cfg("--compile", compile=True)


def test_bounds_and_devices():
    """Keys below their least value or not positive, and devices torch lacks: one line each."""
    common.at_least({"batch_size": 1}, batch_size=1) or common.positive({"lr": 1e-9}, "lr")
    for call, msg in [(lambda: common.at_least({"batch_size": 0}, batch_size=1),
                       "batch_size=0 must be >= 1"),
                      (lambda: common.positive({"lr": -1.0}, "lr"), "lr=-1.0 must be > 0"),
                      (lambda: common.positive({"lr": 0.0}, "lr"), "lr=0.0 must be > 0"),
                      (lambda: common.auto_device("tpu"),
                       "device='tpu': use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
                      (lambda: common.auto_device(f"cuda:{torch.cuda.device_count()}"),
                       "but torch sees")]:
        with pytest.raises(SystemExit, match=msg):
            call()
    assert (common.auto_device("cpu") == "cpu"
            and common.auto_device("auto") in ("cpu", "cuda", "mps"))


def test_config_file_and_constants(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import math\nbatch_size = 32\nlr = 2 * 1e-3\n")
    c, _ = cfg(str(f), "--lr=5e-4", batch_size=4, lr=1e-3, K_MAX=8)
    # later arguments win; UPPER_CASE constants are not config
    assert c == {"batch_size": 32, "lr": 5e-4}
    (tmp_path / "bad.py").write_text("batch_sizes = 3\n")
    with pytest.raises(SystemExit, match="unknown config key 'batch_sizes'"):
        cfg(str(tmp_path / "bad.py"), batch_size=4)
    with pytest.raises(SystemExit, match="does not exist"):
        cfg(str(tmp_path / "missing.py"), batch_size=4)


def test_lr_schedule():
    lrs = [common.lr_at(i, 1.0, 10, 110, 0.1) for i in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up
    # cosine to the floor
    assert lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1) == lrs[119]
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    common.atomic_save({"a": torch.ones(2)}, path)

    def dies(obj, f):
        f.write(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        common.atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path)["a"], torch.ones(2))  # the old checkpoint is intact


def test_running_rms_normalizes_with_a_floor():
    from model import RunningRMS
    n = RunningRMS(decay=0.9, floor=1e-3)
    for _ in range(50):
        out = n(torch.tensor(4.0))
    assert out.item() == pytest.approx(1.0, rel=1e-3)
    tiny = RunningRMS(floor=1e-3)
    for _ in range(5):
        out = tiny(torch.tensor(1e-6))
    assert out.item() == pytest.approx(1e-3)  # divided by the floor, not blown up to 1
    assert not math.isnan(RunningRMS()(torch.tensor(0.0)).item())


def test_muon_optimizer_groups_and_state():
    """muon=True: the transformer's matrices go to Muon, everything else to AdamW, each parameter
    exactly once; the pair steps, zeroes and checkpoints like one optimizer (a fresh copy loaded
    from its state continues the same)."""
    from tokenizer import Tokenizer

    def build():
        torch.manual_seed(0)
        m = Tokenizer(image_size=16, patch_size=8, num_latents=4, latent_dim=4, dim=32, enc_depth=2,
                      dec_depth=2, n_head=2, n_kv_head=1, time_every=2)
        return m, common.make_optimizer(m, 1e-2, 0.05, (0.9, 0.95), "cpu", muon=True,
                                        dtype="float32")

    def step(m, opt):
        loss = m(torch.rand(2, 1, 16, 16, 3, generator=g), drop_max=0.0).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    m, opt = build()
    muon, adamw = opt.opts
    assert isinstance(muon, common.Muon) and muon.ns_dtype == torch.float32
    ids = lambda o: [id(p) for grp in o.param_groups for p in grp["params"]]
    names = {id(p): n for n, p in m.named_parameters()}
    assert sorted(ids(muon) + ids(adamw)) == sorted(names) and not set(ids(muon)) & set(ids(adamw))
    # wq, wkv, wo, w12, w3 per block
    assert all(".blocks." in names[i] for i in ids(muon)) and len(ids(muon)) == 4 * 5
    assert "to_pixels.weight" in {names[i] for i in ids(adamw)}
    g = torch.Generator().manual_seed(1)
    step(m, opt)
    m2, opt2 = build()
    m2.load_state_dict(m.state_dict())
    # as from a file: no buffers shared with opt
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(2):
        # the trainers set the schedule's lr through param_groups, also after a load
        for o in (opt, opt2):
            for grp in o.param_groups:
                grp["lr"] *= 0.5
        state = torch.get_rng_state(), g.get_state()
        step(m, opt)
        torch.set_rng_state(state[0]), g.set_state(state[1])
        step(m2, opt2)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), m2.parameters()))


def test_dtype_auto_is_bf16_only_where_it_is_fast(monkeypatch, tmp_path, capsys):
    """CPUs: bf16 where /proc/cpuinfo names AMX, or AVX-512 BF16 on AMD; fp32 otherwise (AVX2,
    AVX-512 without them, Intel's AVX-512 BF16 without AMX, no cpuinfo, or torch held to AVX2
    kernels), read and not timed; an explicit bf16 is kept, with one warning line where it is
    slow."""
    import builtins
    real_open, cpuinfo = builtins.open, tmp_path / "cpuinfo"
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(
        cpuinfo if f == "/proc/cpuinfo" else f, *a, **k))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    intel, amd = "GenuineIntel", "AuthenticAMD"
    for vendor, flags, auto in ((amd, "fpu avx2 fma", "float32"), (intel, None, "float32"),
                                (intel, "avx2 avx512f avx512bw", "float32"),
                                (intel, "avx2 avx512f avx512_bf16", "float32"),
                                (amd, "avx2 avx512f avx512_bf16", "bfloat16"),
                                (intel, "avx512f avx512_bf16 amx_tile amx_bf16", "bfloat16")):
        cpuinfo.unlink(missing_ok=True)
        if flags:
            cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: x\n"
                               f"flags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: amx_bf16\n")
        assert (common.resolve_dtype("cpu", "auto") == auto
                and common.resolve_dtype("cpu", "float32") == "float32"), (vendor, flags)
        common.warn_once.cache_clear()  # each CPU its own process
        assert common.resolve_dtype("cpu", "bfloat16") == "bfloat16"
        assert common.resolve_dtype("cpu", "bfloat16") == "bfloat16"  # warned once, not twice
        warned = capsys.readouterr().out
        assert warned == ("" if auto == "bfloat16" else
                          "warning: bf16 runs slower than fp32 on this CPU (bf16 is fast with "
                          "Intel's AMX or AMD's AVX-512 BF16); --dtype=auto picks float32\n")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert common.resolve_dtype("cpu", "auto") == "float32"  # ATEN_CPU_CAPABILITY=avx2: emulated
    assert common.resolve_dtype("mps", "auto") == "float32"
    with pytest.raises(SystemExit, match="dtype='float16': use 'auto', 'bfloat16' or 'float32'"):
        common.resolve_dtype("cpu", "float16")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_peak_is_measured_within_a_second(dtype):
    import time
    import numpy as np
    from model import matmul_peak_flops
    rng_states = torch.get_rng_state(), np.random.get_state()[1].copy()
    t0 = time.perf_counter()
    flops = matmul_peak_flops("cpu", dtype)
    assert time.perf_counter() - t0 < 1.0 and 0 < flops < math.inf
    assert (torch.equal(torch.get_rng_state(), rng_states[0])
            and (np.random.get_state()[1] == rng_states[1]).all())


@pytest.mark.parametrize("shape", [(48, 48), (32, 80), (80, 32)])
def test_muon_is_torchs_with_its_newton_schulz_in_a_given_dtype(shape):
    """common.Muon in bf16 is torch.optim.Muon(adjust_lr_fn='match_rms_adamw') bit for bit, and
    resumes from its state; in fp32 it differs by bf16's precision, no more."""
    g = torch.Generator().manual_seed(0)
    p0, grads = torch.randn(shape, generator=g), [torch.randn(shape, generator=g) for _ in range(4)]
    torchs = lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.1,
                                         adjust_lr_fn="match_rms_adamw")
    ours = lambda dtype: lambda ps: common.Muon(ps, 0.02, 0.1, dtype)

    def run(make, resume_as=None):
        """4 steps; after 2, resume_as continues from the optimizer's state_dict, as from a
        checkpoint."""
        p = torch.nn.Parameter(p0.clone())
        opt = make([p])
        for i, grad in enumerate(grads):
            if i == 2 and resume_as:
                state, opt = copy.deepcopy(opt.state_dict()), resume_as([p])
                opt.load_state_dict(state)
            p.grad = grad.clone()
            opt.step()
        return p.detach()
    ref = run(torchs)
    assert (torch.equal(run(ours(torch.bfloat16)), ref)
            and torch.equal(run(torchs, ours(torch.bfloat16)), ref))
    fp32 = run(ours(torch.float32), ours(torch.float32))
    assert not torch.equal(fp32, ref) and (fp32 - ref).norm() < 0.02 * (ref - p0).norm()


def test_orthogonalize_batches_matrices_of_one_shape():
    """Muon's Newton-Schulz: matrices of one shape go through it together; each result is the one it
    gets alone, and close to orthogonal (singular values near 1, as the quintic iteration leaves
    them: 0.7-1.2)."""
    g = torch.Generator().manual_seed(0)
    gs = [torch.randn(s, generator=g) for s in ((24, 40), (40, 24), (24, 40), (24, 40), (16, 16))]
    together = common.orthogonalize(gs, torch.float32)
    for x, u in zip(gs, together):
        assert u.shape == x.shape and torch.allclose(u, common.orthogonalize([x], torch.float32)[0],
                                                     atol=1e-5)
        sv = torch.linalg.svdvals(u)
        assert sv.min() > 0.6 and sv.max() < 1.25


def test_compile_says_so_first(capsys):
    m = torch.nn.Linear(2, 2)
    assert common.compile_and_wrap(m, False, False, 0, "cpu") is m and capsys.readouterr().out == ""
    common.compile_and_wrap(m, True, False, 0, "cpu")
    assert capsys.readouterr().out.startswith("compiling the training step (torch.compile: ~1-3 "
                                              "minutes on a CPU")


@pytest.mark.parametrize("script", ["train_tokenizer.py", "train_dynamics.py", "train_agent.py",
                                    "sample.py", "eval_agent.py", "tools/bench.py", "data.py",
                                    "game.py"])
def test_help_lists_every_key(script, capsys):
    """--help prints the docstring and every config key with its default (and comment); keys read
    from the source."""
    import ast
    from conftest import ROOT, run_script
    tree = ast.parse(open(os.path.join(ROOT, script)).read())
    # literal config values; names assigned an expression (e.g. os.cpu_count() or 1)
    keys, maybe = [], []
    for node in tree.body:
        if isinstance(node, ast.If):  # game.py configures under `if __name__ == '__main__'`
            break
        if isinstance(node, ast.Expr) and "configure" in ast.dump(node) or \
                isinstance(node, ast.Assign) and "configure" in ast.dump(node.value):
            break
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], (ast.Name, ast.Tuple)):
            names = (node.targets[0].elts if isinstance(node.targets[0], ast.Tuple)
                     else [node.targets[0]])
            try:
                values = ast.literal_eval(node.value)
            except ValueError:
                maybe += [n.id for n in names]
                continue
            values = values if isinstance(node.targets[0], ast.Tuple) else [values]
            keys += [n.id for n, v in zip(names, values) if isinstance(v, (int, float, bool, str))
                     and not n.id.startswith("_") and not n.id.isupper()]
    with pytest.raises(SystemExit) as e:
        run_script(script, "--help")
    out = capsys.readouterr().out
    assert e.value.code == 0 and len(keys) >= 5
    listed = [line.split("=")[0].strip()[2:] for line in out.splitlines()
              if line.startswith("  --")]
    assert set(keys) <= set(listed) <= set(keys) | set(maybe), set(listed) ^ set(keys)
    assert len(listed) == len(set(listed)) and "  # " in out  # each once, comments beside them


def test_help_keeps_a_comment_that_goes_on(tmp_path, capsys):
    """A key's comment continued on indented comment lines is printed whole; a section header below
    it is not."""
    (tmp_path / "s.py").write_text("lr = 0.1  # the rate,\n         # halved at the end\n# system\n"
                                   "steps = 3  # how many\n")
    common.print_help({"__file__": str(tmp_path / "s.py"), "lr": 0.1, "steps": 3}, ["lr", "steps"])
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "  --lr=0.1  # the rate, halved at the end", "  --steps=3  # how many"]


def test_ticker_prints_totals_and_eta_sparingly(capsys):
    tick = common.ticker("cache", 300, every=1000)  # a log: nothing until the end
    for n in range(1, 301):
        tick(n, "frames")
    assert capsys.readouterr().out.splitlines() == ["cache: 300/300 (100%, eta 0m) frames"]
    tick = common.ticker("eval", 4, every=0)
    for n in (1, 2):
        tick(n)
    assert capsys.readouterr().out.splitlines() == ["eval: 1/4 (25%, eta 0m)",
                                                    "eval: 2/4 (50%, eta 0m)"]


def test_progress_eta_leaves_out_the_compile(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    progress = common.progress_clock(1000, 0, now[0])
    now[0] += 600  # the first 100 steps, compiling included: 6 s a step
    assert progress(100) == "iter 100/1000 (10%, eta 90m)"  # the only pace known yet
    now[0] += 60  # then 0.6 s a step
    assert progress(200) == "iter 200/1000 (20%, eta 8m)"
    now[0] += 60
    assert progress(300) == "iter 300/1000 (30%, eta 7m)"
    clock = common.progress_clock(1000, 0, now[0], max_minutes=5)  # wall-clock budget caps the eta
    now[0] += 60
    assert clock(10) == "iter 10/1000 (1%, eta 4m)"


def test_bench_reads_a_peer_and_sets_figures_beside_ours(capsys, monkeypatch):
    import sys
    # tools/bench.py reads its config from the command line on import
    monkeypatch.setattr(sys, "argv", ["tools/bench.py"])
    import bench
    theirs = bench.run_json([sys.executable, "-c",
                             "print('warming up'); print('{\"tokenizer_step_s\": 4.0, "
                             "\"gen_frames_per_s_cached\": 20, \"only_theirs\": 1}')"], "the peer")
    assert theirs["tokenizer_step_s"] == 4.0
    side = bench.beside_peer({"tokenizer_step_s": 1.0, "gen_frames_per_s_cached": 50.0,
                              "threads": 2}, theirs)
    assert side == {"peer_tokenizer_step_s": 4.0, "vs_peer_tokenizer_step_s": 0.25,
                    "peer_gen_frames_per_s_cached": 20, "vs_peer_gen_frames_per_s_cached": 2.5}
    assert "ours 1, peer 4, ours / peer 0.25" in capsys.readouterr().err
    for cmd, said in ((["no-such-peer-binary"], "did not start"),
                      ([sys.executable, "-c", "print('x')"], "no JSON"),
                      ([sys.executable, "-c", "raise SystemExit(3)"], "exit 3")):
        with pytest.raises(SystemExit, match=said):
            bench.run_json(cmd, "the peer")


def test_bench_measures_the_matmul_peak_once_and_hands_it_to_every_stage(monkeypatch):
    import sys
    monkeypatch.setattr(sys, "argv", ["tools/bench.py"])
    import bench
    calls, cmds = [], []
    monkeypatch.setattr(bench, "matmul_peak_flops", lambda *a: calls.append(a) or 1.5e12)
    monkeypatch.setattr(bench, "run_json", lambda cmd, what: cmds.append(cmd) or {f"{what}_s": 1.0})
    bench.main()
    assert len(calls) == 1 and len(cmds) == len(bench.STAGES)
    assert all("--peak_tflops=1.5" in cmd for cmd in cmds)
    # a stage given the peak does not measure its own
    monkeypatch.setattr(bench, "peak_tflops", 1.5)
    assert bench.peak_flops() == 1.5e12 and len(calls) == 1


def test_bench_default_preset_reads_the_trainers_defaults(monkeypatch, tmp_path):
    import importlib
    import sys
    (tmp_path / "s.py").write_text("a = 3  # n\nb = 'x'\nc = 2 * a\nd, e = 1, 2\nimport os\n"
                                   "f = (1, 2)\n")
    # literals only
    assert common.script_defaults(tmp_path / "s.py") == {"a": 3, "b": "x", "f": (1, 2)}
    # bench configures on import
    monkeypatch.setattr(sys, "argv", ["tools/bench.py", "--preset=default"])
    import bench
    try:
        importlib.reload(bench)
        # train_tokenizer's, train_dynamics's
        assert bench.TOK_BATCH == (16, 4) and bench.DYN_BATCH == (4, 16)
        assert (bench.DYN["time_every"] == 2 and bench.DYN["k_max"] == 4
                and bench.MUON == (True, False))
        assert bench.LOSS == {"context_frac": 0.0, "ramp": False, "teacher_forcing": True,
                              "zero_frac": 0.75}
        assert bench.AGENT_BATCH == (32, 2) and bench.IMAGINE == (32, 8, 16)  # train_agent's
        # config/*_gpu.py over the defaults
        monkeypatch.setattr(sys, "argv", ["tools/bench.py", "--preset=gpu"])
        importlib.reload(bench)
        assert bench.TOK["dim"] == 384 and bench.TOK_BATCH == (128, 1) and bench.DYN["depth"] == 8
        assert (bench.DYN_BATCH == (16, 32) and bench.AGENT_BATCH == (256, 2)
                and bench.IMAGINE == (128, 8, 32))
        # the GPU check, on a machine without one
        monkeypatch.setattr(sys, "argv", ["tools/bench.py", "--what=gpu"])
        importlib.reload(bench)
        with pytest.raises(SystemExit,
                           match="what=gpu checks a CUDA GPU, and torch sees none here"):
            bench.main()
        monkeypatch.setattr(sys, "argv", ["tools/bench.py", "--preset=mine"])
        with pytest.raises(common.ConfigError, match="preset=.mine."):
            importlib.reload(bench)
    finally:
        monkeypatch.setattr(sys, "argv", ["tools/bench.py"])
        importlib.reload(bench)
    assert bench.TOK_BATCH == (4, 16) and bench.LOSS == dict(ramp=True, teacher_forcing=False,
                                                               zero_frac=0.0)


def test_a_cuda_machine_as_far_as_a_cpu_allows(monkeypatch, tmp_path):
    """What the scripts choose where torch sees a CUDA GPU (its availability patched; the suite
    itself runs on the CPU, conftest): the device, bf16 only where it is native (compute capability
    8.0 on), the main job's gpu preset; an NVIDIA GPU that torch cannot use stops the main job in
    one line."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert common.auto_device("auto") == "cuda" and common.auto_device("cuda:0") == "cuda:0"
    with pytest.raises(SystemExit, match="device='cuda:1' but torch sees 1 CUDA GPU"):
        common.auto_device("cuda:1")
    for native, emulated, want in ((True, True, "bfloat16"), (False, True, "float32"),
                                   (False, False, "float32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True:
                            native or (including_emulation and emulated))
        assert (common.resolve_dtype("cuda", "auto") == want
                and common.resolve_dtype("cuda:0", "float32") == "float32")
    assert common.main_job_preset() == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    smi = tmp_path / "nvidia-smi"  # a driver that lists a GPU
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert common.nvidia_gpus() == ["GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-0)"]
    with pytest.raises(SystemExit, match=r"RTX 3060 \(UUID: GPU-0\) is here, but torch .* "
                                         r"cannot use it: install"):
        common.main_job_preset()
    smi.unlink()
    assert common.nvidia_gpus() == [] and common.main_job_preset() == "cpu"


def test_every_config_file_names_its_scripts_keys(monkeypatch):
    """Each config/<stage>_<preset>.py assigns only keys its script has, with values of their types
    (the GPU recipe cannot be run here: this is what checks it), and starts with the
    '_minutes = N' pipeline.sh sums."""
    import glob
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # (a config file may build on another: exec(open("config/...").read()), as scripts run)
    monkeypatch.chdir(root)
    scripts = {"data": "data.py", "tokenizer": "train_tokenizer.py",
               "dynamics": "train_dynamics.py", "finetune": "train_agent.py",
               "imagine": "train_agent.py", "eval": "eval_agent.py"}
    files = sorted(glob.glob(os.path.join(root, "config", "*_*.py")))
    presets = {os.path.basename(f).rsplit("_", 1)[1][:-3] for f in files}
    # six stages each
    assert {"cpu", "gpu", "gpu128", "tiny"} <= presets and len(files) == 6 * len(presets)
    for f in files:
        stage = os.path.basename(f).rsplit("_", 1)[0]
        defaults = common.script_defaults(os.path.join(root, scripts[stage]))
        text = open(f).read()
        assert re.match(r"_minutes = \d+(\.\d+)?  # ", text), f
        keys = {}
        exec(compile(text, f, "exec"), keys)
        for k, v in keys.items():
            if not k.startswith("_"):
                assert k in defaults, (f, k)
                common._coerce(k, v, defaults[k])  # SystemExit on a value of the wrong type


def test_readme_commands_chain():
    """The README's bash blocks, read in order as a user runs them after the quick start: every
    python command names a script, config files and keys that exist, and every checkpoint or data
    folder it reads (its config files' paths and defaults included) is one the main job or an
    earlier command writes, or one shipped in the repo."""
    import ast
    import re
    import shlex
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stages = ["tokenizer", "dynamics", "agent_bc", "agent_rl"]
    reads = ("data_dir", "tokenizer_ckpt", "init_ckpt", "dynamics_ckpt", "ckpt", "bc_ckpt",
             "rl_ckpt", "run")
    written, ran = {"data/crafter"}, 0  # (the quick start's main job, below, writes the rest)
    written |= {f"pretrained/{f}" for f in os.listdir(os.path.join(root, "pretrained"))}
    for block in re.findall(r"```bash\n(.*?)```", open(os.path.join(root, "README.md")).read(),
                            re.S):
        for line in block.splitlines():
            if "# error:" in line:  # a line that shows an error on purpose
                continue
            for part in line.split("#")[0].split("&&"):
                words = shlex.split(part)
                env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=\S*", w))
                words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]
                if words[:2] == ["bash", "pipeline.sh"]:
                    preset = env.get("PRESET", "cpu")
                    written |= {f"out/{preset}/{s}/ckpt.pt" for s in stages}
                    continue
                if words[0] != "python" or not words[1].endswith(".py"):
                    continue  # pip, pytest, torchrun (a launcher's example)
                ran += 1
                src = open(os.path.join(root, words[1])).read()
                g = {n.targets[0].id: n.value for n in ast.parse(src).body
                     if isinstance(n, ast.Assign) and len(n.targets) == 1
                     and isinstance(n.targets[0], ast.Name)}
                config = {k: ast.literal_eval(v) for k, v in g.items()
                          if k in reads and isinstance(v, ast.Constant)}
                for arg in words[2:]:
                    if arg.startswith("--"):
                        key, value = arg[2:].split("=", 1)
                        assert key in g, (line, key)
                        config[key] = value
                    else:
                        assert os.path.isfile(os.path.join(root, arg)), (line, arg)
                        file_g = {}
                        exec(open(os.path.join(root, arg)).read(), file_g)
                        config.update({k: v for k, v in file_g.items() if k in g})
                for key in reads:
                    path = config.get(key)
                    # (data.py writes its data_dir)
                    if path and not (key == "data_dir" and words[1] == "data.py"):
                        assert any(w == path or w.startswith(path.rstrip("/") + "/")
                                   for w in written), (line, key)
                if config.get("out_dir"):
                    written.add(os.path.join(config["out_dir"], "ckpt.pt"))
                if words[1] == "data.py":
                    written.add(config["data_dir"])
    assert ran >= 10
