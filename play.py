"""Play inside the world model: a pygame window shows the dynamics model's frames live, and your
keys are the actions. No game engine runs: every frame is denoised by the dynamics model and decoded
by the tokenizer.

    pip install pygame==2.6.1
    python play.py                                   # the shipped agent (pretrained/)
    python play.py --ckpt=out/cpu/dynamics/ckpt.pt   # a dynamics checkpoint
    # or an agent one:
    python play.py --ckpt=out/cpu/agent_rl/ckpt.pt --start=crafter --record=play.mp4

Keys (Crafter's own GUI keymap): w a s d move, space do, tab sleep, r t f p place stone / table /
furnace / plant, 1 2 3 make a wood / stone / iron pickaxe, 4 5 6 a wood / stone / iron sword; no
key: noop.
Enter: a new context. '.': pause. m: autopilot (the policy acts; agent checkpoints). Esc: quit.
On screen: frames/s, step, action, and with an agent checkpoint the predicted reward and value.
start: 'data' begins from a held-out window of the data (the model's own domain), 'crafter' from a
real Crafter reset encoded by the tokenizer (a single frame of context); 'auto': the data where it
is on this machine, else Crafter.
"""
import os
import time

import numpy as np
import torch

import common
from agent import build, check_agent, reward, sample_actions, twohot_mean
from dynamics import append_frames, check_K, load_dynamics, next_frame, prev_actions, write_video
from model import KVCache
from store import FrameStore
from tokenizer import load_tokenizer, tokenizer_path

# ------------------------------------------------------------------------------------------- config
ckpt = "pretrained/agent.pt"  # a dynamics or agent checkpoint (autopilot, predicted reward, value)
start = "auto"  # 'data': a held-out window of the data | 'crafter': a real Crafter reset (the next
                # seed per Enter) | 'auto': the data where it is here, else Crafter
data_dir = ""  # start='data': default, the data the model was trained on
tokenizer_ckpt = ""  # default: the one the model was trained with, or one beside it (a copied run
                     # folder)
context_frames = 8  # start='data': real frames before play begins
sampling_steps = 4  # denoising steps per frame (§D.2)
fps = 10  # the frame rate to hold (0: as fast as it runs)
scale = 8  # screen pixels per frame pixel
record = ""  # an mp4 (or .gif) of what was played
keymap = ""  # 'key:action,...' with pygame key names and the action spec's value names;
             # '' = Crafter's keymap
max_steps = 0  # quit after this many frames (0: at Esc)
seed = 0
device = "auto"
dtype = "float32"  # at batch 1 fp32 is the faster on the Xeons measured (AMX or not); 'bfloat16'
                   # on an AMD EPYC with AVX-512 BF16 (docs, Speed); 'auto': as the trainers pick
compile = True  # the dynamics model's per-frame passes compiled (fixed shapes: ~30 s at start, then
                # more frames/s on a CPU; docs, Speed)
threads = 0
# --------------------------------------------------------------------------------------------------
CRAFTER_KEYMAP = ("a:move_left,d:move_right,w:move_up,s:move_down,space:do,tab:sleep,r:place_stone,"
                  "t:place_table,f:place_furnace,p:place_plant,1:make_wood_pickaxe,"
                  "2:make_stone_pickaxe,3:make_iron_pickaxe,4:make_wood_sword,5:make_stone_sword,"
                  "6:make_iron_sword")
CONTROLS = ("return", ".", "m", "escape")


def action_names(spec):
    """One list of value names per action component ('name=class' where the spec names none)."""
    return [comp.get("values") or [f"{comp.get('name', c)}={v}" for v in range(comp["classes"])]
            for c, comp in enumerate(spec)]


def parse_keymap(text, spec):
    """'key:action,...' -> {key: (component, value)} in the text's order; an action is a value name
    of a component of the action spec (as action_names gives them). Else ConfigError."""
    names = {n: (c, v) for c, values in enumerate(action_names(spec)) for v, n in enumerate(values)}
    out = {}
    for entry in text.split(","):
        key, _, action = entry.strip().partition(":")
        if action in names:
            out[key] = names[action]
        else:
            raise common.ConfigError(f"keymap entry {entry!r}: use key:action with an action "
                                     f"of the spec ({', '.join(names)})")
        if key in CONTROLS or not key:
            raise common.ConfigError(f"keymap entry {entry!r}: the key must be a pygame key name, "
                                     f"not one of the controls {CONTROLS}")
    return out


def keys_to_action(tapped, held, keys, spec):
    """The action of one frame, as Crafter's GUI chooses it: the last key pressed since the last
    frame, else the held keys in keymap order, each setting a component not yet set; unset
    components are class 0 (noop). tapped, held: pygame key names; keys: parse_keymap's dict.
    -> int64 (C,)."""
    action, done = np.zeros(len(spec), np.int64), set()
    pressed = [k for k in reversed(tapped) if k in keys][:1] or [k for k in keys if k in held]
    for k in pressed:
        c, v = keys[k]
        if c not in done:
            action[c], done = v, done | {c}
    return action


class Dream:
    """The world model as a game. reset(frames, actions) starts from real frames, step(action)
    dreams the next one (K denoising steps from the KV-cached past, then the frame joins the past),
    and decodes it to self.frame. As in imagination (agent.imagine), the world model reads the last
    world_window frames (None: the transformer's time_window), an agent its own window."""

    def __init__(self, tok, dyn, agent, K, ctx, device, seed=0, world_window=None):
        self.tok, self.dyn, self.agent, self.K, self.ctx, self.device = (
            tok, dyn, agent, K, ctx, device)
        self.world_window = world_window
        self.gen = torch.Generator(device).manual_seed(seed)
        self.actions, self.resets = [], 0  # every action played, and the number of contexts started

    @torch.no_grad()
    def reset(self, frames, actions):
        """frames uint8 (C, H, W, 3), actions (C, ncomp) as in the data (action t led from frame t;
        -1 unknown): the last frame is shown, and the next one follows the first action played."""
        self.cache, self.past, self.dec_cache = KVCache(self.world_window), KVCache(), KVCache()
        self.resets += 1
        self.memory = (None if self.agent is None
                       else torch.zeros(1, 1, self.agent.num_events, device=self.device))
        a = torch.as_tensor(np.asarray(actions, np.int64),
                            device=self.device)[None]  # (1, C, ncomp)
        with self.ctx:
            z = self.tok.encode(torch.as_tensor(np.asarray(frames),
                                                device=self.device)[None]).float()  # (1, C, L, Dz)
            self._show(z, prev_actions(a))

    @torch.no_grad()
    def step(self, action):
        """action (ncomp,) ints -> the next frame, uint8 (H, W, 3) (also in self.frame)."""
        a = torch.as_tensor(np.asarray(action, np.int64),
                            device=self.device).view(1, 1, -1)  # (1, 1, ncomp)
        noise = torch.randn(1, 1, *self.dyn.latent_shape, generator=self.gen, device=self.device)
        with self.ctx:
            z = next_frame(self.dyn, self.cache, a, self.K, noise)
            self._show(z, a)
        self.actions.append(np.asarray(action).tolist())
        return self.frame

    def _show(self, z, a_in):
        """Frames z (1, T, L, Dz) join the past after actions a_in (1, T, ncomp); the last is
        decoded and, with an agent, its predicted reward (of the transition into it), value and
        policy logits are kept, and its episode memory takes the events it sees."""
        eps = torch.randn(z.shape, generator=self.gen, device=self.device)
        append_frames(self.dyn, z, a_in, self.cache, eps)
        x = self.tok.decode(z, cache=self.dec_cache)[0, -1].float().clamp(0, 1)
        self.frame = (x * 255).round().to(torch.uint8).cpu().numpy()
        if self.agent is not None:
            slots = self.agent.slots(1, z.shape[1], 0, self.memory.expand(1, z.shape[1], -1))
            h = append_frames(self.dyn, z, a_in, self.past, eps, slots)[:, -1:]  # (1, 1, n, D)
            self.reward = reward(self.agent, h, self.memory).item()
            self.memory = torch.maximum(self.memory, (self.agent.events(h) > 0.5).float())
            h = h[:, 0]
            self.value = twohot_mean(self.agent.value_logits(h), self.agent.bins).item()
            self.logits = self.agent.policy_logits(h, offset=0)

    def policy_action(self):
        """The agent's action for the current frame, sampled from its policy head (autopilot)."""
        return sample_actions(self.logits, 1.0, self.gen)[0].cpu().numpy()


def load(path, device, tokenizer_ckpt=""):
    """(tokenizer, dynamics model, agent or None, checkpoint) from a dynamics or an agent
    checkpoint, the dynamics model streaming with a sliding window of the clip length it was trained
    on; its tokenizer: tokenizer_path."""
    ck = common.load_checkpoint(path, "ckpt")
    if isinstance(ck, dict) and "agent_args" in ck:
        ck = check_agent(ck, path)
        models = build(ck).to(device).eval().requires_grad_(False)
        dyn, agent = models["dynamics"], models["agent"]
        dyn.transformer.time_window = ck["window"]  # the window its agent learned on
    else:
        dyn, ck = load_dynamics(path, device)
        agent = None
    dyn.transformer.time_window = dyn.transformer.time_window or dyn.transformer.max_frames
    tok, _ = load_tokenizer(tokenizer_path(ck, path, tokenizer_ckpt), device)
    return tok, dyn.requires_grad_(False), agent, ck


def compile_step(dyn, device):
    """dyn compiled for the per-frame passes, which have fixed shapes. On a CPU the compiled code's
    wrapper is C++ too: at batch 1 the Python that calls each kernel is a tenth of a frame (docs,
    Speed)."""
    return torch.compile(dyn, dynamic=False,
                         options={"cpp_wrapper": torch.device(device).type == "cpu"})


def need_pygame():
    """The pygame module (an optional extra, for play.py only), or one line on how to install it."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        raise common.ConfigError("play.py needs pygame (an optional extra): "
                                 "pip install pygame==2.6.1")
    return pygame


def run(dream, new_context, keys, spec, fps=10, scale=8, max_steps=0, on_tick=None):
    """The play loop: pygame events -> action -> dream.step -> the screen. on_tick(step) runs before
    each frame's events are read (tests post events there). Returns (the frames shown, uint8
    (N, H, W, 3); mean frames/s after the first frame, whose passes compile)."""
    pygame = need_pygame()
    pygame.display.init(), pygame.font.init()  # not pygame.init(): no sound
    H, W = dream.frame.shape[:2]
    try:
        screen = pygame.display.set_mode((W * scale, H * scale + 24))
    except pygame.error as e:
        raise common.ConfigError(f"no display for the window ({e}); "
                                 "SDL_VIDEODRIVER=dummy runs it headless")
    pygame.display.set_caption("nanodreamer: playing inside the world model")
    font, clock = pygame.font.Font(None, 22), pygame.time.Clock()
    names = action_names(spec)
    frames, held, step, paused, auto, label = [dream.frame], [], 0, False, False, "start"
    t0 = time.time()
    while not max_steps or step < max_steps:
        if on_tick:
            on_tick(step)
        tapped, quit_ = [], False
        for ev in pygame.event.get():
            name = pygame.key.name(ev.key) if ev.type in (pygame.KEYDOWN, pygame.KEYUP) else None
            if ev.type == pygame.QUIT or (ev.type == pygame.KEYDOWN and name == "escape"):
                quit_ = True
            elif ev.type == pygame.KEYDOWN and name == "return":
                dream.reset(*new_context())
                frames.append(dream.frame)
            elif ev.type == pygame.KEYDOWN and name == ".":
                paused = not paused
            elif ev.type == pygame.KEYDOWN and name == "m" and dream.agent is not None:
                auto = not auto
            elif ev.type == pygame.KEYDOWN:
                tapped.append(name), held.append(name)
            elif ev.type == pygame.KEYUP:
                # posted events never reach key.get_pressed(): keep our own
                held = [k for k in held if k != name]
        if quit_:
            break
        if not paused:
            a = dream.policy_action() if auto else keys_to_action(tapped, held, keys, spec)
            frames.append(dream.step(a))
            step += 1
            if step == 1:  # the rate counts from here: the first frame's passes compile
                t0 = time.time()
            label = " ".join(names[c][v] for c, v in enumerate(a))
        surf = pygame.transform.scale(pygame.surfarray.make_surface(dream.frame.transpose(1, 0, 2)),
                                      (W * scale, H * scale))
        screen.fill((0, 0, 0))
        screen.blit(surf, (0, 0))
        text = f"{clock.get_fps():4.1f} fps  step {step}  {label}"
        if dream.agent is not None:
            text += (f"  r {dream.reward:+.2f}  v {dream.value:.2f}"
                     + ("  AUTOPILOT" if auto else ""))
        screen.blit(font.render(text + ("  PAUSED" if paused else ""), True, (255, 255, 255)),
                    (4, H * scale + 4))
        pygame.display.flip()
        clock.tick(fps)
    pygame.quit()
    return np.stack(frames), max(step - 1, 0) / max(time.time() - t0, 1e-9)


def contexts(start, store, image_size, C, seed):
    """new_context() -> (frames, actions) for each reset: the next held-out window of the data, or
    the next seed's real Crafter reset (one frame, no action)."""
    n = iter(range(seed, seed + 10 ** 9))
    if start == "crafter":
        from game import make_env
        return lambda: (make_env(next(n), 10, image_size).reset()[None], np.full((1, 1), -1))
    return lambda: (lambda w: (w["frames"][0], w["actions"][0]))(
        store.fixed_windows(1, C, "val", next(n)))


if __name__ == "__main__":
    config = common.configure(globals())
    device = common.auto_device(device)
    if threads:
        torch.set_num_threads(threads)
    if start not in ("data", "crafter", "auto"):
        raise common.ConfigError(f"start={start!r}: use 'data', 'crafter' or 'auto'")
    if context_frames < 1 or fps < 0 or scale < 1 or max_steps < 0:
        raise common.ConfigError("context_frames >= 1, fps >= 0, scale >= 1 and max_steps >= 0 "
                                 "are needed")
    if record and not record.endswith((".mp4", ".gif")):
        raise common.ConfigError(f"record={record!r}: an .mp4 or .gif path")
    need_pygame()  # before any long work
    tok, dyn, agent, ck = load(ckpt, device, tokenizer_ckpt)
    spec = ck["action_spec"]
    if start == "auto":
        start = "data" if os.path.isdir(data_dir or ck["data_dir"]) else "crafter"
    try:
        check_K(dyn, sampling_steps)
    except ValueError as e:
        raise common.ConfigError(f"sampling_steps={sampling_steps}: {e}")
    if context_frames >= dyn.transformer.max_frames:
        raise common.ConfigError(f"context_frames={context_frames}: fewer than the "
                                 f"{dyn.transformer.max_frames} frames the model was trained on")
    if start == "crafter" and [c["classes"] for c in spec] != [17]:
        raise common.ConfigError(f"start='crafter': this model acts in "
                                 f"{[c['classes'] for c in spec]} classes, not Crafter's 17")
    keys = parse_keymap(keymap or CRAFTER_KEYMAP, spec)
    store = FrameStore(data_dir or ck["data_dir"]) if start == "data" else None
    if compile:
        print("compiling the per-frame step (torch.compile: ~30 s on a CPU)", flush=True)
        dyn = compile_step(dyn, device)
    ctx = common.autocast_ctx(device, common.resolve_dtype(device, dtype))
    dream = Dream(tok, dyn, agent, sampling_steps, ctx, device, seed,
                  ck.get("dynamics_config", {}).get("seq_len"))  # an agent's world window
    new_context = contexts(start, store, tok.image_size, context_frames, seed)
    dream.reset(*new_context())
    names = action_names(spec)
    print("keys: " + ", ".join(f"{k} {names[c][v]}" for k, (c, v) in keys.items()) +
          "; Enter a new context, '.' pause, m autopilot, Esc quit")
    frames, rate = run(dream, new_context, keys, spec, fps, scale, max_steps)
    print(f"played {len(dream.actions)} frames at {rate:.1f} frames/s "
          f"({device}, K={sampling_steps})")
    if record:
        print(f"wrote {write_video(record, frames.repeat(4, 1).repeat(4, 2), fps or 10)}")
