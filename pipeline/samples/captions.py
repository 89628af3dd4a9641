"""A noisy captioner for generated clips: what an automatic captioner gives a pre-training run, in miniature.

Each caption describes the object (colour, shape) correctly and the motion correctly only with probability
``accuracy``; otherwise it names another motion, drawn uniformly. Motions are worded by several paraphrases and
sentences by several templates, so captions of one class are not one fixed phrase. Speed and background are never
mentioned: a probe of them measures what the video side learned on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.samples.synthetic import Look

PARAPHRASES = {
    "left_to_right": ("drifting east", "gliding towards the right edge", "travelling rightwards"),
    "right_to_left": ("retreating westward", "sliding back to the left side", "heading off leftwards"),
    "top_to_bottom": ("sinking downwards", "falling towards the floor", "dropping lower and lower"),
    "bottom_to_top": ("climbing upwards", "rising towards the sky", "lifting higher and higher"),
    "circle": ("orbiting around in a loop", "going round in circles", "spinning along a ring"),
    "static": ("standing still", "not moving at all", "resting in place"),
}
TEMPLATES = ("a {colour} {shape} {motion}", "the {colour} {shape} is {motion}", "{motion}: a {shape} coloured {colour}",
             "video of a {shape}, {colour}, {motion}")


@dataclass(frozen=True)
class NoisyCaption:
    text: str
    described_motion: str  # the motion the caption names (the true one with probability ``accuracy``)


def noisy_caption(motion: str, look: Look, motions: tuple[str, ...], accuracy: float,
                  rng: np.random.Generator) -> NoisyCaption:
    """A caption of a clip showing ``motion`` with ``look``; wrong motions are drawn from ``motions``."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"caption accuracy must be in [0, 1], got {accuracy}")
    others = [m for m in motions if m != motion]
    described = motion if rng.random() < accuracy or not others else str(rng.choice(others))
    phrase = str(rng.choice(PARAPHRASES[described]))
    template = str(rng.choice(TEMPLATES))
    return NoisyCaption(template.format(colour=look.colour, shape=look.shape, motion=phrase), described)
