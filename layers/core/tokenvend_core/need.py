"""What a caller needs of a connection's current token: shared by vending and refreshing,
and kept apart so that the vend function imports nothing of the refresh side."""

from __future__ import annotations

from dataclasses import dataclass

from tokenvend_core.aws.store import ConnectionState


@dataclass(frozen=True, slots=True)
class Need:
    """What a caller needs of the current token before it will take it. `skew` is how far
    another container's clock may be ahead: a token is treated as expiring that much early."""

    min_ttl: float = 0
    rejected_sha256: str | None = None
    newer_than: int | None = None
    skew: float = 0

    def met_by(self, state: ConnectionState | None, now: float) -> bool:
        at = now + self.skew
        if state is None or not state.valid(at):
            return False
        if state.remaining(at) < self.min_ttl:
            return False
        if self.rejected_sha256 and state.token_sha256() == self.rejected_sha256:
            return False
        return self.newer_than is None or state.version > self.newer_than
