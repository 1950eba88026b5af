"""The toy world: captioned clips of one coloured shape in a known motion, deterministic from a seed.

It is the pack's instrument for claims about video quality (see ../docs and DESIGN.md, "The toy world"):
models of the real classes are trained on it, the probe (``distill/toy_probe.py``) reads object and motion
back from any video, and held-out (shape, motion) pairs stand in for the papers' "motions the model renders
badly". Numbers measured in it are about our implementation of the methods, not about ZeroScope or Wan.

A clip is a ``ClipSpec`` (everything random is drawn from one seeded generator); ``render`` turns a batch of
specs into frames ``[B, T, H, W, 3]`` in 0..1 with anti-aliased signed-distance shapes, on any torch device
(the GPU trainer renders its data on the fly; the writer and the probe's tests render on the CPU).

Pure torch + numpy; no ComfyUI import.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch

SHAPES = ("circle", "square", "triangle")
COLOURS = {  # saturated colours on grey backgrounds: the probe finds the object by saturation
    "red": (0.95, 0.12, 0.10),
    "green": (0.12, 0.85, 0.15),
    "blue": (0.15, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.70, 0.15, 0.95),
    "cyan": (0.10, 0.90, 0.95),
}
# Image coordinates: x to the right, y downwards. Linear motions are unit directions.
LINEAR = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "down_left": (-math.sqrt(0.5), math.sqrt(0.5)),
}
MOTIONS = tuple(LINEAR) + ("circling", "growing")

# What captions call each motion: several phrasings per motion, so the text side meets synonyms.
MOTION_PHRASES = {
    "left": ("moves to the left", "drifts to the left", "slides left across the frame", "travels leftward"),
    "right": ("moves to the right", "drifts to the right", "slides right across the frame", "travels rightward"),
    "up": ("moves up", "rises toward the top", "floats upward", "climbs up the frame"),
    "down": ("moves down", "falls toward the bottom", "sinks downward", "drops down the frame"),
    "up_right": ("moves diagonally up and to the right", "drifts up and to the right",
                 "glides toward the top right corner"),
    "down_left": ("moves diagonally down and to the left", "drifts down and to the left",
                  "glides toward the bottom left corner"),
    "circling": ("moves in a circle", "circles around", "travels along a circular path", "orbits in a loop"),
    "growing": ("grows larger", "expands", "gets bigger", "swells in size"),
}
TEMPLATES = (
    "a {colour} {shape} {motion}",
    "the {colour} {shape} {motion}",
    "a {colour} {shape} {motion} on a {background} background",
    "one {colour} {shape} {motion}",
)
BACKGROUND_WORDS = {"plain": "plain", "textured": "textured"}

# The training split never shows these (shape, motion) pairs; the retrieval library holds every pair.
HELD_OUT = (
    ("circle", "up"),
    ("circle", "growing"),
    ("square", "left"),
    ("square", "circling"),
    ("triangle", "right"),
    ("triangle", "down_left"),
)
RARE_MOTION = "up_right"   # at most 2 % of the training split
RARE_SHARE = 0.015

SIZE = 64        # frames are SIZE x SIZE
FRAMES = 8


@dataclass(frozen=True)
class ClipSpec:
    shape: str
    colour: str
    motion: str
    x0: float          # start centre, pixels
    y0: float
    radius: float      # shape size r (pixels): circle radius r, square half-side 0.85 r, triangle circumradius 1.4 r
    speed: float       # linear: pixels per frame; circling: radians per frame; growing: total size ratio - 1
    orbit: float       # circling: orbit radius in pixels (0 otherwise)
    phase: float       # circling: start angle
    background: str    # plain | textured
    bg_level: float
    bg_seed: int
    template: int
    phrase: int

    @property
    def caption(self) -> str:
        return TEMPLATES[self.template].format(colour=self.colour, shape=self.shape,
                                               motion=MOTION_PHRASES[self.motion][self.phrase],
                                               background=BACKGROUND_WORDS[self.background])

    def as_row(self) -> dict:
        row = asdict(self)
        row["caption"] = self.caption
        return row


def pair_allowed(shape: str, motion: str, split: str) -> bool:
    return split != "train" or (shape, motion) not in HELD_OUT


def sample_spec(rng: random.Random, split: str = "library", frames: int = FRAMES, size: int = SIZE,
                shape: str | None = None, colour: str | None = None, motion: str | None = None) -> ClipSpec:
    """One random clip of ``split`` ('train' withholds HELD_OUT and makes RARE_MOTION rare; 'library' and
    'eval' draw every pair uniformly). Fixed ``shape`` / ``colour`` / ``motion`` pin those parts."""
    while True:
        m = motion
        if m is None:
            if split == "train":
                m = RARE_MOTION if rng.random() < RARE_SHARE else rng.choice([x for x in MOTIONS if x != RARE_MOTION])
            else:
                m = rng.choice(MOTIONS)
        if shape is None:
            # drawn among the shapes allowed with this motion, never a redraw of the motion: the rare motion
            # keeps exactly its share
            s = rng.choice([x for x in SHAPES if pair_allowed(x, m, split)])
            break
        s = shape
        if motion is not None or pair_allowed(s, m, split):
            break
    c = colour or rng.choice(tuple(COLOURS))
    radius = rng.uniform(0.09, 0.13) * size
    span = frames - 1
    orbit = phase = 0.0
    if m in LINEAR:
        speed = rng.uniform(0.40, 0.60) * size / span       # the whole path covers 40-60 % of the frame
        dx, dy = LINEAR[m]
        margin = radius + 2
        lo_x, hi_x = margin - min(0.0, dx * speed * span), size - margin - max(0.0, dx * speed * span)
        lo_y, hi_y = margin - min(0.0, dy * speed * span), size - margin - max(0.0, dy * speed * span)
        x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    elif m == "circling":
        speed = rng.choice((1.0, -1.0)) * rng.uniform(0.85, 1.0) * 2 * math.pi / frames   # most of a turn
        orbit = rng.uniform(0.17, 0.22) * size
        phase = rng.uniform(0, 2 * math.pi)
        margin = orbit + radius + 2
        x0, y0 = rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)
    else:  # growing
        radius = rng.uniform(0.07, 0.09) * size
        speed = rng.uniform(1.2, 1.6)                         # ends 2.2-2.6 times as large
        margin = radius * (1 + speed) + 2
        x0, y0 = rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)
    background = rng.choice(("plain", "textured"))
    return ClipSpec(shape=s, colour=c, motion=m, x0=x0, y0=y0, radius=radius, speed=speed, orbit=orbit,
                    phase=phase, background=background, bg_level=rng.uniform(0.08, 0.38),
                    bg_seed=rng.randrange(2 ** 31), template=rng.randrange(len(TEMPLATES)),
                    phrase=rng.randrange(len(MOTION_PHRASES[m])))


def sample_specs(n: int, seed: int, split: str = "library", **pinned) -> list[ClipSpec]:
    rng = random.Random(f"toy-world/{split}/{seed}")
    return [sample_spec(rng, split, **pinned) for _ in range(n)]


def track(spec: ClipSpec, frames: int = FRAMES) -> list[tuple[float, float, float]]:
    """Centre x, centre y and size per frame: the ground truth the probe is tested against."""
    out = []
    for t in range(frames):
        if spec.motion in LINEAR:
            dx, dy = LINEAR[spec.motion]
            out.append((spec.x0 + dx * spec.speed * t, spec.y0 + dy * spec.speed * t, spec.radius))
        elif spec.motion == "circling":
            a = spec.phase + spec.speed * t
            out.append((spec.x0 + spec.orbit * math.cos(a), spec.y0 + spec.orbit * math.sin(a), spec.radius))
        else:
            grow = 1 + spec.speed * t / max(frames - 1, 1)
            out.append((spec.x0, spec.y0, spec.radius * grow))
    return out


def _backgrounds(specs, size: int, device) -> torch.Tensor:
    """[B, H, W, 3]: grey level, plus a static low-contrast texture of three sinusoids for 'textured'
    (parameters drawn on the host from each spec's bg_seed, then one batched evaluation)."""
    waves = []
    for spec in specs:
        g = random.Random(spec.bg_seed)
        rows = [(g.uniform(-0.5, 0.5), g.uniform(-0.5, 0.5), g.uniform(0, 6.3)) for _ in range(3)]
        amp = 0.05 if spec.background == "textured" else 0.0
        waves.append([(fx, fy, ph, amp) for fx, fy, ph in rows])
    w = torch.tensor(waves, device=device, dtype=torch.float32)                 # [B, 3, 4]
    level = torch.tensor([s.bg_level for s in specs], device=device, dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float32),
                            torch.arange(size, device=device, dtype=torch.float32), indexing="ij")
    arg = w[..., 0, None, None] * xs + w[..., 1, None, None] * ys + w[..., 2, None, None]   # [B, 3, H, W]
    bg = level[:, None, None] + (w[..., 3, None, None] * torch.sin(arg)).sum(dim=1)
    return bg.clamp(0, 1)[..., None].expand(-1, -1, -1, 3).contiguous()


def _signed_distance(shape: str, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    if shape == "circle":
        return torch.sqrt(px * px + py * py) - r
    if shape == "square":
        return torch.maximum(px.abs(), py.abs()) - 0.85 * r
    # equilateral triangle pointing up (image y down), circumradius 1.4 r (about the circle's area):
    # three half-planes at the inradius, half the circumradius
    d = None
    for angle in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):  # outward normals
        nx, ny = math.cos(angle), math.sin(angle)
        e = px * nx + py * ny - 0.7 * r
        d = e if d is None else torch.maximum(d, e)
    return d


def render(specs, frames: int = FRAMES, size: int = SIZE, device="cpu") -> torch.Tensor:
    """Frames of ``specs`` as a float tensor [B, T, H, W, 3] in 0..1 (the layout of ComfyUI's IMAGE)."""
    specs = list(specs)
    video = _backgrounds(specs, size, device)[:, None].repeat(1, frames, 1, 1, 1)
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    by_shape: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_shape.setdefault(spec.shape, []).append(i)
    for shape, rows in by_shape.items():
        tr = torch.tensor([track(specs[i], frames) for i in rows], device=device, dtype=torch.float32)
        cx, cy, r = (tr[..., k][..., None, None] for k in range(3))            # [b, T, 1, 1]
        px = coords[None, None, None, :] - cx
        py = coords[None, None, :, None] - cy
        cover = torch.sigmoid(-_signed_distance(shape, px, py, r) * 2.5)[..., None]   # ~1 px soft edge
        colour = torch.tensor([COLOURS[specs[i].colour] for i in rows], device=device)[:, None, None, None]
        idx = torch.tensor(rows, device=device)
        video[idx] = video[idx] * (1 - cover) + colour * cover
    return video


def prompt_for(shape: str, colour: str, motion: str, phrase: int = 0) -> str:
    """The evaluation prompt of one (colour, shape, motion): the first template and phrasing."""
    return TEMPLATES[0].format(colour=colour, shape=shape, motion=MOTION_PHRASES[motion][phrase], background="")


def held_out_prompts(count: int, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """``count`` (prompt, shape, colour, motion) for held-out pairs, colours cycling deterministically."""
    rng = random.Random(f"toy-world/held-out/{seed}")
    colours = list(COLOURS)
    out = []
    for k in range(count):
        shape, motion = HELD_OUT[k % len(HELD_OUT)]
        colour = colours[(k + rng.randrange(len(colours))) % len(colours)]
        out.append((prompt_for(shape, colour, motion), shape, colour, motion))
    return out


def in_distribution_prompts(count: int, seed: int = 0) -> list[tuple[str, str, str, str]]:
    rng = random.Random(f"toy-world/in-dist/{seed}")
    out = []
    while len(out) < count:
        shape, motion, colour = rng.choice(SHAPES), rng.choice(MOTIONS), rng.choice(tuple(COLOURS))
        if (shape, motion) in HELD_OUT or motion == RARE_MOTION:
            continue
        out.append((prompt_for(shape, colour, motion), shape, colour, motion))
    return out
