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

    def __init__(
        self,
        scale: float = 1.0,
        shift: float = 0.0,
        clock: FakeClock | None = None,
        seconds_per_tile: float = 0.0,
        classes: int = 2,
    ):
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


def run_report(**changes):
    """A complete run report (pantherseg.run_report.RunReport) with ``changes``: for code that reads reports."""
    from pantherseg.engine.outcomes import MemberOutcome, MemberStatus
    from pantherseg.run_report import OutputRecord, RunReport

    fields = dict(
        task="t1",
        input={"path": "/in/case.mha", "size_xyz": [4, 5, 6]},
        output=OutputRecord(
            path="/out/case.mha",
            paths=("/out/case.mha", "/out/case.seg.dcm"),
            tumor_voxels=12,
            tumor_volume_mm3=36.0004,
            tumor_statistics={"volume_ml": 0.036},
        ),
        device="cpu (torch, float32)",
        weights="/weights",
        config="/ensemble_config.json",
        members=(
            MemberOutcome("a", "all-rounder", 1.0, MemberStatus.RAN, tiles_done=3, tiles_total=3, network_s=1.5),
            MemberOutcome("b", "volume", 2.0, MemberStatus.SKIPPED, reason="projected 400 s"),
        ),
        timings_s={"read": 0.25, "network": 1.5},
        notes=("a note",),
        quality={"score": 0.8, "review": False, "reasons": []},
        run_hash="ab" * 32,
        software={"pantherseg": "0"},
    )
    fields.update(changes)
    return RunReport(**fields)
