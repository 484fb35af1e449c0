"""results.md of a main-job folder (pipeline.sh writes it last): every stage's figures in one page.

    python tools/results.py --out_dir=out/cpu
    # the label-efficiency table:
    python tools/results.py --label_runs=out/labels/f1.0,out/labels/f0.1,out/labels/f0.0

Reads tokenizer/, dynamics/, agent_bc/, agent_rl/ (their metrics.jsonl), eval.md and times.tsv under
out_dir; names the device (its CPU or GPU model) and the commit (-dirty: with local changes). A
missing piece is one clear line.
label_runs: dynamics runs of one config and store at several action_label_frac (§E), scored on the
same held-out windows -> {study}.md (and {study}.png, with matplotlib installed): each run's share
of the full-label gain, and what the unlabeled video adds to a run's labeled episodes alone
(unlabeled_video=False) at the same fraction.
"""
import json
import os
import platform
import subprocess
import sys

import numpy as np
import torch

# the repo's modules (this script is in tools/)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402

# ------------------------------------------------------------------------------------------- config
out_dir = "out/cpu"
label_runs = ""  # comma-separated dynamics out_dirs: write the label-efficiency study instead of
                 # results.md
study = "docs/label_efficiency"  # where it goes: {study}.md and {study}.png
# --------------------------------------------------------------------------------------------------
config = common.configure(globals())


def last(stage, key):
    """The last value of `key` in out_dir/stage/metrics.jsonl, with the line it came from."""
    row = rows_of(os.path.join(out_dir, stage, "metrics.jsonl"), key)[-1]
    return row[key], row


def rows_of(path, key):
    """The lines of a metrics.jsonl that have `key`."""
    if not os.path.exists(path):
        raise common.ConfigError(f"{path} is missing: run that stage first (bash pipeline.sh)")
    rows = []
    for line in open(path):
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a killed run
            pass
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        raise common.ConfigError(f"{path} has no '{key}': the stage has not finished an eval")
    return rows


def git_commit():
    """The code's commit (git describe; -dirty with local changes), or 'unknown' outside a git
    checkout."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware():
    if torch.cuda.is_available():
        return f"CUDA GPU: {torch.cuda.get_device_name()}"
    model = common.cpu_info().get("model name") or platform.processor()  # (Linux names it there)
    return f"CPU: {model}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}"


def cluster_ratio(num, den, n):
    """sum(n * num) / sum(n * den) over episodes, from per-episode means num, den (E,) and windows
    per episode n (E,): a mean over all windows (den = 1) or §E's share of the full-label gain
    (num = X_f - X_0, den = X_1 - X_0); its standard error with episodes as clusters (their windows
    overlap; the ratio's delta method). nan: no gain (no error bar from one episode)."""
    num, den, n = (np.broadcast_to(np.asarray(v, float), np.shape(n)) for v in (num, den, n))
    g = (n * den).sum()
    if abs(g) < 1e-9:
        return float("nan"), float("nan")
    r = (n * num).sum() / g
    if len(n) < 2:
        return r, float("nan")
    return r, np.sqrt(len(n) / (len(n) - 1) * ((n * (num - r * den)) ** 2).sum()) / abs(g)


def label_study():
    runs = []
    for run in label_runs.split(","):
        ckpt = common.load_checkpoint(os.path.join(run, "ckpt.pt"), "dynamics checkpoint")
        if "labeled_episodes" not in ckpt:
            raise common.ConfigError(f"{run}/ckpt.pt is not a dynamics checkpoint "
                                     "(made by train_dynamics.py)")
        rows = rows_of(os.path.join(run, "metrics.jsonl"), "rollout_psnr")
        m = rows[-1]
        if "eval_episode_windows" not in m:
            raise common.ConfigError(f"{run}: its last eval has no per-episode figures; evaluate "
                                     f"it again: python train_dynamics.py ... --out_dir={run} "
                                     f"--init_from=resume --eval_only=True")
        c = ckpt["config"]
        runs.append(dict(name=os.path.basename(run.rstrip("/")), frac=c["action_label_frac"], m=m,
                         c=c, labeled_batch_frac=ckpt["labeled_batch_frac"],
                         minutes=max((r["minutes"] for r in rows if r.get("loss") is not None),
                                     default=0.0),
                         same=(ckpt["data_dir"], ckpt["tokenizer"]["path"], ckpt["iter"],
                               m["eval_windows"], m["eval_episodes"])))
    if any(r["same"] != runs[0]["same"] for r in runs):
        raise common.ConfigError("label_runs must share their store, tokenizer, steps and eval "
                                 "windows")
    # all labels or none: labeled_batch_frac draws uniformly
    ends = {f: next((r for r in runs if r["frac"] == f and r["c"].get("unlabeled_video", True)),
                    None) for f in (0.0, 1.0)}
    if None in ends.values():
        raise common.ConfigError("label_runs needs a run at action_label_frac=1.0 and one at 0.0 "
                                 "(the gain's ends)")
    m0, m1 = ends[0.0]["m"], ends[1.0]["m"]
    if np.allclose(m1["rollout_psnr_episodes"], m0["rollout_psnr_episodes"]):
        print(f"warning: {ends[1.0]['name']} and {ends[0.0]['name']} tie in rollout PSNR: no gain "
              "to take a share of")
    if len(m0["eval_episodes"]) < 2:
        print("warning: the eval windows come from one episode: no error bars (more eval_windows "
              "give more episodes)")
    lines = [f"# Label efficiency (§E): {len(runs)} dynamics runs, "
             f"{runs[0]['same'][2]} steps each", "",
             f"{hardware()}; commit {git_commit()}. Every run is scored on the same "
             f"{m0['eval_windows']} held-out windows ({len(m0['eval_episodes'])} episodes) with "
             "the true actions; ± is a standard error with those episodes as clusters (their "
             "windows overlap), paired: every run sees the same windows. Share of the gain: "
             "(X_f - X_0) / (X_1 - X_0), as the paper reports it.", "",
             "| run | labeled | batch from labeled | unlabeled video | rollout PSNR | vs floor "
             "| SSIM | shuffle ratio | share of PSNR gain | share of SSIM gain | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ep = lambda m, k: np.array(m[f"rollout_{k}_episodes"])  # (E,) per-episode means
    for r in sorted(runs, key=lambda r: -r["frac"]):
        m, c, n = r["m"], r["c"], r["m"]["eval_episode_windows"]
        gain = cluster_ratio(ep(m, "psnr") - np.array(m["floor_psnr_episodes"]), 1, n)
        r["share"] = {k: cluster_ratio(ep(m, k) - ep(m0, k), ep(m1, k) - ep(m0, k), n)
                      for k in ("psnr", "ssim")}
        s_psnr, s_ssim = r["share"]["psnr"], r["share"]["ssim"]
        lines.append(f"| {r['name']} | {r['frac']:.0%} | {r['labeled_batch_frac']:.0%} | "
                     f"{'yes' if c.get('unlabeled_video', True) else 'no'} | "
                     f"{m['rollout_psnr']:.2f} | {gain[0]:+.2f} ± {gain[1]:.2f} | "
                     f"{m['rollout_ssim']:.4f} | {m['shuffle_ratio']:.2f} | "
                     f"{s_psnr[0]:.0%} ± {s_psnr[1]:.0%} | {s_ssim[0]:.0%} ± {s_ssim[1]:.0%} | "
                     f"{r['minutes']:.1f} |")
    lines += ["", "Rollout PSNR per generated frame (dB):", "", "| run | " + " | ".join(
        f"t+{i + 1}" for i in range(len(m0["rollout_psnr_steps"]))) + " |",
              "|---|" + "---|" * len(m0["rollout_psnr_steps"])]
    lines += [f"| {r['name']} | " + " | ".join(f"{p:.2f}" for p in r["m"]["rollout_psnr_steps"])
              + " |" for r in runs]
    pairs = [(v, a) for a in runs if not a["c"].get("unlabeled_video", True)  # labeled alone ...
             for v in runs if v["frac"] == a["frac"]
                              and v["c"].get("unlabeled_video", True)]  # ... and with video
    if pairs:
        lines += ["", "Does the unlabeled video help? The same labeled episodes with the others as "
                  "video, minus those labeled episodes alone (paired over the same windows, ± "
                  "over episodes):", "", "| runs | rollout PSNR (dB) | SSIM |", "|---|---|---|"]
        n = m0["eval_episode_windows"]
        for v, a in pairs:
            d = {k: cluster_ratio(ep(v["m"], k) - ep(a["m"], k), 1, n) for k in ("psnr", "ssim")}
            lines.append(f"| {v['name']} - {a['name']} | {d['psnr'][0]:+.2f} ± {d['psnr'][1]:.2f} "
                         f"| {d['ssim'][0]:+.4f} ± {d['ssim'][1]:.4f} |")
    os.makedirs(os.path.dirname(study) or ".", exist_ok=True)
    common.atomic_write(study + ".md", lambda f: f.write("\n".join(lines) + "\n"))
    print(f"wrote {study}.md")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"no plot: pip install matplotlib==3.11.2 for {study}.png")
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    video = [r for r in runs if r["c"].get("unlabeled_video", True) and 0 < r["frac"] < 1]
    # a line per batch share; all end at 1
    for share in sorted({r["labeled_batch_frac"] for r in video}):
        line = sorted((r for r in video if r["labeled_batch_frac"] == share),
                      key=lambda r: r["frac"])
        for key, style in (("psnr", "-o"), ("ssim", "--s")):
            s = [r["share"][key] for r in line] + [(1.0, 0.0)]
            ax.errorbar([r["frac"] for r in line] + [1.0], [v[0] for v in s], [v[1] for v in s],
                        fmt=style, capsize=3, label=f"{key.upper()}, labeled_batch_frac {share:g}")
    ax.set(xscale="log", xlabel="share of episodes labeled", ylabel="share of the full-label gain",
           title=f"Label efficiency, {runs[0]['same'][2]} steps")
    ax.axhline(0, color="gray", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(study + ".png.tmp", format="png", dpi=120)
    os.replace(study + ".png.tmp", study + ".png")
    print(f"wrote {study}.png")


def main():
    psnr, tok = last("tokenizer", "val_psnr")
    rollout, dyn = last("dynamics", "rollout_psnr")
    bc_acc, bc = last("agent_bc", "val_bc_acc")
    imagined, _ = last("agent_rl", "imagined_return")
    eval_path = os.path.join(out_dir, "eval.md")  # the table eval_agent.py writes beside eval.json
    if not os.path.exists(eval_path):
        raise common.ConfigError(f"{eval_path} is missing: run the eval stage first "
                                 "(bash pipeline.sh)")
    times = {}
    if os.path.exists(os.path.join(out_dir, "times.tsv")):
        for line in open(os.path.join(out_dir, "times.tsv")):
            name, sec = line.split()
            times[name] = times.get(name, 0) + int(sec)

    lines = [f"# nanodreamer results: {out_dir}", "",
             f"{hardware()}; commit {git_commit()}.", "",
             "## World model and agent", "",
             "| figure | value |", "|---|---|",
             f"| tokenizer val PSNR | {psnr:.2f} dB (iter {tok['iter']}) |",
             f"| tokenizer val SSIM | {tok['val_ssim']:.4f} |",
             f"| rollout PSNR (K={dyn.get('sampling_steps')}, {dyn.get('eval_frames')} frames, "
             f"{dyn['eval_windows']} held-out windows) | {rollout:.2f} dB (iter {dyn['iter']}) |",
             f"| floor (repeat the last context frame) | {dyn['floor_psnr']:.2f} dB |",
             f"| ceiling (tokenizer reconstruction) | {dyn['ceiling_psnr']:.2f} dB |",
             *([f"| rollout SSIM (floor) | {dyn['rollout_ssim']:.4f} ({dyn['floor_ssim']:.4f}) |"]
               if "rollout_ssim" in dyn else []),
             f"| shuffle ratio (true actions vs shuffled: above 1 means actions are used) | "
             f"{dyn['shuffle_ratio']:.3f} |",
             *([f"| rollout PSNR after the agent's finetuning (floor) | "
                f"{bc['val_rollout_psnr']:.2f} dB ({bc['val_floor_psnr']:.2f}) |"]
               if "val_rollout_psnr" in bc else []),
             f"| BC accuracy on held-out episodes (copy-the-last-action baseline) | {bc_acc:.3f} "
             f"({bc['val_copy_acc']:.3f}) |",
             *[f"| {what}: precision / recall ({bc[k + '_events']} held-out events) | "
               f"{bc[k + '_precision']:.2f} / {bc[k + '_recall']:.2f} |"
               for k, what in PR_ROWS if k + "_events" in bc],
             f"| imagined return (last imagination step) | {imagined:.3f} |", "",
             "## Real Crafter", ""]
    lines += open(eval_path).read().splitlines()
    lines += ["", "## Wall time", "", "| stage | minutes |", "|---|---|"]
    lines += [f"| {name} | {sec / 60:.1f} |" for name, sec in times.items()]
    lines += [f"| total | {sum(times.values()) / 60:.1f} |", "",
              "Beside this file: curves.png (training curves), tokenizer/recon.png "
              "(reconstructions), rollout.mp4 and rollout.gif (real | generated), "
              "agent_episode.mp4 (the RL agent in the real game), eval.json "
              "(every achievement).", ""]
    path = os.path.join(out_dir, "results.md")
    common.atomic_write(path, lambda f: f.write("\n".join(lines)))
    print(f"wrote {path}")
    curves(os.path.join(out_dir, "curves.png"))


CURVES = [("tokenizer", "training MSE", ["mse"]), ("tokenizer", "val PSNR (dB)", ["val_psnr"]),
          ("dynamics", "flow loss (unnormalized)", ["flow"]),
          ("dynamics", "rollout PSNR: model, floor, ceiling",
           ["rollout_psnr", "floor_psnr", "ceiling_psnr"]),
          ("agent_bc", "BC loss", ["bc"]),
          ("agent_bc", "held-out BC accuracy, copying", ["val_bc_acc", "val_copy_acc"]),
          ("agent_rl", "imagined return", ["imagined_return"]),
          ("agent_rl", "KL to the prior", ["kl_prior"])]
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44)]


def curves(path, w=300, h=180):
    """The training curves of every stage (CURVES, from the metrics.jsonl files) as one PNG: a panel
    per figure, x the iteration, y from its min to its max, drawn with Pillow (imageio's own
    dependency)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (4 * w, 2 * h), "white")
    draw = ImageDraw.Draw(img)
    for i, (stage, title, keys) in enumerate(CURVES):
        x0, y0 = (i % 4) * w, (i // 4) * h
        rows = [json.loads(ln) for ln in open(os.path.join(out_dir, stage, "metrics.jsonl"))
                if ln.strip()]
        series = [[(r["iter"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
                  for k in keys]
        values = [v for line in series for _, v in line]
        draw.text((x0 + 8, y0 + 4), f"{stage}: {title}", fill="black")
        if not values:
            continue
        lo, hi, right = min(values), max(values), max(it for line in series for it, _ in line) or 1
        box = (x0 + 45, y0 + 20, x0 + w - 10, y0 + h - 20)  # the plot area
        draw.rectangle(box, outline="gray")
        draw.text((x0 + 2, box[1]), f"{hi:.3g}", fill="gray")
        draw.text((x0 + 2, box[3] - 10), f"{lo:.3g}", fill="gray")
        draw.text((box[2] - 40, box[3] + 4), f"{right}", fill="gray")
        for line, color in zip(series, COLORS):
            pts = [(box[0] + (box[2] - box[0]) * it / right,
                    box[3] - (box[3] - box[1]) * ((v - lo) / (hi - lo) if hi > lo else 0.5))
                   for it, v in line]
            draw.line(pts, fill=color, width=2) if len(pts) > 1 else draw.ellipse(
                [(pts[0][0] - 2, pts[0][1] - 2), (pts[0][0] + 2, pts[0][1] + 2)], fill=color)
    common.atomic_write(path, lambda f: img.save(f, format="PNG"), binary=True)
    print(f"wrote {path}")


PR_ROWS = [("reward", "imagined reward's unlocks (reward > 0.5)"),
           ("event", "event head, real frames"),
           ("dream", "event head, frames dreamed from the data's actions"),
           ("death", "continuation head, deaths")]
label_study() if label_runs else main()
