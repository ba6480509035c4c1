"""Settings the control plane hands out at bootstrap, applied to the running agent.

What it is
    The control plane's settings (``PATCH /v1/admin/settings`` with ``{key: value | null}``) reach
    every agent in its bootstrap answer as a flat mapping of dotted keys, with a version. When the
    version changes, ``overlay(file_settings, remote)`` lays the keys an agent can change while it
    runs over its own file and environment settings, and ``Agent.apply_settings`` puts the result
    to work. A key the control plane drops returns to the file's value.

Live keys
    ``logging.level``; ``signing.clock_skew``, ``signing.max_lifetime``;
    ``dispatcher.max_deliveries``, ``dispatcher.grace_period``; ``scim.max_page_size``,
    ``scim.default_page_size``, ``scim.cursor_ttl``, ``scim.max_cursors``.

Guarantees
    - Each value is validated against the setting it names, by its section (the same rules as the
      file: finite numbers, no ``true`` for a number, the bounds of ``signing``); a value that does
      not validate is skipped with the reason, the others still apply.
    - Any other key is skipped with the reason: a known setting that needs a restart (the transport,
      the directory, ...), or an unknown one. Skipped keys never stop the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config import AgentSettings

LIVE_KEYS = frozenset(
    {
        "logging.level",
        "signing.clock_skew",
        "signing.max_lifetime",
        "dispatcher.max_deliveries",
        "dispatcher.grace_period",
        "scim.max_page_size",
        "scim.default_page_size",
        "scim.cursor_ttl",
        "scim.max_cursors",
    }
)


def overlay(base: AgentSettings, remote: Mapping[str, Any]) -> tuple[AgentSettings, dict[str, str]]:
    """``base`` with the live keys of ``remote`` applied, and the skipped keys with the reason for each."""
    skipped: dict[str, str] = {}
    updates: dict[str, dict[str, Any]] = {}
    for key, value in sorted(remote.items()):
        section_name, _, field_name = key.partition(".")
        if key not in LIVE_KEYS:
            skipped[key] = "needs an agent restart" if _known(section_name, field_name) else "not an agent setting"
            continue
        section: BaseModel = getattr(base, section_name)
        try:  # the whole section, so its configuration and validators apply, not only the field's type
            checked = getattr(type(section).model_validate({**dict(section), field_name: value}), field_name)
        except ValidationError as error:
            skipped[key] = "; ".join(e["msg"] for e in error.errors())
            continue
        updates.setdefault(section_name, {})[field_name] = checked
    sections = {name: getattr(base, name).model_copy(update=fields) for name, fields in updates.items()}
    return base.model_copy(update=sections), skipped


def _known(section_name: str, field_name: str) -> bool:
    """Whether ``section.field`` names a setting (any key of a section that takes extra keys: the directory's)."""
    section = AgentSettings.model_fields.get(section_name)
    model = section.annotation if section is not None else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or not field_name:
        return False
    return field_name in model.model_fields or model.model_config.get("extra") == "allow"
