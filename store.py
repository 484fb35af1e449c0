"""The frame store: a store that data.py built (its docstring gives the format), opened read-only
with frames, actions and rewards memmapped, and the sampling of training windows from it."""
import json
import os

import numpy as np
from common import ConfigError


class FrameStore:
    """A store opened read-only; frames/actions/rewards are memmaps (see the module docstring).
    sample / fixed_windows return {'frames': uint8 (B,T,H,W,3), 'actions': int64 (B,T,C),
    'rewards': float32 (B,T), 'episode': int64 (B,), 'start': int64 (B,) global index of each
    window's first frame}."""

    def __init__(self, data_dir):
        if not os.path.isdir(data_dir):
            raise ConfigError(f"data_dir '{data_dir}' does not exist (make it with python data.py "
                              "--data_dir=...)")
        names = ["frames", "actions", "rewards", "episodes", "policies", "epsilons"]
        missing = [f"{n}.npy" for n in names
                   if not os.path.isfile(os.path.join(data_dir, f"{n}.npy"))]
        missing += [] if os.path.isfile(os.path.join(data_dir, "meta.json")) else ["meta.json"]
        if missing:
            raise ConfigError(f"'{data_dir}' is not a frame store (missing {', '.join(missing)})")
        try:
            arr = {n: np.load(os.path.join(data_dir, f"{n}.npy"), mmap_mode="r") for n in names}
            self.meta = json.load(open(os.path.join(data_dir, "meta.json")))
        except (ValueError, OSError) as e:
            raise ConfigError(f"frame store '{data_dir}' is unreadable: {e}")
        self.frames, self.actions, self.rewards = arr["frames"], arr["actions"], arr["rewards"]
        self.episodes, self.policies, self.epsilons = (
            np.array(arr[n]) for n in ["episodes", "policies", "epsilons"])
        self.action_spec, self.image_size = (self.meta.get("action_spec"),
                                             self.meta.get("image_size"))
        self.fps, self._cache = self.meta.get("fps"), {}
        # the agent's per-frame fields (None in a store made before them: agent_fields() says how to
        # rebuild)
        fields = ["slips", "events", "deaths", "labels"]
        extra = {n: np.load(p) for n in fields
                 if os.path.isfile(p := os.path.join(data_dir, f"{n}.npy"))}
        self.slips, self.events, self.deaths, self.labels = (extra.get(n) for n in fields)
        self.event_names, self.data_dir = self.meta.get("events", []), data_dir
        N, E, ep = len(self.frames), len(self.episodes), self.episodes
        problems = [
            (self.frames.dtype != np.uint8
             or self.frames.shape[1:] != (self.image_size, self.image_size, 3),
             f"frames {self.frames.dtype}{self.frames.shape} vs image_size {self.image_size}"),
            (not isinstance(self.action_spec, list)
             or self.actions.shape != (N, len(self.action_spec)),
             f"actions {self.actions.shape} vs {N} frames and the action spec"),
            (self.rewards.shape != (N,), f"rewards {self.rewards.shape} vs {N} frames"),
            (ep.ndim != 2 or E == 0 or ep[0, 0] != 0 or ep[-1, 1] != N
             or (ep[:, 1] <= ep[:, 0]).any() or (ep[1:, 0] != ep[:-1, 1]).any(),
             "episodes do not tile the frames"),
            (self.policies.shape != (E,) or self.epsilons.shape != (E,),
             "policies/epsilons vs episodes"),
            (self.meta.get("num_frames") != N or self.meta.get("num_episodes") != E,
             "meta.json counts"),
            (self.slips is not None and self.slips.shape != (N,), "slips vs frames"),
            (self.events is not None and self.events.shape != (N, len(self.event_names)),
             "events vs frames"),
            (self.deaths is not None and self.deaths.shape != (E,), "deaths vs episodes"),
            (self.labels is not None and self.labels.shape != self.actions.shape,
             "labels vs actions"),
        ]
        for bad, what in problems:
            if bad:
                raise ConfigError(f"frame store '{data_dir}' is inconsistent: {what}")

    def __len__(self):
        return len(self.frames)

    def agent_fields(self):
        """Check that the store has the agent's fields (slips, events, deaths): one line how to
        rebuild if not."""
        if self.slips is None or self.events is None or self.deaths is None:
            raise ConfigError(f"frame store '{self.data_dir}' predates slips/events/deaths (the "
                              "agent's targets); rebuild it: python data.py "
                              f"--source={self.meta.get('source')} --data_dir=NEW_DIR ...")

    def labeled_episodes(self):
        """(E,) bool: the episodes with at least one labeled action (video episodes have none)."""
        return np.array([(self.actions[a:b] >= 0).any() for a, b in self.episodes])

    def episode_ids(self, split, val_frac=0.05):
        """Episode indices of 'train' | 'val' | 'all': a fixed seeded permutation, >= 1 val episode
        if E >= 2."""
        E = len(self.episodes)
        if split == "all":
            return np.arange(E)
        if split not in ("train", "val"):
            raise ConfigError(f"split '{split}': use 'train', 'val' or 'all'")
        n_val = 0 if E < 2 else min(E - 1, max(1, round(val_frac * E)))
        perm = np.random.default_rng(0).permutation(E)
        return np.sort(perm[:n_val] if split == "val" else perm[n_val:])

    def _windows(self, split, T, first=0, among=None, last=0):
        """(episode ids (S,), start frames (S,), cumulative window counts (S,)) of the split's
        T-windows (first > 0: only the first `first` of each episode; last > 0: only its last
        `last`; among, an (E,) bool mask: only those episodes')."""
        key = split, T, first, last, None if among is None else among.tobytes()
        if key not in self._cache:
            if T < 1:
                raise ConfigError(f"T={T} must be >= 1")
            ids = self.episode_ids(split)
            starts, ends = self.episodes[ids, 0], self.episodes[ids, 1]
            n = np.maximum(ends - starts - T + 1, 0)
            if last:  # the windows that end in the episode's last `last` frames
                starts, n = starts + np.maximum(n - last, 0), np.minimum(n, last)
            n = np.minimum(n, first) if first else n
            self._cache[key] = ids, starts, np.cumsum(n if among is None else n * among[ids])
        return self._cache[key]

    def _gather(self, ids, starts, cum, j, T):
        """Window numbers j (B,) -> the batch dict; index math only, one fancy index per memmap."""
        e = np.searchsorted(cum, j, side="right")                  # (B,) position within the split
        start = starts[e] + j - np.concatenate([[0], cum])[e]      # (B,) first frame of each window
        idx = start[:, None] + np.arange(T)                         # (B, T) global frame indices
        return {"frames": np.asarray(self.frames[idx]),              # uint8 (B, T, H, W, 3)
                "actions": self.actions[idx].astype(np.int64),      # int64 (B, T, C)
                "rewards": np.asarray(self.rewards[idx], np.float32),  # float32 (B, T)
                "episode": ids[e].astype(np.int64),                 # int64 (B,)
                "start": start.astype(np.int64)}  # int64 (B,) global index of frame 0

    def _check(self, n, cum, split, T, what):
        if cum[-1:].sum() < n:
            raise ConfigError(f"{what}={n} but split '{split}' has only {int(cum[-1:].sum())} "
                              f"windows of T={T}")

    def sample(self, batch_size, T, split="train", rng=None, part=(0, 1), first=0, among=None,
               last=0):
        """batch_size windows of T consecutive frames of one episode each, uniform over all such
        windows (first > 0: those that start within the first `first` frames of their episode;
        last > 0: those that end within its last `last` frames; among, an (E,) bool mask: those of
        these episodes).
        part=(rank, world): DDP ranks share one rng, draw the same global batch of
        world * batch_size windows and each gathers its own slice, so N processes train on what one
        process with N times the batch would."""
        rng = np.random.default_rng(rng)
        ids, starts, cum = self._windows(split, T, first, among, last)
        self._check(batch_size, cum, split, T, "batch_size")
        rank, world = part
        j = rng.integers(0, cum[-1], batch_size * world)[rank * batch_size:(rank + 1) * batch_size]
        return self._gather(ids, starts, cum, j, T)

    def sample_parts(self, parts, T, split, rng, part=(0, 1)):
        """One batch from several draws: parts, a list of (batch_size, among, last) for sample(),
        concatenated in order (a part of size 0 is skipped)."""
        drawn = [self.sample(k, T, split, rng, part, among=m, last=l) for k, m, l in parts if k]
        return {key: np.concatenate([p[key] for p in drawn]) for key in drawn[0]}

    def fixed_windows(self, n, T, split="val", seed=0):
        """n distinct windows, the same on every call (for evaluation), sorted by position."""
        ids, starts, cum = self._windows(split, T)
        self._check(n, cum, split, T, "n")
        j = np.sort(np.random.default_rng(seed).choice(int(cum[-1]), n, replace=False))
        return self._gather(ids, starts, cum, j, T)
