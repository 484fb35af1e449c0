"""A scripted Crafter demonstrator of mixed skill: the player of the offline data.

Dreamer 4 learns offline from human contractors' play of mixed skill. Crafter ships no such data and
random play almost never places a table, so this file scripts a competent but imperfect player. It
plays the tech tree, eats, drinks, fights and sleeps sealed in rock. The data's player is
screen-only (view=True), a stand-in for contractors who see only the screen: it decides from the 9x7
tiles on screen, its inventory and its own memory of where it last saw water, cows and stone, never
from the map off screen nor from which achievements it has (the agent cannot see those;
docs/experiments.md measures what that buys). view=False reads the whole map and its achievements.
Each episode has a skill epsilon: the fraction of its steps that are sticky random actions, recorded
as slips (policy 'random' is all random). game.py plays its episodes (collection, evaluation) and
holds the Crafter score.
"""
import collections

import numpy as np
from crafter import constants as C
from crafter import objects as O

from common import ConfigError

ACTIONS = list(C.actions)            # the 17 action names; index = action id
ACHIEVEMENTS = list(C.achievements)  # the 22 achievement names

_A = {name: i for i, name in enumerate(ACTIONS)}
_MOVES = {(-1, 0): "move_left", (1, 0): "move_right", (0, -1): "move_up", (0, 1): "move_down"}
_DIRS = {name: d for d, name in _MOVES.items()}
_TOOLS = ["wood_pickaxe", "wood_sword", "stone_pickaxe", "stone_sword", "iron_pickaxe",
          "iron_sword"]
_SOURCE = {"wood": "tree", "stone": "stone", "coal": "coal", "iron": "iron", "diamond": "diamond"}


def _add(p, d, k=1):
    return p[0] + k * d[0], p[1] + k * d[1]


def _shift(a, d):
    """out[p] = a[p + d], False off the map."""
    (dx, dy), (w, h) = d, a.shape
    out = np.zeros_like(a)
    dst = slice(max(0, -dx), w - max(0, dx)), slice(max(0, -dy), h - max(0, dy))
    out[dst] = a[max(0, dx):w + min(0, dx), max(0, dy):h + min(0, dy)]
    return out


def _grow(a, box=False):
    """`a` dilated by the 4-neighbourhood (box: the 3x3 neighbourhood)."""
    g = a.copy()
    g[1:] |= a[:-1]
    g[:-1] |= a[1:]
    b = g if box else a
    h = g.copy()
    h[:, 1:] |= b[:, :-1]
    h[:, :-1] |= b[:, 1:]
    return h


class Demonstrator:
    """A Crafter player reading the game state; act(obs) -> action id (obs is ignored); self.slip:
    whether that action was a random slip. view=True: it reads only the tiles on screen (and
    remembers water, cows and stone).

    A fraction `epsilon` of its steps are sticky random actions, each held for 1-6 steps: a human's
    slips and idle wandering. It slips less in a fight and never when sealed in for the night, and
    its random actions never sleep (one then sleeps until rested) nor step into lava. scripted=False
    is pure sticky-random play over all 17 actions: the policy 'random'."""

    HOLD = 6  # a random action is held for 1..HOLD steps

    # near a foe, slips start at this fraction of the usual rate (recovery data in fights)
    FIGHT_SLIP = 0.3

    def __init__(self, env, epsilon=0.0, seed=0, scripted=True, view=False):
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"epsilon={epsilon} must be in [0, 1]")
        self.env, self.scripted, self.view = env, scripted, view
        # random runs start with this probability per step: a fraction epsilon is random
        hold = (1 + self.HOLD) / 2
        self.start = epsilon / (hold - (hold - 1) * epsilon) if scripted else 1.0
        self.slips = ([i for i, a in enumerate(ACTIONS) if a != "sleep"] if scripted
                      else list(range(len(ACTIONS))))
        self.rng = np.random.default_rng([seed, 1])
        self.t, self.held, self.hold = 0, 0, 0  # step, sticky random action, steps it is still held
        # cached path, what it leads to, searches that failed
        self.path, self.key, self.failed = [], None, {}
        # (entry tile, direction) of the night's pocket; exploration goal
        self.shelter, self.roam = None, None
        self.resting = False  # hurt: resting until health is back
        # view: where it last saw water, cows, stone
        self.seen = {}

    def __call__(self, obs=None):
        self.t += 1
        # a slip starts with probability start * _calm() (scripted); _calm reads the map: only when
        # it may matter
        r = self.rng.random() if self.hold == 0 else 1.0
        if r < self.start and (not self.scripted or r < self.start * self._calm()):
            self.held = self.slips[self.rng.integers(len(self.slips))]
            self.hold = int(self.rng.integers(1, self.HOLD + 1))
        self.slip = self.hold > 0  # this step's action is a random slip, not the script's choice
        if self.hold > 0:
            self.hold -= 1
            move = _DIRS.get(ACTIONS[self.held])
            if (self.scripted and move
                    and self.env._world[_add(self.env._player.pos, move)][0] == "lava"):
                return _A["noop"]
            return self.held
        return _A[self._policy()]

    def _calm(self):
        """How freely it slips: never sealed in for the night, less with a foe within 2 tiles."""
        self._see()
        foes = self.objs[O.Zombie] | self.objs[O.Skeleton]
        return 0.0 if self._enclosed() else self.FIGHT_SLIP if self._within(foes, 2) else 1.0

    # ---- what the player sees --------------------------------------------------------------------
    def _see(self):
        w, p = self.env._world, self.env._player
        self.inv, self.done, self.masks = p.inventory, p.achievements, {}
        self.pos, self.facing = (int(p.pos[0]), int(p.pos[1])), tuple(int(v) for v in p.facing)
        self.ahead = _add(self.pos, self.facing)
        # the tiles it knows: all, or (view) the 9x7 on screen
        self.vis = np.ones(w._mat_map.shape, bool)
        if self.view:
            (x, y), self.vis[:] = self.pos, False
            self.vis[max(0, x - 4):x + 5, max(0, y - 3):y + 4] = True
        self.nobj = w._obj_map == 0
        self.free = self.tiles_of("grass", "sand", "path") & self.nobj  # where one can walk
        dig = self.tiles_of("tree", "stone") if self.inv["wood_pickaxe"] else self.tiles_of("tree")
        self.dig = dig & self.nobj  # what we mine through when it is in the way
        self.objs = collections.defaultdict(lambda: np.zeros_like(self.free))
        for o in w.objects:
            if self.vis[tuple(o.pos)]:
                # plants in objs[Plant], ripe ones also in objs['ripe']
                self.objs[type(o)][tuple(o.pos)] = True
                self.objs["ripe"][tuple(o.pos)] = isinstance(o, O.Plant) and o.ripe
        for name, mask in [("water", self.tiles_of("water")), ("cow", self.objs[O.Cow]),
                           ("stone", self.tiles_of("stone"))]:
            if self.view and mask.any():  # a person remembers where the water was
                self.seen[name] = tuple(int(v) for v in np.argwhere(mask)[0])
        self.passable = self.free | self.dig
        # weak: keep 3 tiles away from skeletons
        if self.inv["health"] <= 6 or not self.inv["wood_sword"]:
            self.passable &= ~_grow(_grow(self.objs[O.Skeleton]))

    def tiles_of(self, *names):
        """Mask of the map tiles made of any of `names`."""
        if names not in self.masks:
            ids, lut = self.env._world._mat_ids, np.zeros(256, bool)
            lut[[ids[n] for n in names if n in ids]] = True
            self.masks[names] = lut[self.env._world._mat_map] & self.vis
        return self.masks[names]

    def _around(self, p=None):
        """(direction, tile) of the 4 neighbours of p (default: the player) on the map."""
        p = p or self.pos
        return [(d, n) for d, n in ((d, _add(p, d)) for d in _MOVES)
                if 0 <= n[0] < 64 and 0 <= n[1] < 64]

    def _within(self, mask, r):
        x, y = self.pos
        return mask[max(0, x - r):x + r + 1, max(0, y - r):y + r + 1].any()

    # ---- the policy: the first rule that applies acts --------------------------------------------
    def _policy(self):
        self._see()
        inv, done, objs = self.inv, self.done, self.objs
        if self.env._player.sleeping:
            return "noop"
        zombies, cows, skeletons = objs[O.Zombie], objs[O.Cow], objs[O.Skeleton]
        # 1. A zombie or skeleton next to us: face it and hit it. Hurt, with one a few steps away:
        # step away from it.
        foes = zombies | skeletons
        if a := self._reach(foes, "do", "foe", 1):
            return a
        if (inv["health"] <= 4 and self._within(foes, 3) and self.shelter is None
                and not self._enclosed()):
            near = np.argwhere(foes[max(0, self.pos[0] - 3):self.pos[0] + 4,
                                    max(0, self.pos[1] - 3):self.pos[1] + 4])
            near += (max(0, self.pos[0] - 3), max(0, self.pos[1] - 3))
            steps = [(np.abs(near - n).sum(1).min(), d) for d, n in self._around() if self.free[n]]
            if steps and max(steps)[0] > np.abs(near - self.pos).sum(1).min():
                return _MOVES[max(steps)[1]]
        # 2. Sealed in at night, hurt, or with a zombie about: stay in (sleep if not fully rested)
        # unless starving.
        dark = self.env._world.daylight < 0.35
        self.resting = inv["health"] <= 4 or (self.resting and inv["health"] < 7)
        if ((dark or self.resting or self._within(zombies, 5))
                and min(inv["drink"], inv["food"]) > 2 and self._enclosed()):
            return "sleep" if inv["energy"] < 9 else "noop"
        # 3. Needs: drink at water, eat a cow (at night, when zombies roam the grass, or hurt: only
        # when urgent).
        low = 2 if dark or self.resting else 4
        # at the water: drink up
        if inv["drink"] < 9 and (a := self._reach(self.tiles_of("water"), "do", "drink", 1)):
            return a
        if inv["drink"] <= low and (a := self._reach(self.tiles_of("water"), "do", "drink")):
            return a
        if inv["food"] <= low and (a := self._reach(cows, "do", "food")):
            return a
        # none in sight: look for it before anything else
        if self.view and min(inv["food"], inv["drink"]) <= 3:
            return self._wander()
        # 4. Tired at night (or exhausted) or hurt: sleep or rest, sealed in the rock if we can.
        if self.resting or inv["energy"] <= 3 or (inv["energy"] <= 6 and dark):
            if a := self._sleep(foes):
                return a
            if self.view and self.inv["wood_pickaxe"] and "stone" in self.seen:
                return self._wander()  # to the rock it saw last, for a pocket to sleep in
        else:
            self.shelter = None
        # 5. Make any missing tool we can make right here.
        near = self.env._world.nearby(np.array(self.pos), 1)[0]
        for tool in _TOOLS:
            info = C.make[tool]
            if not inv[tool] and all(s in near for s in info["nearby"]) and \
                    all(inv[k] >= v for k, v in info["uses"].items()):
                return "make_" + tool
        # 6. Opportunities a few steps away: drink, eat, fight, eat a ripe plant, mine.
        # The screen-only player (view) cannot see which achievements it has: it goes by the screen
        # and inventory.
        pick, stone_pick, iron_pick = inv["wood_pickaxe"], inv["stone_pickaxe"], inv["iron_pickaxe"]
        # not unlocked yet, as far as it knows
        new = {k: not self.view and not v for k, v in done.items()}
        close = [(inv["drink"] <= 6 or new["collect_drink"], self.tiles_of("water"), 5),
                 (inv["food"] <= (7 if self.view else 6) or new["eat_cow"], cows, 8),
                 ((self.view or new["defeat_zombie"]) and inv["health"] >= 6, zombies, 5),
                 ((self.view or new["defeat_skeleton"]) and inv["health"] >= 7
                  and inv["wood_sword"], skeletons, 4),
                 (True, objs["ripe"], 10),
                 (pick and inv["stone"] < (5 if self.view else 9), self.tiles_of("stone"), 1),
                 (pick and inv["coal"] < 3, self.tiles_of("coal"), 5),
                 (stone_pick and inv["iron"] < 3, self.tiles_of("iron"), 6),
                 (iron_pick, self.tiles_of("diamond"), 8)]
        for i, (want, target, r) in enumerate(close):
            if want and (a := self._reach(target, "do", f"close{i}", r)):
                return a
        # 7. The tech tree: tools in order, then a furnace and a placed stone.
        for tool in _TOOLS:
            if not inv[tool] and (a := self._craft(tool)):
                return a
        furnace = (stone_pick and not self.tiles_of("furnace").any() if self.view
                   else new["place_furnace"])
        if furnace and (a := self._craft("furnace")):
            return a
        if (self.view and inv["stone"] >= 7
                and (a := self._reach(self.tiles_of("water"), "place_stone", "bridge", 4))):
            return a  # (into water: a stone placed on land would be mined again on the way)
        if new["place_stone"] and inv["stone"] and (a := self._place("stone")):
            return a
        # 8. Far achievements: coal, iron, diamond, a drink, a cow; then a sapling from the grass
        # and plant it.
        far = [(pick and (inv["coal"] < 3 if self.view else new["collect_coal"]),
                self.tiles_of("coal")),
               (stone_pick and (inv["iron"] < 3 if self.view else new["collect_iron"]),
                self.tiles_of("iron")),
               (iron_pick and (self.view or new["collect_diamond"]), self.tiles_of("diamond")),
               (new["collect_drink"] or inv["drink"] <= 5, self.tiles_of("water")),
               (new["eat_cow"] or inv["food"] <= 5, cows)]
        for i, (want, target) in enumerate(far):
            if want and (a := self._reach(target, "do", f"far{i}")):
                return a
        if inv["sapling"] and (a := self._place("plant")):
            return a
        sapling = (not inv["sapling"] and not objs[O.Plant].any() if self.view
                   else new["collect_sapling"])
        if sapling and (a := self._face_open(self.tiles_of("grass") & self.nobj, "do", "sapling")):
            return a
        # 9. Nothing to do: wander.
        return self._wander() if self.view else self._explore()

    def _craft(self, tool):
        """Work toward `tool` (or the furnace): gather what it uses, plus the cost of a station it
        needs that is not within 10 tiles; then build that station, or walk next to the stations
        (rule 4 then makes the tool)."""
        info = C.make.get(tool, {"uses": {}, "nearby": ["table", tool]})
        missing = [s for s in info["nearby"] if not self._within(self.tiles_of(s), 10)][:1]
        need = collections.Counter(info["uses"])
        for s in missing:
            need.update(C.place[s]["uses"])
        # a new table: bring wood for the tools still to make, as a human would
        if missing == ["table"]:
            need["wood"] = min(9, max(need["wood"], 2 + sum(not self.inv[t] for t in _TOOLS)))
        for item, n in need.items():
            if self.inv[item] < n:
                req = C.collect[_SOURCE[item]]["require"] if item in _SOURCE else {"never": 1}
                if any(self.inv.get(k, 0) < v for k, v in req.items()):
                    return None
                return self._reach(self.tiles_of(_SOURCE[item]), "do", item)
        if missing:
            return self._place(missing[0])
        stand = self.passable.copy()
        for s in info["nearby"]:
            stand &= _grow(self.tiles_of(s), box=True)
        return self._go(stand, tool, 30)

    def _place(self, name):
        """Place `name` where it can go (a furnace next to a table, so both are in reach)."""
        where = self.tiles_of(*C.place[name]["where"]) & self.nobj
        stand = _grow(self.tiles_of("table"), box=True) if name == "furnace" else None
        return self._face_open(where, "place_" + name, name, stand)

    def _sleep(self, foes):
        """Sleep in a 2-tile pocket: from its entry tile walk in two tiles (mining stone), step back
        one and seal the entry with stone. Without a pickaxe or a pocket within reach, sleep in the
        open unless a foe is near."""
        if self._enclosed():
            return "sleep" if self.inv["energy"] < 9 else "noop"
        walk = self.tiles_of("grass", "sand", "path")
        if self.shelter is None and self.inv["wood_pickaxe"]:
            wall = ~walk & ~self.tiles_of("lava") & self.vis
            mine = self.tiles_of("stone") | self.free
            goal = np.zeros_like(walk)
            for d in _MOVES:  # entry m with m+d, m+2d minable and walls around them
                e = (d[1], d[0])
                ok = _shift(mine, d) & _shift(mine, _add(d, d)) & _shift(wall, _add(d, d, 2))
                for k in (1, 2):  # the walls beside s1 = m+d and s2 = m+2d
                    ok &= _shift(wall, _add(e, d, k)) & _shift(wall, _add((-e[0], -e[1]), d, k))
                if ok[self.pos]:
                    self.shelter = (self.pos, d)
                    break
                goal |= ok & self.free
            else:
                if a := self._go(goal, "shelter", 30):
                    return a
        if self.shelter is None:
            exposed = (self._within(foes, 6)
                       or self.view and self.env._world.daylight < 0.5 and self.inv["energy"])
            # (view: no sleep in the open at night)
            return None if exposed or self.inv["energy"] == 9 else "sleep"
        m, d = self.shelter
        back, s1, s2 = (-d[0], -d[1]), _add(m, d), _add(m, d, 2)
        if self.pos == s2:
            return _MOVES[back]
        if self.pos == s1 and self.facing == back:
            return ("place_stone" if self.inv["stone"] else "sleep" if self.inv["energy"] < 9
                    else "noop")
        if self.pos not in (m, s1):  # knocked out of the plan
            self.shelter = None
            return None
        ahead = s1 if self.pos == m else s2
        return "do" if self.tiles_of("stone")[ahead] and self.facing == d else _MOVES[d]

    def _enclosed(self):
        """The walkable region around us is tiny and closed, so no zombie can get next to us
        (off-screen tiles count as walkable)."""
        walk = self.tiles_of("grass", "sand", "path") | ~self.vis
        region = np.zeros_like(walk)
        region[self.pos] = True
        for _ in range(4):
            grown = _grow(region) & walk
            if (grown == region).all():
                return True
            region = grown
        return False

    def _explore(self):
        """Walk to a random walkable spot within 12 tiles; a new one on arrival or when it cannot be
        reached."""
        if self.roam is None or self.pos == self.roam or self.failed.get("roam", 0) > self.t:
            x, y = self.pos
            x0, y0 = max(0, x - 12), max(0, y - 12)
            cand = np.argwhere(self.free[x0:x + 13, y0:y + 13]) + (x0, y0)
            self.roam = tuple(cand[self.rng.integers(len(cand))]) if len(cand) else self.pos
            self.failed.pop("roam", None)
        goal = np.zeros_like(self.free)
        goal[self.roam] = True
        return self._go(goal, "roam", 40) or "noop"

    def _wander(self):
        """Screen-only exploration: walk the way it faces, and when that is blocked turn toward the
        side with more open ground on screen (so that what it does follows from what it sees); when
        thirsty, hungry or tired with a pickaxe, head for the water, cow or stone it remembers."""
        inv, night = self.inv, self.env._world.daylight < 0.5 or self.inv["energy"] <= 6
        need = [inv["drink"] <= 4 and "water", inv["food"] <= 4 and "cow",
                night and inv["wood_pickaxe"] and "stone"]
        name = next((n for n in need if n in self.seen), None)
        if name and np.abs(np.subtract(self.seen[name], self.pos)).sum() <= 1:
            del self.seen[name]  # there, and nothing to be had: forget it
            name = None
        # (mining its way out of a shelter)
        open_ = [d for d, n in self._around() if self.passable[n]]
        heading = self.facing
        if name and self.vis[self.seen[name]]:  # on screen: a path on the screen, if there is one
            goal = np.zeros_like(self.free)
            goal[self.seen[name]] = True
            if a := self._reach(goal, "do", "wander", 12):
                return a
        elif name:  # off screen: straight toward it, until that way is blocked (then forget it)
            d = np.subtract(self.seen[name], self.pos)
            d = (int(np.sign(d[0])), 0) if abs(d[0]) >= abs(d[1]) else (0, int(np.sign(d[1])))
            if d in open_:
                heading = d
            else:
                del self.seen[name]
        if heading not in open_:
            back = (-heading[0], -heading[1])
            turns = [d for d in open_ if d != back] or open_
            if not turns:
                return "noop"
            x, y = self.pos
            room = {d: self.free[max(0, x + 4 * d[0] - 4):x + 4 * d[0] + 5,
                                 max(0, y + 3 * d[1] - 3):y + 3 * d[1] + 4].sum()
                    for d in turns}  # open tiles on that side of the screen
            heading = max(turns, key=lambda d: (room[d], d))
        ahead = _add(self.pos, heading)
        return "do" if self.dig[ahead] and self.facing == heading else _MOVES[heading]

    # ---- moving around ---------------------------------------------------------------------------
    def _reach(self, target, action, key, r=64):
        """Walk next to a (non-walkable or occupied) tile of `target`, face it, then `action`; None
        if none within r. Stepping toward a blocked tile only turns the player."""
        # the tile we face first
        for d, n in sorted(self._around(), key=lambda dn: dn[0] != self.facing):
            if target[n]:
                return action if d == self.facing else _MOVES[d]
        if r <= 1 or not self._within(target, r):
            return None
        return self._go(_grow(target) & self.passable, key, 2 * r)

    def _face_open(self, target, action, key, stand=None):
        """Stand (on `stand`) facing a walkable tile of `target`, then `action`. One faces a
        walkable tile only by stepping toward it, so walk to a tile m with m+d standable and m+2d in
        `target`, and step d."""
        inside = 0 <= self.ahead[0] < 64 and 0 <= self.ahead[1] < 64
        if inside and target[self.ahead] and (stand is None or stand[self.pos]):
            return action
        ok = self.free if stand is None else self.free & stand
        goal = np.zeros_like(ok)
        for d in _MOVES:
            step = _shift(ok & _shift(target, d), d)
            if step[self.pos]:
                return _MOVES[d]
            goal |= step
        return self._go(goal & self.passable, key, 30)

    def _go(self, goal, key, r):
        """Next action on a shortest path to a `goal` tile (mining trees and stone in the way); None
        if none within r steps. The screen-only player searches afresh every step, so its step
        follows from the screen (a cached path, or a search put off after a failure, is a memory the
        screen does not show); the other recomputes the path only when the goal or the next tile
        changes."""
        p = self.path
        if self.view or not (self.key == key and p and goal[p[-1]] and abs(p[0][0] - self.pos[0]) +
                             abs(p[0][1] - self.pos[1]) == 1 and self.passable[p[0]]):
            if not self.view and self.failed.get(key, -1) > self.t:  # failed a moment ago: not yet
                return None
            p = self._bfs(goal, r)
            self.path, self.key = p or [], key
            if p is None:
                self.failed[key] = self.t + 10
                return None
        d = (p[0][0] - self.pos[0], p[0][1] - self.pos[1])
        if self.dig[p[0]]:  # a tree or stone in the way: face it and mine it
            return "do" if d == self.facing else _MOVES[d]
        p.pop(0)
        return _MOVES[d]

    def _bfs(self, goal, r):
        """Breadth-first search from the player over passable tiles, one numpy wavefront per step;
        the path (list of tiles, start excluded) to a nearest goal tile within r steps, or None."""
        dist = np.full(goal.shape, -1, np.int32)
        front = np.zeros_like(goal)
        front[self.pos], dist[self.pos] = True, 0
        seen = front.copy()
        for k in range(1, r + 1):
            front = _grow(front) & self.passable & ~seen
            if not front.any():
                return None
            seen |= front
            dist[front] = k
            hits = np.argwhere(front & goal)
            if len(hits):
                path = [tuple(int(v)
                              for v in hits[0 if self.view else self.rng.integers(len(hits))])]
                while k > 1:  # walk back along decreasing distance
                    k -= 1
                    path.append(next(n for _, n in self._around(path[-1]) if dist[n] == k))
                return path[::-1]
        return None
