"""The transport registry: a URL scheme picks a transport class, imported only when a URL asks for it.

What it is
    ``create_transport(url, domains=..., options=...)`` (the agent's side) and
    ``create_requester(url, options=...)`` (the service's side) turn a connection URL into an
    unconnected ``Transport`` / ``Requester``. Built-in schemes map to ``"module:Class"`` strings
    (``TRANSPORT_ALIASES``, ``REQUESTER_ALIASES``); third-party packages add schemes through entry
    points in the groups ``cloudprov.transports`` and ``cloudprov.requesters`` (entry point name =
    scheme, value = ``"module:Class"``); a dotted path may stand in place of a scheme
    (``mypkg.bus:BusTransport://host/queue``). An unknown scheme is refused with "did you mean …?".

Connection URL / options
    ``local://[broker]``, ``http[s]://host:port/base/path``, ``amqp[s]://user:pass@host/vhost``,
    ``sb://namespace.servicebus.windows.net``. Settings come from the URL query string and from the
    ``options`` mapping (configuration file); ``options`` wins over the query string.

Guarantees
    Nothing but this module is imported until a URL needs it, so a missing optional dependency
    (aio-pika, azure-servicebus) only matters to the scheme that uses it, and its error names the
    extra to install.

How to write a transport (every built-in follows this shape)
    * The transport class offers ``from_url(url, *, domains, options) -> Self`` as a classmethod,
      the requester class ``from_url(url, *, options) -> Self``. Both return unconnected objects:
      no I/O happens before ``connect()`` / ``async with``.
    * Settings are a frozen dataclass, one field per setting with a default that works. Read them
      with ``read_settings(SettingsClass, url, options, **from_authority)``: each field is looked up in
      ``options``, then in the URL query string, then in ``from_authority`` (what the transport read
      from the URL's host and path), converted to the field's annotated type (``str``, ``int``,
      ``float``, ``bool``, ``tuple[str, ...]`` or ``X | None``); unknown names are refused with
      "did you mean …?". The constructor takes the dataclass: ``LocalTransport(domains, settings)``.
    * Parse the URL with ``split_url`` rather than ``urlsplit``: it also reads a dotted-path URL.
    * The module opens with the docstring template used here: what it is / connection URL and
      options / guarantees.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

from transports.base import Requester, Transport, TransportError

TRANSPORT_GROUP = "cloudprov.transports"
REQUESTER_GROUP = "cloudprov.requesters"

TRANSPORT_ALIASES: dict[str, str] = {
    "local": "transports.local:LocalTransport",
    "http": "transports.http:HttpTransport",
    "https": "transports.http:HttpTransport",
    "amqp": "transports.amqp:AmqpTransport",
    "amqps": "transports.amqp:AmqpTransport",
    "sb": "transports.servicebus:ServiceBusTransport",
}

REQUESTER_ALIASES: dict[str, str] = {
    "local": "transports.local:LocalRequester",
    "http": "transports.http:HttpRequester",
    "https": "transports.http:HttpRequester",
    "amqp": "transports.amqp:AmqpRequester",
    "amqps": "transports.amqp:AmqpRequester",
    "sb": "transports.servicebus:ServiceBusRequester",
}

#: The ``pip install 'cloudprov[extra]'`` that brings a scheme's optional dependency.
EXTRAS: dict[str, str] = {"amqp": "amqp", "amqps": "amqp", "sb": "servicebus"}

S = TypeVar("S")


class UnknownTransportError(TransportError, LookupError):
    """No transport is registered for a URL's scheme (the message suggests the nearest one)."""


class TransportSettingsError(TransportError, ValueError):
    """A transport setting is unknown or its value cannot be read (the message names it)."""


def create_transport(url: str, *, domains: Sequence[str], options: Mapping[str, Any] | None = None) -> Transport:
    """An unconnected ``Transport`` consuming the request queues of ``domains``, chosen by the URL's scheme."""
    if isinstance(domains, str) or not domains:
        raise TransportSettingsError("domains must be a non-empty sequence of domain names")
    cls = load_class(_scheme_of(url), Transport)
    transport = _from_url(cls, url, domains=tuple(domains), options=dict(options or {}))
    if not isinstance(transport, Transport):
        raise TypeError(f"{cls.__qualname__}.from_url returned {type(transport).__name__}, not a Transport")
    return transport


def create_requester(url: str, *, options: Mapping[str, Any] | None = None) -> Requester:
    """An unconnected ``Requester`` for the transport named by the URL's scheme."""
    cls = load_class(_scheme_of(url), Requester)
    requester = _from_url(cls, url, options=dict(options or {}))
    if not isinstance(requester, Requester):
        raise TypeError(f"{cls.__qualname__}.from_url returned {type(requester).__name__}, not a Requester")
    return requester


def known_schemes(kind: type[Transport] | type[Requester] = Transport) -> list[str]:
    """Every scheme that resolves for ``kind``: built-in aliases and installed entry points."""
    aliases, group = _table(kind)
    return sorted({*aliases, *(ep.name for ep in entry_points(group=group))})


def resolve(name: str, kind: type[Transport] | type[Requester] = Transport) -> str:
    """The ``"module:Class"`` path for a scheme or dotted path, without importing anything."""
    if ":" in name:
        return name
    aliases, group = _table(kind)
    scheme = name.lower()
    if scheme in aliases:
        return aliases[scheme]
    for ep in entry_points(group=group, name=scheme):
        return ep.value
    known = known_schemes(kind)
    close = difflib.get_close_matches(scheme, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownTransportError(f"no {kind.__name__.lower()} for scheme {scheme!r}{hint} (known: {', '.join(known)})")


def load_class(name: str, kind: type[Transport] | type[Requester]) -> type[Any]:
    """Import the class a scheme or dotted path names and check it is a ``kind``."""
    path = resolve(name, kind)
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(name.lower())
        hint = f" (pip install 'cloudprov[{extra}]')" if extra and exc.name != module_name else ""
        raise UnknownTransportError(
            f"{kind.__name__.lower()} {name!r} needs module {module_name!r}: {exc}{hint}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UnknownTransportError(f"{path!r}: module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, kind)):
        raise TypeError(f"{path!r} is not a {kind.__name__} class")
    return obj


def read_settings(cls: type[S], url: str, options: Mapping[str, Any] | None = None, **from_authority: Any) -> S:
    """Build the settings dataclass ``cls`` from ``options``, then the URL query, then ``from_authority``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values: dict[str, Any] = dict(from_authority)
    values.update(parse_qsl(split_url(url).query, keep_blank_values=True))
    values.update(options or {})
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TransportSettingsError(
                f"unknown setting {key!r} for {cls.__name__}{hint} (known: {', '.join(names)})"
            )
    converted = {key: _convert(key, value, hints[key]) for key, value in values.items()}
    return cls(**converted)


def _scheme_of(url: str) -> str:
    head, sep, _ = url.partition("://")
    if not sep or not head:
        # not repeated: without a scheme, a password in the URL cannot be told apart and masked
        raise UnknownTransportError("not a transport URL (expected scheme://…, e.g. local://)")
    return head


def split_url(url: str) -> SplitResult:
    """``urlsplit`` that also reads ``module:Class://rest`` (the dotted path comes back as the scheme)."""
    head, sep, rest = url.partition("://")
    if sep and ":" in head:
        return urlsplit(f"x://{rest}")._replace(scheme=head)
    return urlsplit(url)


def _table(kind: type[Transport] | type[Requester]) -> tuple[dict[str, str], str]:
    if issubclass(kind, Requester):
        return REQUESTER_ALIASES, REQUESTER_GROUP
    return TRANSPORT_ALIASES, TRANSPORT_GROUP


def _from_url(cls: type[Any], url: str, **kwargs: Any) -> object:
    factory = getattr(cls, "from_url", None)
    if factory is None:
        raise TypeError(f"{cls.__qualname__} has no from_url classmethod (see transports.registry)")
    return factory(url, **kwargs)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in {"", "none", "null"}):
            return None
        return _convert(name, value, args[0])
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise TransportSettingsError(f"setting {name!r} must be a list, got {value!r}")
        return tuple(str(v) for v in value)
    wrong = TransportSettingsError(f"setting {name!r} must be {getattr(hint, '__name__', hint)}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text not in _TRUE | _FALSE:
            raise wrong
        return text in _TRUE
    if hint in (int, float, str):
        if isinstance(value, bool) and hint is not str:
            raise wrong
        try:
            return hint(value)
        except ValueError:
            raise wrong from None
    return value
