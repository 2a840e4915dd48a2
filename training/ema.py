"""Exponential moving average of the trainable weights.

Only parameters that require gradients are shadowed: the frozen autoencoder is never copied, yet
`state_dict` returns the model's full state dict (autoencoder included) with the averages in place,
which is the published `model_ema` layout.
"""
from contextlib import contextmanager

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        # Each weight by its state-dict key, which a module may name otherwise than its attribute path
        # (models/checkpoint_format.py's PUBLISHED_KEYS): the keys are what `model_ema` holds.
        key_of = {id(tensor): key for key, tensor in model.state_dict(keep_vars=True).items()}
        named = [(key_of[id(p)], p) for p in model.parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self):
        """shadow <- rate * shadow + (1 - rate) * param, on the parameters' device (no host sync)."""
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.rate)

    def state_dict(self, model: nn.Module) -> dict:
        state = model.state_dict()
        for name, value in zip(self.names, self.shadow):
            state[name] = value.detach().clone()
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict, source: str = "model_ema"):
        missing = [name for name in self.names if name not in state]
        if missing:
            raise ValueError(f"{source}: EMA state lacks {len(missing)} trainable weights, e.g. {missing[0]}")
        for name, value in zip(self.names, self.shadow):
            if state[name].shape != value.shape:
                raise ValueError(f"{source}: EMA weight {name} is {list(state[name].shape)}, "
                                 f"the model's {list(value.shape)}")
            value.copy_(state[name])

    @contextmanager
    def applied(self):
        """Temporarily put the averages into the model (for sampling); the live weights come back after."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, live)
