"""Fake networks whose output is known exactly, and a clock that only moves when told to."""

from __future__ import annotations

import torch


class FakeClock:
    def __init__(self, start: float = 0.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class EchoNetwork(torch.nn.Module):
    """Two-class logits [0, scale * x + shift]: the tumour logit is the (normalised) intensity.

    Every forward pass costs ``seconds_per_tile`` per tile on ``clock`` when one is given.
    """

    def __init__(self, scale: float = 1.0, shift: float = 0.0, clock: FakeClock | None = None,
                 seconds_per_tile: float = 0.0, classes: int = 2):
        super().__init__()
        self.scale, self.shift, self.clock, self.seconds_per_tile = scale, shift, clock, seconds_per_tile
        self.classes = classes
        self.tiles_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tiles_seen += x.shape[0]
        if self.clock is not None:
            self.clock.advance(self.seconds_per_tile * x.shape[0])
        tumour = self.scale * x[:, :1] + self.shift
        others = [torch.zeros_like(tumour)] * (self.classes - 1)
        return torch.cat([others[0], tumour, *others[1:]], dim=1)
