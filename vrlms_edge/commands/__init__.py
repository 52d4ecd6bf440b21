"""Sub-commands of the vrlms-edge CLI, one module per group."""

from __future__ import annotations

from types import ModuleType

from vrlms_edge.commands import (
    backup,
    cloud,
    demo,
    devices,
    discover,
    provision,
    roster,
    serve,
    simulate,
    sync,
    users,
)

COMMAND_GROUPS: list[ModuleType] = [
    serve,
    demo,
    users,
    devices,
    roster,
    backup,
    discover,
    provision,
    simulate,
    sync,
    cloud,
]
