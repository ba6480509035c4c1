"""The configuration file format the agent and the service both read.

One YAML mapping of sections. String values may reference the environment as ``${NAME}`` or
``${NAME:-default}``; secrets (and keys, CA bundles) may be ``file:/path`` to read a mounted file.
Numbers are finite (``.inf`` and ``.nan`` are refused) and never ``true``/``false`` (not taken as 1 and 0).
``write_private`` writes a secret file (keys, certificates) readable by its owner only.
Environment variables named ``<PREFIX>SECTION__KEY`` override the file: scalars stay text (pydantic
converts ``"5"`` or ``"true"`` where a field wants a number or a flag, and an id such as ``0042``
stays ``0042``); ``[a, b]`` and ``{k: v}`` are parsed as YAML. Every failure is a
``ConfigFileError`` whose message names the file and each faulty key with its problem.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from protocol.errors import ProtocolError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
Model = TypeVar("Model", bound=BaseModel)


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number: ``int``, ``float``, or a union of them with ``None``."""
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(kinds) and all(_numeric(kind) for kind in kinds)
    return annotation in (int, float)


class Section(BaseModel):
    """A configuration section: frozen, and an unknown key is an error (a typo is never ignored).

    A number must be finite (NaN and infinities would disable every bound) and may not be a boolean
    (pydantic would take ``true`` as 1); text such as ``"5"`` from an environment variable still converts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _numeric(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("bool_not_number", "Input should be a number, not true or false")
        return value


class LoggingSection(Section):
    """Logs: structured, JSON when not on a terminal (both processes)."""

    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Lowest level logged.")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json in containers; console on a terminal; auto: console when the log is a TTY."
    )


class HealthServer(Section):
    """The health and metrics HTTP server both processes run (``/healthz``, ``/readyz``, ``/metrics``)."""

    enabled: bool = Field(default=True, description="Serve /healthz, /readyz and /metrics on their own port.")
    host: str = Field(
        default="0.0.0.0",  # noqa: S104  # probes come from the kubelet over the pod IP, not loopback
        description="Address to listen on: 0.0.0.0 so a kubelet can probe a container; 127.0.0.1 on a shared VM.",
    )
    port: int = Field(default=8081, ge=0, le=65535, description="Port to listen on (0: a free port, logged at start).")
    heartbeat_interval: float = Field(default=1.0, gt=0, description="Seconds between event-loop heartbeats.")
    max_loop_lag: float = Field(
        default=10.0, gt=0, description="/healthz fails when the last heartbeat is this many seconds overdue."
    )


class ConfigFileError(ProtocolError):
    """The configuration is invalid; the message lists each faulty key and what is wrong with it."""


def read_file_ref(value: Any) -> Any:
    """``file:/run/secrets/x`` → the file's content without the trailing newline (other values as given)."""
    if isinstance(value, str) and value.startswith("file:"):
        path = Path(value.removeprefix("file:"))
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:  # the codec's message would quote the file's bytes
            raise ValueError(f"cannot read secret file {str(path)!r}: not UTF-8 text") from None
    return value


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigFileError(f"{where}: environment variable {name} is not set (referenced as ${{{name}}})")

    return _ENV_REF.sub(substitute, value)


def env_overrides(env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """``<prefix>TRANSPORT__URL=x`` → ``{"transport": {"url": "x"}}``.

    Two variables for the same key, or one for a section and one for a key inside it
    (``<prefix>TRANSPORT`` and ``<prefix>TRANSPORT__URL``), are a ``ConfigFileError`` naming both.
    """
    tree: dict[str, Any] = {}
    setters: dict[tuple[str, ...], str] = {}  # each key path → the variable that sets it
    for name, raw in env.items():
        if not name.startswith(prefix):
            continue
        path = [part.lower() for part in name.removeprefix(prefix).split("__") if part]
        if not path:
            continue
        for other_path, other in setters.items():
            (outer, outer_name), (inner, inner_name) = sorted([(tuple(path), name), (other_path, other)])
            if inner[: len(outer)] != outer:
                continue
            if inner == outer:
                first, second = sorted((outer_name, inner_name))
                raise ConfigFileError(f"environment variables {first} and {second} both set {'.'.join(outer)}")
            raise ConfigFileError(
                f"environment variables {outer_name} and {inner_name} conflict: the first sets all of "
                f"{'.'.join(outer)}, the second {'.'.join(inner)} inside it; unset one of them"
            )
        setters[tuple(path)] = name
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            parsed = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            parsed = raw
        node[path[-1]] = parsed if isinstance(parsed, list | dict) else raw
    return tree


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, section by section."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where (line, column), without the source line: it may hold a secret."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({error.context})" if error.context and error.problem else ""
        return f"{error.problem or error.context}{context}{where}"
    if isinstance(error, yaml.reader.ReaderError):
        return f"{error.reason} (character #x{error.character:04x})"
    return type(error).__name__


def read_config(path: str | Path | None, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """The YAML file at ``path`` (None: empty), interpolated, with environment overrides laid over it."""
    source = str(path) if path else "defaults"
    data: Any = {}
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigFileError(f"{source}: cannot read the configuration file: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise ConfigFileError(
                f"{source}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save the file as UTF-8"
            ) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigFileError(f"{source}: the top level must be a mapping of sections, not {type(data).__name__}")
    return merge(interpolate(data, env), env_overrides(env, prefix))


def load_model(model: type[Model], path: str | Path | None, env: Mapping[str, str], prefix: str) -> Model:
    """Read the file (see ``read_config``) and validate it into ``model``."""
    data = read_config(path, env, prefix)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(format_validation_error(exc, str(path) if path else "defaults")) from None
