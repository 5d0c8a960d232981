"""What happened to each member in one prediction: its status, the reason, its tiles and time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger("pantherseg.engine.ensemble")


class MemberStatus(str, Enum):
    """A member's status after a prediction; ``ran`` and ``partial`` put its map in the mean."""

    PENDING = "pending"
    RAN = "ran"  # every tile
    PARTIAL = "partial"  # the deadline stopped it, kept because no other member had finished
    SKIPPED = "skipped"  # not run: it would not have finished, or the image is constant
    STOPPED = "stopped"  # the deadline stopped it and another member had finished: dropped

    @property
    def used(self) -> bool:
        return self in (MemberStatus.RAN, MemberStatus.PARTIAL)

    def __str__(self) -> str:
        return self.value


@dataclass
class MemberOutcome:
    """What happened to one member in one prediction (filled in as it runs)."""

    name: str
    role: str
    weight: float
    status: MemberStatus = MemberStatus.PENDING
    reason: str = ""
    tiles_done: int = 0
    tiles_total: int = 0
    network_s: float = 0.0

    def settle(self, status: MemberStatus, reason: str) -> None:
        """A status other than plain 'ran', with the reason the run report and the log give."""
        self.status, self.reason = MemberStatus(status), reason
        log.warning("%s (%s): %s", self.name, self.status, reason)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "weight": self.weight,
            "status": self.status.value,
            "reason": self.reason,
            "tiles_done": self.tiles_done,
            "tiles_total": self.tiles_total,
            "network_s": self.network_s,
        }
