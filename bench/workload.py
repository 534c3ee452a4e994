"""The events the benchmarks record: what a ladder bot's slash command leaves behind.

Deterministic (seeded) so two runs record the same bytes, and varied from event to event (ids,
names, latencies) so nothing benefits from recording the same object twice.
"""

from __future__ import annotations

import json
import random
from typing import Any

__all__ = ["TOPIC", "command_events", "serialise"]

TOPIC = "command_calls"

_COMMANDS = ("leaderboard", "queue", "profile", "match", "stats", "leave", "help")
_NAMES = ("Sora", "Kairi", "Riku", "Aqua", "Terra", "Ventus", "Namine", "Roxas", "Xion", "Lea")
_OUTCOMES = ("ok", "ok", "ok", "ok", "ok", "ok", "ok", "denied", "error")


def command_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Return ``n`` command events of about 200 bytes each once serialised."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        command = rng.choice(_COMMANDS)
        out.append(
            {
                "discord_uid": rng.randrange(10**17, 10**18),
                "player_name": f"{rng.choice(_NAMES)}#{rng.randrange(10000):04d}",
                "command": command,
                "options": {"page": rng.randrange(1, 20)} if command == "leaderboard" else {"i": i},
                "guild_id": rng.randrange(10**17, 10**18),
                "channel_id": rng.randrange(10**17, 10**18),
                "outcome": rng.choice(_OUTCOMES),
                "latency_ms": round(rng.uniform(0.5, 40.0), 1),
            }
        )
    return out


def serialise(event: dict[str, Any]) -> str:
    """Serialise an event as the outbox does (compact separators, UTF-8 kept)."""
    return json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
