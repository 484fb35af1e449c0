"""The main job (pipeline.sh) end to end on a tiny Crafter store, and what its run feeds: host
syncs, resume, kill -9, eval_agent.py, export.py, sample.py, DAgger stores, diagnose, bad input."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import kill_and_rerun, run_pipeline, run_script, steps_of, write_test_preset
from store import FrameStore
from test_train_dynamics import fails, metrics


SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
         "__format__")
# torch.rand(()) drawn on the CPU whatever the device: no wait for a GPU
HOST_SIDE = {("sample_tau_d", "item")}


def host_syncs(monkeypatch, script, *args):
    """Calls of the Tensor methods that wait for a GPU (item, tolist, bool(), ...) that the
    project's own files make while `script` runs here, by file:line (torch's internals left out: on
    a GPU its fused optimizers do not sync)."""
    import collections
    import sys
    root, counts = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    collections.Counter())
    for name in SYNCS:
        def counted(self, *a, _f=getattr(torch.Tensor, name), _name=name, **k):
            code = sys._getframe(1).f_code
            if (code.co_filename.startswith(root)
                    and os.sep + "tests" + os.sep not in code.co_filename
                    and "site-packages" not in code.co_filename  # (a venv inside the repo)
                    and (code.co_name, _name) not in HOST_SIDE):
                counts[f"{os.path.basename(code.co_filename)}:"
                       f"{sys._getframe(1).f_lineno} {_name}"] += 1
            return _f(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    run_script(script, *args)
    monkeypatch.undo()
    return counts


@pytest.mark.slow
def test_no_host_sync_in_a_training_step(agent_run, tmp_path, monkeypatch):
    """Every trainer's step, and an imagination step, waits for the device only at log, eval and
    save steps: a run of 4 steps makes exactly the syncs of a run of 2 (logs and evals far apart). A
    new .item() or bool() per step fails here, with its file:line."""
    out, store, ft, im, _ = agent_run
    cfg = out.parent / "config"
    runs = {"tokenizer": ["train_tokenizer.py", str(cfg / "tokenizer_test.py"),
                          f"--data_dir={store}"],
            "dynamics": ["train_dynamics.py", str(cfg / "dynamics_test.py"), f"--data_dir={store}",
                         f"--tokenizer_ckpt={out / 'tokenizer/ckpt.pt'}"],
            "finetune": ft, "imagine": im}
    for stage, args in runs.items():
        n = [host_syncs(monkeypatch, *args, f"--out_dir={tmp_path / stage}{steps}",
                        f"--max_iters={steps}", "--log_interval=100", "--eval_interval=100")
             for steps in (2, 4)]
        # (some syncs at evals and saves: the counter works)
        assert n[0] and n[1] == n[0], (stage, n[1] - n[0])


# the test preset of the main job: every stage of pipeline.sh, a few steps each, on the tiny 32x32
# Crafter store
@pytest.mark.slow
def test_main_job_at_128x128(tmp_path):
    """The GPU recipe's 128x128 variant in miniature (config/*_gpu128.py): a 128x128 store through
    every stage of pipeline.sh, with 16x16 patches, 4 latents per dynamics token, at test sizes."""
    config = write_test_preset(tmp_path, data=dict(image_size=128), tokenizer=dict(patch_size=16),
                               dynamics=dict(pack=4),
                               eval=dict(episodes=2, baseline_episodes=1, max_steps=8))
    # (its data stage makes the store)
    run_pipeline(config, str(tmp_path / "crafter128"), tmp_path / "out")
    tok, dyn, rl = (torch.load(tmp_path / f"out/{s}/ckpt.pt", weights_only=False)
                    for s in ("tokenizer", "dynamics", "agent_rl"))
    assert tok["model_args"]["image_size"] == 128 and tok["model_args"]["patch_size"] == 16
    assert dyn["model_args"]["pack"] == 4 and rl["image_size"] == 128
    assert "| BC | 2 |" in (tmp_path / "out/results.md").read_text()


@pytest.mark.slow
def test_main_job(agent_run, tmp_path):
    tmp, store, ft, im, stdout = agent_run
    import imageio.v3 as iio
    # every stage's training curves, beside results.md
    assert iio.imread(tmp / "curves.png").shape == (360, 1200, 3)
    # the plan, first
    assert "main job: preset test" in stdout and "tokenizer  ~0.5 min" in stdout
    assert "total      ~3 min (0.1 h)" in stdout  # six stages of ~30 s
    bc = [m for m in metrics(tmp / "agent_bc") if "val_bc_acc" in m]  # (the eval appends scores)
    rl = metrics(tmp / "agent_rl")
    assert (bc[-1]["iter"] == 4 and 0 <= bc[-1]["val_bc_acc"] <= 1
            and 0 <= bc[-1]["reward_recall"] <= 1)
    assert bc[-1]["reward_events"] > 0  # the held-out episodes have unlock events to find
    assert ([m["iter"] for m in rl[:5]] == [0, 1, 2, 3, 3]
            and all(np.isfinite(m["imagined_return"]) for m in rl[1:4]))
    assert all(0 <= m["positive_adv"] <= 1 for m in rl[1:4])
    a, b = (torch.load(tmp / f"{p}/ckpt.pt", weights_only=False) for p in ("agent_bc", "agent_rl"))
    frozen = [k for k in a["model"] if k.startswith("dynamics.") or k.startswith("agent.reward")]
    # imagination trains the heads only
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in frozen)
    assert not torch.equal(a["model"]["agent.policy.3.weight"], b["model"]["agent.policy.3.weight"])
    # the frozen BC head
    assert torch.equal(b["model"]["prior.3.weight"], a["model"]["agent.policy.3.weight"])
    assert b["init"]["phase"] == "finetune" and a["init"]["phase"] == "dynamics"
    # real game: every policy on the same seeds, one table, the paired comparison, metrics, a video
    res = json.load(open(tmp / "eval.json"))
    assert set(res["rows"]) == {"random", "demo eps=0", "data mix", "BC", "BC argmax", "RL",
                                "RL argmax"}
    # the baselines on the first 2 seeds (baseline_episodes)
    agents = ("BC", "BC argmax", "RL", "RL argmax")
    assert all(r["seeds"] == [1_000_000, 1_000_001, 1_000_002][:3 if n in agents else 2]
               for n, r in res["rows"].items())
    assert all(0 < r["mean_length"] <= 12 for r in res["rows"].values())
    assert 0 <= res["paired"]["returns"]["sign_p"] <= 1 and "RL - BC per seed" in stdout
    assert (metrics(tmp / "agent_rl")[-1]["eval_episodes"] == 3
            and "crafter_score" in metrics(tmp / "agent_bc")[-1])
    for f in ("agent_episode.mp4", "rollout.mp4", "rollout.gif", "tokenizer/recon.png", "eval.md"):
        assert os.path.getsize(tmp / f) > 0, f
    # results.md: every figure there and finite, hardware and commit named, a wall time per stage
    text = open(tmp / "results.md").read()
    figures = ["tokenizer val PSNR", "tokenizer val SSIM", "rollout PSNR", "floor", "ceiling",
               "shuffle ratio", "after the agent's finetuning", "BC accuracy",
               "imagined reward's unlocks", "event head, real frames", "imagined return", "| random |", "| demo eps=0 |",
               "| data mix |", "| BC |", "| RL |", "| total |"]
    figures += [f"| {s} |" for s in ("data", "tokenizer", "dynamics", "video", "finetune",
                                      "imagine", "eval")]
    for name in figures:
        line = next(ln for ln in text.splitlines() if name in ln)
        values = [float(v) for v in re.findall(r"[-+]?\d+\.\d+", line)]
        assert values and all(np.isfinite(values)), line
    assert ("commit " in text and ("CPU: " in text or "GPU: " in text)
            and not re.search(r"\bnan\b|\binf\b", text.lower()))
    # a rerun skips every stage: nothing trains again, the eval is not replayed
    again = run_pipeline(tmp.parent / "config", store, tmp)
    assert again.count("nothing to do") == 5 and "== eval" not in again and "== video" not in again


@pytest.mark.slow
def test_label_study_job(agent_run, tmp_path):
    """LABEL_STUDY=... bash pipeline.sh: the main job's store, tokenizer and dynamics run (as f1.0),
    then one dynamics run per name in LABEL_RUNS, its settings read from the name, then the study
    table; no agent stage; a rerun skips."""
    out, store, _, _, _ = agent_run
    env = dict(LABEL_STUDY=str(tmp_path / "study"), LABEL_RUNS="f0.5_lb0.5 f0.5_alone f0.0")
    stdout = run_pipeline(out.parent / "config", store, out, **env)
    assert ("label study" in stdout and "and 3 more dynamics runs" in stdout
            and "total      ~3 min" in stdout)
    # data, tokenizer, dynamics: done
    assert stdout.count("nothing to do") == 3 and "== finetune" not in stdout
    want = {"f0.5_lb0.5": (0.5, 0.5, True), "f0.5_alone": (0.5, 0.0, False),
            "f0.0": (0.0, 0.0, True)}
    for name, (frac, lb, video) in want.items():
        c = torch.load(out / "labels" / name / "ckpt.pt", weights_only=False)
        assert (c["config"]["action_label_frac"],
                c["config"]["labeled_batch_frac"]) == (frac, lb), name
        assert c["config"]["unlabeled_video"] == video and c["iter"] == 10, name
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ") for ln in open(tmp_path / "study.md")
            if ln.startswith("| f") and ln.count("|") == 12}
    assert (set(rows) == {"f1.0", *want} and rows["f0.0"][1] == "0%"
            and rows["f0.5_alone"][3] == "no")
    # as drawn: all or none labeled
    assert [rows[n][2] for n in ("f1.0", "f0.5_lb0.5", "f0.0")] == ["0%", "50%", "0%"]
    # the test preset: one episode; its runs tie, or nearly (exactly on some CPUs: then it warns)
    assert "no error bars" in stdout
    assert "tie in rollout PSNR" not in stdout or rows["f1.0"][4] == rows["f0.0"][4]
    assert all(np.isfinite(float(r[4])) and np.isfinite(float(r[10].strip(" |\n")))
               for r in rows.values())
    video = next(ln for ln in open(tmp_path / "study.md")
                 if ln.startswith("| f0.5_lb0.5 - f0.5_alone | "))
    assert float(video.split(" | ")[1].split(" ± ")[0]) == pytest.approx(
        float(rows["f0.5_lb0.5"][4]) - float(rows["f0.5_alone"][4]), abs=0.016)
    again = run_pipeline(out.parent / "config", store, out, **env)
    assert again.count("nothing to do") == 6 and "wrote" in again


def test_eval_reuses_bc_rows(agent_run, tmp_path, capsys):
    """bc_eval: another RL run scored against the BC rows of an earlier eval on the same seeds, not
    replayed; an eval.json of other seeds, or of a BC checkpoint that changed since, is refused with
    one line."""
    tmp, _, _, _, _ = agent_run
    prev = json.load(open(tmp / "eval.json"))
    args = ["eval_agent.py", str(tmp.parent / "config/eval_test.py"),
            f"--bc_ckpt={tmp / 'agent_bc/ckpt.pt'}", f"--rl_ckpt={tmp / 'agent_rl/ckpt.pt'}",
            "--baselines=False", f"--bc_eval={tmp / 'eval.json'}"]
    capsys.readouterr()
    run_script(*args, f"--out={tmp_path / 'again.json'}")
    res = json.load(open(tmp_path / "again.json"))
    assert ("BC: score" in capsys.readouterr().out
            and set(res["rows"]) == {"BC", "BC argmax", "RL", "RL argmax"})
    assert (res["rows"]["BC"] == prev["rows"]["BC"]
            and res["rows"]["BC argmax"] == prev["rows"]["BC argmax"])
    d = np.array(res["rows"]["RL"]["returns"]) - np.array(prev["rows"]["BC"]["returns"])
    assert res["paired"]["returns"]["mean_diff"] == pytest.approx(d.mean())
    d = np.array(res["rows"]["RL"]["lengths"]) - np.array(prev["rows"]["BC"]["lengths"])
    assert res["paired"]["lengths"]["mean_diff"] == pytest.approx(d.mean()) and len(d) == 3
    assert "was played with episodes=3, not 2" in fails(*args, "--episodes=2",
                                                        f"--out={tmp_path / 'x.json'}")
    assert "is not an eval.json" in fails(*args[:-1], f"--bc_eval={tmp / 'agent_bc/ckpt.pt'}")
    bc2, stale = tmp_path / "bc2.pt", tmp_path / "stale.json"
    shutil.copy(tmp / "agent_bc/ckpt.pt", bc2)  # a newer file
    assert "not bc_ckpt" in fails(*args, f"--bc_ckpt={bc2}", f"--out={tmp_path / 'x.json'}")
    prev["rows"]["BC"]["ckpt"] = str(bc2)
    stale.write_text(json.dumps(prev))
    assert "the file changed since" in fails(*args, f"--bc_ckpt={bc2}", f"--bc_eval={stale}",
                                             f"--out={tmp_path / 'x.json'}")
    prev = json.load(open(tmp / "eval.json"))
    del prev["rows"]["BC"]["lengths"]  # an eval.json from before lengths were recorded
    stale.write_text(json.dumps(prev))
    assert "predates episode lengths" in fails(*args, f"--bc_eval={stale}",
                                               f"--out={tmp_path / 'x.json'}")
    assert not os.path.exists(tmp_path / "x.json")


def test_finetuning_keeps_the_world_models_clips(agent_run, tmp_path, monkeypatch):
    """Phase 2's dynamics loss trains on the dynamics run's clips (its batch_size x seq_len), not on
    the agent's short windows: on those alone the world model forgets all but the last frame."""
    from dynamics import ShortcutLoss
    out, _, ft, _, _ = agent_run
    shapes, forward = [], ShortcutLoss.forward

    def spy(self, model, z1, *args, **kwargs):
        shapes.append(tuple(z1.shape[:2]))
        return forward(self, model, z1, *args, **kwargs)
    monkeypatch.setattr(ShortcutLoss, "forward", spy)
    run_script(*ft, f"--out_dir={tmp_path}", "--max_iters=2", "--eval_interval=100",
               "--batch_size=3", "--seq_len=2")  # the agent's windows
    dyn = torch.load(out / "dynamics/ckpt.pt", weights_only=False)["config"]
    assert shapes == [(dyn["batch_size"], dyn["seq_len"])] * 2 and dyn["seq_len"] > 2
    # the world model's held-out rollouts, measured after finetuning as its own run measured them
    m = [m for m in metrics(tmp_path) if "val_rollout_psnr" in m][-1]
    assert 5 < m["val_rollout_psnr"] < 60 and 5 < m["val_floor_psnr"] < 60


@pytest.mark.parametrize("phase", ["finetune", "imagine"])
def test_agent_phases_resume_exactly(agent_run, phase):
    """Stopped halfway and resumed: the same parameters as the pipeline's uninterrupted run
    (imagination: two optimizers, the value head at its own lr)."""
    tmp, _, ft, im, _ = agent_run
    cmd, full, n = (ft, "agent_bc", 4) if phase == "finetune" else (im, "agent_rl", 3)
    # subprocesses, as the pipeline's run was: in this process, after other tests, bf16 kernels may
    # differ (1e-5)
    never, log, part = ((lambda t0: False), tmp / f"{phase}_part.txt",
                        f"--out_dir={tmp / (phase + '_part')}")
    kill_and_rerun([*cmd, part, f"--max_iters={n // 2}"], never, 0, log)
    kill_and_rerun([*cmd, part, f"--max_iters={n}", "--init_from=resume"], never, 0, log)
    a, b = (torch.load(tmp / f"{p}/ckpt.pt", weights_only=False) for p in (full, phase + "_part"))
    assert a["iter"] == b["iter"] == n and all(torch.equal(a["model"][k], b["model"][k])
                                               for k in a["model"])


@pytest.mark.slow
def test_kill9_anywhere_in_finetuning_loses_nothing(agent_run, tmp_path):
    """SIGKILL three times (in steps, evals or checkpoint saves: random moments after a step is
    logged), rerun with resume each time: the same parameters as the uninterrupted run."""
    tmp, _, ft, _, _ = agent_run
    flags = ["--max_iters=24", "--eval_interval=3", "--log_interval=1"]
    # the reference runs as a subprocess too: in-process runs may pick other kernels
    never = lambda t0: False
    _, ref = kill_and_rerun([*ft, f"--out_dir={tmp_path / 'ref'}", *flags], never, 0,
                            tmp_path / "ref.txt")
    out, log = tmp_path / "killed", tmp_path / "log.txt"
    # 3 kills <= 15 of 24 steps
    landed, text = kill_and_rerun([*ft, f"--out_dir={out}", *flags],
                                  lambda t0: "ms/iter" in open(log).read(), 3, log,
                                  resume_if=str(out / "ckpt.pt"), delay=steps_of(ref))
    a, b = (torch.load(p / "ckpt.pt", weights_only=False) for p in (tmp_path / "ref", out))
    assert landed == 3 and ("iter 24/24" in text or "nothing to do" in text)
    assert a["iter"] == b["iter"] == 24 and all(torch.equal(a["model"][k], b["model"][k])
                                                for k in a["model"])


def test_sample_from_the_finetuned_world_model(agent_run, tmp_path):
    """sample.py (and every load_dynamics) takes an agent checkpoint too: the world model in it."""
    tmp = agent_run[0]
    run_script("sample.py", f"--dynamics_ckpt={tmp / 'agent_bc/ckpt.pt'}", "--num_windows=1",
               "--context_frames=2", "--num_frames=2", f"--out={tmp_path / 'a.gif'}")
    assert os.path.getsize(tmp_path / "a.gif") > 0
    assert fails("train_agent.py", "--imagine_batch=0") == "error: imagine_batch=0 must be >= 1"


def test_a_run_folder_travels(agent_run, tmp_path):
    """A run folder copied to another machine (the tokenizer path its checkpoints name is gone
    there) loads as it did: the tokenizer beside them (<run>/tokenizer) is found; a checkpoint alone
    names the missing path and the flag."""
    from agent import load_policy
    from play import load
    moved = tmp_path / "moved"
    shutil.copytree(agent_run[0], moved,
                    ignore=shutil.ignore_patterns("latents_*", "*.mp4", "*.gif"))
    for stage in ("dynamics", "agent_bc", "agent_rl"):
        ckpt = torch.load(moved / stage / "ckpt.pt", weights_only=False)
        ckpt["tokenizer"]["path"] = "/gone/out/tokenizer/ckpt.pt"  # as on the training machine
        torch.save(ckpt, moved / stage / "ckpt.pt")
    policy = load_policy(str(moved / "agent_rl/ckpt.pt"))
    assert 0 <= policy.act(np.zeros((32, 32, 3), np.uint8)) < 17
    tok = load(str(moved / "dynamics/ckpt.pt"), "cpu")[0]
    assert torch.equal(tok.state_dict()["patch_embed.weight"], torch.load(
        moved / "tokenizer/ckpt.pt", weights_only=False)["model"]["patch_embed.weight"])
    run_script("sample.py", f"--dynamics_ckpt={moved / 'dynamics/ckpt.pt'}", "--num_windows=1",
               "--context_frames=2", "--num_frames=2", f"--out={tmp_path / 'a.gif'}")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(moved / "agent_rl/ckpt.pt", alone / "ckpt.pt")
    with pytest.raises(SystemExit, match="'/gone/out/tokenizer/ckpt.pt' does not exist, nor one "
                                         "beside .* name it with --tokenizer_ckpt=PATH"):
        load_policy(str(alone / "ckpt.pt"))
    assert 0 <= load_policy(str(alone / "ckpt.pt"), tokenizer_ckpt=str(
        moved / "tokenizer/ckpt.pt")).act(np.zeros((32, 32, 3), np.uint8)) < 17


def test_exported_checkpoints_load_as_a_runs_do(agent_run, tmp_path):
    """export.py: a run's tokenizer and RL agent as bf16 weights (the shipped pretrained/ files);
    the ordinary loading code takes them: the policy acts as the run's does (bf16-rounded weights),
    sample.py makes a rollout from real Crafter where the data is not here, eval_agent.py scores the
    agent without writing into its folder."""
    from agent import load_policy
    run_script("export.py", f"--run={agent_run[0]}", f"--out={tmp_path / 'pre'}")
    agent = torch.load(tmp_path / "pre/agent.pt", weights_only=False)
    assert "optimizer" not in agent and not any(k.startswith("prior.") for k in agent["model"])
    assert (agent["model"]["agent.policy.3.weight"].dtype == torch.bfloat16
            and agent["tokenizer"]["path"] == "tokenizer.pt")
    ours, theirs = (load_policy(p) for p in (str(tmp_path / "pre/agent.pt"),
                                             str(agent_run[0] / "agent_rl/ckpt.pt")))
    for a, b in ((ours.agent, theirs.agent), (ours.dyn, theirs.dyn), (ours.tok, theirs.tok)):
        assert all(torch.equal(v, b.state_dict()[k].bfloat16().float())
                   for k, v in a.state_dict().items()
                   if v.is_floating_point())  # the run's weights, rounded to bf16
    assert 0 <= ours.act(np.zeros((32, 32, 3), np.uint8)) < 17
    agent["data_dir"] = "/gone/data/crafter"  # as on another machine
    torch.save(agent, tmp_path / "pre/agent.pt")
    run_script("sample.py", f"--dynamics_ckpt={tmp_path / 'pre/agent.pt'}", "--num_windows=1",
               "--context_frames=2", "--num_frames=2", f"--out={tmp_path / 'a.gif'}")
    assert os.path.getsize(tmp_path / "a.gif") > 0
    run_script("eval_agent.py", f"--rl_ckpt={tmp_path / 'pre/agent.pt'}", "--episodes=1",
               "--max_steps=5", "--baselines=False", "--argmax=False",
               f"--out={tmp_path / 'eval.json'}")
    # nothing written beside them
    assert sorted(os.listdir(tmp_path / "pre")) == ["agent.pt", "tokenizer.pt"]


def test_policy_plays_real_episodes(agent_run):
    from agent import load_policy
    from game import evaluate, evaluate_lockstep
    tmp = agent_run[0]
    policy = load_policy(str(tmp / "agent_bc/ckpt.pt"))
    ckpt = torch.load(tmp / "agent_bc/ckpt.pt", weights_only=False)
    # the window it learned on
    assert policy.dyn.transformer.time_window == ckpt["window"] == ckpt["config"]["seq_len"]
    assert load_policy(str(tmp / "agent_bc/ckpt.pt"),
                       time_window=3).dyn.transformer.time_window == 3
    a = policy.act(np.zeros((32, 32, 3), np.uint8))
    assert isinstance(a, int) and 0 <= a < 17
    # one episode at a time
    one = evaluate(lambda env: policy.reset() or policy.act, [5, 6], 15, size=32)
    both = evaluate_lockstep(policy, [5, 6], 15, size=32)  # batched, in lockstep
    assert (0 < one["mean_length"] <= 15 and 0 < both["mean_length"] <= 15
            and len(both["returns"]) == 2)


def test_dagger_store_labels_the_agents_states(agent_run, tmp_path):
    """data.py --agent: the agent plays, the screen-only demonstrator's choice in each state it
    reaches is stored as the label (replaying the stored actions, a fresh demonstrator says the same
    in every state); the store mixes with another through --source=stores, labels kept; finetuning
    reads them."""
    from demonstrator import Demonstrator
    from game import make_env
    ckpt, d = agent_run[0] / "agent_bc/ckpt.pt", tmp_path / "dagger"
    run_script("data.py", f"--data_dir={d}", f"--agent={ckpt}", "--num_frames=20",
               "--episode_len=12", "--image_size=32", "--seed=5", "--num_workers=1")
    st = FrameStore(str(d))
    assert (st.policies == 2).all() and len(st.episodes) >= 2 and (st.slips == 0).all()
    for (a, b), name in zip(st.episodes, st.meta["episode_names"]):
        seed = int(name.removeprefix("seed"))
        env = make_env(seed, 12, 32)
        obs, demo = env.reset(), Demonstrator(env, 0.0, seed, view=True)
        for t in range(a, b - 1):
            assert np.array_equal(obs, st.frames[t]) and demo(obs) == st.labels[t, 0]
            obs = env.step(int(st.actions[t, 0]))[0]
        assert st.labels[b - 1, 0] == -1
    assert (st.labels[:, 0] != st.actions[:, 0]).any()  # the agent is not the demonstrator
    mix = tmp_path / "mix"
    run_script("data.py", "--source=stores", f"--src={agent_run[1]},{d}", f"--data_dir={mix}",
               "--image_size=32")
    m = FrameStore(str(mix))
    assert np.array_equal(m.labels[-len(st):], st.labels) and (m.labels[:-len(st)] == -1).all()
    assert set(m.policies.tolist()) >= {1, 2}
    run_script(*agent_run[2], f"--data_dir={mix}", f"--out_dir={tmp_path / 'bc'}", "--max_iters=2")
    with pytest.raises(SystemExit, match="plays 32x32 frames, not --image_size=64"):
        run_script("data.py", f"--data_dir={tmp_path / 'x'}", f"--agent={ckpt}", "--image_size=64")


def test_d4_labels_the_agents_own_states(agent_run, capsys):
    """tools/diagnose.py --agree: the agent plays, the demonstrator labels each state it
    reaches; agreement in [0, 1] over the agent's steps (two episodes of <= 15 steps: all in steps
    1-50)."""
    run_script("tools/diagnose.py", f"--agree={agent_run[0] / 'agent_bc/ckpt.pt'}",
               "--eval_episodes=2", "--max_steps=15", "--eval_seed=5", "--threads=2")
    out = capsys.readouterr().out
    phases = r"  (all steps|steps 1-50|steps 51\+): agreement .* \(argmax [0-9.]+, (\d+) steps\)"
    steps = dict(re.findall(phases, out))
    agree = [float(x) for x in re.findall(r"label ([0-9.]+) \(argmax", out)]
    assert (2 <= int(steps["all steps"]) == int(steps["steps 1-50"]) <= 30
            and "steps 51+" not in steps), out
    assert len(agree) == 2 and all(0.0 <= x <= 1.0 for x in agree), out
    assert "'do' of the demonstrator, its own episodes faces:" in out


def test_d5_clones_from_latents(agent_run, capsys):
    """tools/diagnose.py --latent_clone: an MLP on the tokenizer's latents (2 frames) and the last
    action learns the store's demonstrator, plays two real episodes; held-out accuracy is a
    percentage."""
    run_script("tools/diagnose.py", f"--latent_clone={agent_run[0] / 'agent_bc/ckpt.pt'}",
               "--clone_frames=2", "--steps=30", "--eval_episodes=2", "--max_steps=15",
               "--eval_seed=5", "--threads=2")
    out = capsys.readouterr().out
    row = re.search(r"\| latent clone, 2 frame\(s\) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| "
                    r"[0-9.]+ \| ([0-9]+) \|", out)
    assert row, out
    acc, copy, score, length = (float(x) for x in row.groups())
    assert 0 <= acc <= 100 and 0 <= copy <= 100 and 0 <= score <= 100 and 1 <= length <= 15


def test_d6_dreams_from_the_agents_own_states(agent_run, capsys):
    """tools/diagnose.py --dream: the real return after each start is the agent's own episode's
    (replayed here: the same seed plays the same episode), and both dreams give a finite return and
    PSNR at every step."""
    from agent import load_policy
    from game import run_episode
    ckpt = str(agent_run[0] / "agent_bc/ckpt.pt")
    res = run_script("tools/diagnose.py", f"--dream={ckpt}", "--eval_episodes=2",
                     "--max_steps=15", "--eval_seed=5", "--horizon=3", "--every=3",
                     "--threads=2")["result"]
    assert "| 2 | " in capsys.readouterr().out and len(res["starts"]) >= 2
    assert res["dream"].shape == res["open"].shape == res["psnr"].shape == (len(res["starts"]), 3)
    assert np.isfinite(res["dream"]).all() and np.isfinite(res["psnr"]).all()
    policy = load_policy(ckpt)
    for seed in (5, 6):
        e = run_episode(seed, "agent", 0.0, 15, size=32, agent=policy)
        starts, T = [s for sd, s in res["starts"] if sd == seed], len(e["actions"]) - 1
        # 8 frames of context first; 3 real steps after (or a death)
        assert starts == [s for s in range(7, T, 3) if s + 3 <= T or e["died"]] and starts
        for s, r in zip(starts, res["real"][[sd == seed for sd, _ in res["starts"]]]):
            assert r.tolist() == pytest.approx(e["rewards"][s:s + 3].tolist())


def test_lockstep_evaluation_equals_one_at_a_time():
    """A batched policy in lockstep plays the same episodes as one episode at a time (fixed action
    sequences)."""
    from game import evaluate, evaluate_lockstep
    # moves, then noop (an ended episode's actions drop)
    seq = lambda t: [5, 1, 2, 3, 4][t % 5] if t < 40 else 0

    class Fixed:
        def reset(self):
            self.t = 0

        def act(self, frames):
            self.t += 1
            return np.full((len(frames), 1), seq(self.t - 1))

    def one_at_a_time(env):
        p = Fixed()
        p.reset()
        return lambda frame: int(p.act(frame[None])[0, 0])
    one = evaluate(one_at_a_time, [3, 4, 9], 60)
    both = evaluate_lockstep(Fixed(), [3, 4, 9], 60)
    assert (one["returns"] == both["returns"] and one["unlocks"] == both["unlocks"]
            and one["lengths"] == both["lengths"])
    steps = []
    chunked = evaluate_lockstep(Fixed(), [3, 4, 9], 60, on_step=lambda *a: steps.append(a),
                                chunk=2)  # 2, then 1
    assert chunked["returns"] == one["returns"] and chunked["seeds"] == [3, 4, 9]
    assert (steps[0] == (1, 3) and steps[59] == (60, 1) and steps[60] == (61, 1)
            and steps[-1] == (120, 0))
    assert (one["mean_length"] == both["mean_length"] == 60
            and one["success_rates"] == both["success_rates"])


def test_bad_agent_inputs(agent_run, tmp_path):
    tmp, store, ft, im, _ = agent_run
    ft_base = [x for x in ft if not x.startswith("--init_ckpt")]
    im_base = [x for x in im if not x.startswith("--init_ckpt")]
    out = f"--out_dir={tmp_path / 'x'}"
    assert "is not an agent checkpoint" in fails(*im_base,
                                                 f"--init_ckpt={tmp / 'dynamics/ckpt.pt'}", out)
    assert "is not a dynamics checkpoint" in fails(*ft_base,
                                                   f"--init_ckpt={tmp / 'agent_bc/ckpt.pt'}", out)
    assert "is not a dynamics checkpoint" in fails(*ft_base,
                                                   f"--init_ckpt={tmp / 'tokenizer/ckpt.pt'}", out)
    assert "does not exist" in fails(*ft_base, f"--init_ckpt={tmp_path / 'none.pt'}", out)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")  # not a torch file; and one cut short
    (tmp_path / "cut.pt").write_bytes(open(tmp / "agent_bc/ckpt.pt", "rb").read()[:5000])
    for bad in ("junk.pt", "cut.pt"):
        assert "is not a readable checkpoint" in fails(*im_base, f"--init_ckpt={tmp_path / bad}",
                                                       out)
        assert "is not a readable checkpoint" in fails("eval_agent.py",
                                                       f"--bc_ckpt={tmp_path / bad}", "--rl_ckpt=")
    torch.save([1, 2], tmp_path / "list.pt")
    assert "is not a nanodreamer checkpoint (it holds a list)" in fails(
        *ft_base, f"--init_ckpt={tmp_path / 'list.pt'}", out)
    old = torch.load(tmp / "dynamics/ckpt.pt", weights_only=False)
    del old["format"]  # made before RoPE rotated halves: the same weights would make another model
    torch.save(old, tmp_path / "old.pt")
    assert "checkpoint format 1, this one reads 2" in fails(
        *ft_base, f"--init_ckpt={tmp_path / 'old.pt'}", out)
    assert "phase='play'" in fails(*ft, "--phase=play", out)
    old = torch.load(tmp / "agent_bc/ckpt.pt", weights_only=False)
    del old["window"]  # made before the event, continuation and value heads
    torch.save(old, tmp_path / "old_agent.pt")
    predates = fails(*im_base, f"--init_ckpt={tmp_path / 'old_agent.pt'}", out)
    assert "predates the event, continuation and value heads" in predates
    assert "predates" in fails("eval_agent.py", f"--bc_ckpt={tmp_path / 'old_agent.pt'}",
                               "--rl_ckpt=")
    # a store whose action spec differs, one without rewards, one without labels
    import shutil
    for name, edit, msg in (("spec", "meta", "but the dynamics model was trained on"),
                            ("norew", "rewards", "has no rewards"),
                            ("nolab", "actions", "has no labeled episodes"),
                            ("old", "fields", "predates slips/events/deaths (the agent's targets); "
                                              "rebuild it")):
        d = str(tmp_path / name)
        shutil.copytree(store, d)
        if edit == "fields":  # a store made before the agent's fields
            for f in ("slips", "events", "deaths"):
                os.remove(f"{d}/{f}.npy")
        elif edit == "meta":
            meta = json.load(open(f"{d}/meta.json"))
            meta["action_spec"][0]["classes"] = 5
            json.dump(meta, open(f"{d}/meta.json", "w"))
        else:
            arr = np.load(f"{d}/{edit}.npy")
            np.save(f"{d}/{edit}.npy", np.zeros_like(arr) - (edit == "actions"))
        assert msg in fails(*ft, f"--data_dir={d}", out), name
    assert "no demonstrator episodes" in fails(*ft, f"--data_dir={tmp_path / 'nolab'}",
                                               "--bc_data=demo", out)
    assert not os.path.exists(tmp_path / "x" / "ckpt.pt")
    # the real game: a checkpoint that is not an agent one, or missing
    assert "is not an agent checkpoint" in fails(
        "eval_agent.py", f"--bc_ckpt={tmp / 'dynamics/ckpt.pt'}", "--rl_ckpt=")
    assert "does not exist" in fails("eval_agent.py", f"--rl_ckpt={tmp_path / 'none.pt'}",
                                     "--bc_ckpt=")
    assert "name a .json file" in fails("eval_agent.py", f"--bc_ckpt={tmp / 'agent_bc/ckpt.pt'}",
                                        "--rl_ckpt=", f"--out={tmp_path / 'table'}")
    assert "dtype='float16'" in fails("eval_agent.py", "--dtype=float16")
    ckpt = torch.load(tmp / "agent_bc/ckpt.pt", weights_only=False)
    ckpt["action_spec"] = [{"name": "action", "classes": 5}]  # an agent of another game
    torch.save(ckpt, tmp_path / "other.pt")
    assert "not Crafter's one 17-way action" in fails(
        "eval_agent.py", f"--bc_ckpt={tmp_path / 'other.pt'}", "--rl_ckpt=")
