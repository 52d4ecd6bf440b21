"""Sub-commands of the vrlms-edge CLI, one module per group."""

from __future__ import annotations

from types import ModuleType

from vrlms_edge.commands import discover, serve

COMMAND_GROUPS: list[ModuleType] = [serve, discover]
