"""play.py: keys to actions (a pure function), and the play loop headless (SDL's dummy driver,
posted key events)."""
import os
import sys

import numpy as np
import pytest
import torch

from common import ConfigError
from conftest import run_script
from demonstrator import ACTIONS
from play import CRAFTER_KEYMAP, Dream, contexts, keys_to_action, load, parse_keymap, run
from store import FrameStore

pygame = pytest.importorskip("pygame")
CRAFTER = [{"name": "action", "classes": 17, "values": ACTIONS}]


def test_keys_to_action_is_crafters_gui_keymap():
    keys = parse_keymap(CRAFTER_KEYMAP, CRAFTER)
    act = lambda tapped, held: ACTIONS[int(keys_to_action(tapped, held, keys, CRAFTER)[0])]
    assert act([], []) == "noop" and act([], ["z"]) == "noop"  # no key, or a key outside the map
    assert (act([], ["w"]) == "move_up" and act([], ["tab"]) == "sleep"
            and act([], ["6"]) == "make_iron_sword")
    # held keys: the first in keymap order (a before w), as in Crafter
    assert act([], ["w", "a"]) == "move_left"
    # a key pressed since the last frame wins: the last one
    assert act(["space", "t"], ["w"]) == "place_table"
    assert [keys[k] for k in "wasd"] == [(0, 3), (0, 1), (0, 4), (0, 2)]


def test_keymap_of_another_action_spec():
    spec = [{"name": "forward", "classes": 2}, {"name": "jump", "classes": 3}]
    keys = parse_keymap("w:forward=1,j:jump=2,k:jump=1", spec)
    assert keys_to_action([], ["w", "j"], keys, spec).tolist() == [1, 2]
    # j comes first in the map: jump set once
    assert keys_to_action([], ["k", "j"], keys, spec).tolist() == [0, 2]
    assert keys_to_action([], [], keys, spec).tolist() == [0, 0]
    for bad in ("w:fly", "m:do", "wdo", ":do"):
        with pytest.raises(ConfigError, match="keymap entry"):
            parse_keymap(bad, CRAFTER)


def test_play_loop_headless(agent_run, monkeypatch):
    out, store = agent_run[:2]
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    tok, dyn, agent, ck = load(str(out / "agent_bc/ckpt.pt"), "cpu")
    dream = Dream(tok, dyn, agent, 2, torch.autocast("cpu", enabled=False), "cpu", seed=0)
    new_context = contexts("data", FrameStore(store), tok.image_size, 4, 0)
    dream.reset(*new_context())
    key = lambda kind, k: pygame.event.Event(kind, key=k)
    # 4: a tap inside one frame; 5, 7: pause, resume; 8, 9: new context, autopilot
    script = {0: [key(pygame.KEYDOWN, pygame.K_w)], 3: [key(pygame.KEYUP, pygame.K_w)],
              4: [key(pygame.KEYDOWN, pygame.K_SPACE), key(pygame.KEYUP, pygame.K_SPACE)],
              5: [key(pygame.KEYDOWN, pygame.K_PERIOD)], 7: [key(pygame.KEYDOWN, pygame.K_PERIOD)],
              8: [key(pygame.KEYDOWN, pygame.K_RETURN)], 9: [key(pygame.KEYDOWN, pygame.K_m)],
              10: [key(pygame.KEYDOWN, pygame.K_m)], 11: [pygame.event.Event(pygame.QUIT)]}
    calls = []

    def on_tick(step):
        calls.append(step)
        for ev in script.get(len(calls) - 1, []):
            pygame.event.post(ev)

    frames, rate = run(dream, new_context, parse_keymap(CRAFTER_KEYMAP, CRAFTER), CRAFTER, fps=0,
                       scale=2, on_tick=on_tick)
    auto = dream.actions[7]
    # up x3, noop, do, paused 2 ticks, ...
    assert dream.actions == [[3], [3], [3], [0], [5], [0], [0], auto, [0]]
    assert calls == [0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9] and dream.resets == 2
    assert 0 <= auto[0] < 17 and np.isfinite(dream.reward) and np.isfinite(dream.value) and rate > 0
    assert (frames.shape == (1 + 9 + 1, tok.image_size, tok.image_size, 3)
            and frames.dtype == np.uint8)
    assert frames.std() > 0  # decoded pictures, not a blank screen


def test_play_script_records_and_refuses_bad_input(agent_run, tmp_path, monkeypatch, capsys):
    out = agent_run[0]
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    video = tmp_path / "play.mp4"
    run_script("play.py", f"--ckpt={out / 'dynamics/ckpt.pt'}", "--start=crafter", "--max_steps=3",
               "--fps=0", "--compile=False", f"--record={video}", "--sampling_steps=2")
    assert os.path.getsize(video) > 0 and "played 3 frames" in capsys.readouterr().out
    for args, msg in [(["--sampling_steps=3"], "sampling_steps=3"),
                      (["--start=video"], "start='video'"), (["--record=a.avi"], "record="),
                      (["--keymap=w:fly"], "keymap entry"),
                      ([f"--ckpt={tmp_path / 'none.pt'}"], "none.pt")]:
        with pytest.raises(ConfigError, match=msg):
            run_script("play.py", f"--ckpt={out / 'dynamics/ckpt.pt'}", "--max_steps=1", *args)
    monkeypatch.setitem(sys.modules, "pygame", None)  # pygame not installed
    with pytest.raises(ConfigError, match="pip install pygame"):
        run_script("play.py", f"--ckpt={out / 'dynamics/ckpt.pt'}")
