"""What a retrain's parent run tells: why it ran, what it trained on, what was decided."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Story:
    """What the parent run's page tells: why it ran, what it trained on, what was decided."""

    decision: str = "running"
    reason: str = ""
    champion: str = ""  # the version it started from
    candidate: str = ""  # the version it registered
    window: tuple[str, str] = ("", "")
    children: dict[str, Any] = field(default_factory=dict)  # step -> its run
