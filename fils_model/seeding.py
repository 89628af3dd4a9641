"""One seed for every RNG a training run draws from: Python's, numpy's (timm's Mixup/CutMix draw their mixing
weights and boxes from it) and torch's."""
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
