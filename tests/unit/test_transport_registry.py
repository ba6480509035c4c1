"""The transport registry: schemes, dotted paths, entry points, lazy imports and settings read as data."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from transports import registry
from transports.local import LocalRequester, LocalTransport
from transports.registry import (
    TransportSettingsError,
    UnknownTransportError,
    create_requester,
    create_transport,
    read_settings,
    resolve,
)

ROOT = Path(__file__).resolve().parents[2]


def test_local_scheme_gives_local_pair() -> None:
    """``local://`` resolves to the local transport on the agent side and the local requester on the other."""
    assert isinstance(create_transport("local://demo", domains=["d"]), LocalTransport)
    assert isinstance(create_requester("local://demo"), LocalRequester)


def test_every_builtin_scheme_is_registered() -> None:
    """The six built-in schemes name their classes, including those of transports written elsewhere."""
    from transports.base import Requester

    assert resolve("HTTPS") == "transports.http:HttpTransport"
    assert resolve("amqps") == "transports.amqp:AmqpTransport"
    assert resolve("sb") == "transports.servicebus:ServiceBusTransport"
    assert resolve("amqp", Requester) == "transports.amqp:AmqpRequester"
    assert resolve("sb", Requester) == "transports.servicebus:ServiceBusRequester"


def test_unknown_scheme_suggests_the_nearest() -> None:
    """A misspelt scheme is refused with "did you mean" and the list of known schemes."""
    with pytest.raises(UnknownTransportError, match=r"did you mean 'local'\?.*known: amqp, amqps, http"):
        create_transport("locl://demo", domains=["d"])


def test_url_without_scheme_is_refused() -> None:
    """A string that is not ``scheme://…`` is refused with an example of one."""
    with pytest.raises(UnknownTransportError, match="local://"):
        create_transport("demo", domains=["d"])


def test_dotted_path_stands_in_for_a_scheme() -> None:
    """``module:Class://rest`` loads that class and hands it the URL as given."""
    transport = create_transport("transports.local:LocalTransport://named", domains=["d"])
    assert isinstance(transport, LocalTransport)
    assert transport.settings.broker == "named"


def test_dotted_path_to_the_wrong_kind_is_refused() -> None:
    """A dotted path naming a requester where a transport is wanted is a ``TypeError``, not a late crash."""
    with pytest.raises(TypeError, match="is not a Transport"):
        create_transport("transports.local:LocalRequester://x", domains=["d"])


def test_missing_module_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered scheme whose module cannot be imported fails with the module's name."""
    monkeypatch.setitem(registry.TRANSPORT_ALIASES, "ghost", "transports.ghost:GhostTransport")
    with pytest.raises(UnknownTransportError, match=r"needs module 'transports\.ghost'"):
        create_transport("ghost://x", domains=["d"])


def test_entry_points_add_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party scheme comes in through the ``cloudprov.transports`` / ``cloudprov.requesters`` groups."""
    installed = [
        EntryPoint("mem", "transports.local:LocalTransport", registry.TRANSPORT_GROUP),
        EntryPoint("mem", "transports.local:LocalRequester", registry.REQUESTER_GROUP),
    ]

    def fake_entry_points(*, group: str, name: str | None = None) -> list[EntryPoint]:
        return [ep for ep in installed if ep.group == group and (name is None or ep.name == name)]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert isinstance(create_transport("mem://x", domains=["d"]), LocalTransport)
    assert isinstance(create_requester("mem://x"), LocalRequester)
    with pytest.raises(UnknownTransportError, match="did you mean 'mem'"):
        create_transport("mme://x", domains=["d"])


def test_lookup_imports_only_what_the_url_needs() -> None:
    """Importing the registry and creating a local transport imports neither the http module nor aiohttp."""
    code = (
        "import sys\n"
        "from transports.registry import create_transport\n"
        "create_transport('local://', domains=['d'])\n"
        "print(sorted(m for m in ('transports.http', 'aiohttp', 'transports.amqp', 'aio_pika') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_domains_must_be_a_list() -> None:
    """A bare string for ``domains`` is refused rather than read as one domain per character."""
    with pytest.raises(TransportSettingsError, match="domains"):
        create_transport("local://", domains="example.test")


@dataclass(frozen=True)
class _Settings:
    name: str = "x"
    size: int | None = None
    ratio: float = 1.0
    enabled: bool = False
    tags: tuple[str, ...] = ()


def test_settings_are_read_and_converted() -> None:
    """URL query values are converted to the declared types; options win over the query string."""
    url = "local://b?size=10&ratio=0.5&enabled=yes&tags=a,b&name=query"
    settings = read_settings(_Settings, url, {"name": "option"})
    assert settings == _Settings(name="option", size=10, ratio=0.5, enabled=True, tags=("a", "b"))
    assert read_settings(_Settings, "local://b?size=none").size is None


def test_authority_values_yield_to_query_and_options() -> None:
    """Values the transport read from host and path are defaults that query and options override."""
    assert read_settings(_Settings, "local://b", name="from-host").name == "from-host"
    assert read_settings(_Settings, "local://b?name=q", name="from-host").name == "q"


@pytest.mark.parametrize(
    ("query", "options", "message"),
    [
        ("size=ten", {}, "'size' must be int"),
        ("enabled=maybe", {}, "'enabled' must be bool"),
        ("", {"size": True}, "'size' must be int"),
        ("sise=1", {}, "did you mean 'size'"),
    ],
)
def test_bad_settings_are_named(query: str, options: dict[str, Any], message: str) -> None:
    """An unreadable or unknown setting is refused with its name (and the nearest known one)."""
    with pytest.raises(TransportSettingsError, match=message):
        read_settings(_Settings, f"local://b?{query}", options)
