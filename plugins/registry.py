"""The directory plugin registry: a name from config picks a plugin, imported only when used.

``create_directory(name, settings)`` validates ``settings`` (a mapping from the config file's
``directory`` section) with the plugin's settings model and returns an unopened ``Directory``.
Built-ins: ``memory`` and ``ldap``; third-party plugins register an entry point in the group
``cloudprov.directories`` whose value is ``"module:DirectoryClass"``, the class carrying its pydantic
settings model as ``Settings``. An unknown name is refused with "did you mean …?".
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from plugins.directory import Directory, DirectoryError

#: name → ("module:DirectoryClass", "module:SettingsClass")
DIRECTORY_ALIASES: dict[str, tuple[str, str]] = {
    "memory": ("plugins.memory:MemoryDirectory", "plugins.memory:MemorySettings"),
    "ldap": ("plugins.ldap:LdapDirectory", "plugins.ldap:LdapSettings"),
}
_EXTRAS = {"ldap": "ldap"}


class UnknownPluginError(DirectoryError):
    """No directory plugin has that name."""


class PluginSettingsError(DirectoryError):
    """The plugin's settings are invalid; the message names each key and problem."""


def _load(target: str, name: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(name)
        hint = f" (install it with: pip install 'cloudprov[{extra}]')" if extra else ""
        raise UnknownPluginError(f"directory plugin {name!r} cannot be imported: {exc}{hint}") from exc
    return getattr(module, attribute)


def known_plugins() -> list[str]:
    names = set(DIRECTORY_ALIASES)
    names.update(ep.name for ep in entry_points(group="cloudprov.directories"))
    return sorted(names)


def plugin_classes(name: str) -> tuple[type[Directory], type[BaseModel]]:
    """The directory class and its settings model for plugin ``name``."""
    if name in DIRECTORY_ALIASES:
        directory_target, settings_target = DIRECTORY_ALIASES[name]
        return _load(directory_target, name), _load(settings_target, name)
    for ep in entry_points(group="cloudprov.directories"):
        if ep.name == name:
            directory_class = ep.load()
            return directory_class, directory_class.Settings
    suggestion = difflib.get_close_matches(name, known_plugins(), n=1)
    hint = f"; did you mean {suggestion[0]!r}?" if suggestion else ""
    raise UnknownPluginError(f"unknown directory plugin {name!r}{hint} (known: {', '.join(known_plugins())})")


def create_directory(name: str, settings: Mapping[str, Any] | BaseModel | None = None) -> Directory:
    """An unopened directory of plugin ``name`` with validated ``settings``."""
    directory_class, settings_class = plugin_classes(name)
    if isinstance(settings, BaseModel):
        validated = settings
    else:
        try:
            validated = settings_class.model_validate(dict(settings or {}))
        except ValidationError as exc:
            problems = "; ".join(f"directory.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise PluginSettingsError(f"invalid settings for directory plugin {name!r}: {problems}") from None
    directory: Directory = directory_class(validated)  # type: ignore[call-arg]
    return directory
