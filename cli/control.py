"""``cloudprov service run``, ``cloudprov agent register`` and ``cloudprov admin …``: the control-plane commands.

The admin commands talk to the control plane's admin HTTP API (so they work against any replica and
from any machine): ``--url``/``--token``/``--ca-file`` or their environment variables
``CLOUDPROV_CONTROL_URL``/``CLOUDPROV_ADMIN_TOKEN``/``CLOUDPROV_CONTROL_CA``, or ``-c service.yaml``
to take all three from the service's own configuration. Errors a user can fix print one line, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from agent.logging import configure
from protocol.redaction import redact_text

if TYPE_CHECKING:
    from service.config import ServiceSettings
    from service.control.app import ControlPlaneServer
    from service.health import ServiceHealth


def cmd_service_run(args: argparse.Namespace) -> int:
    from service.config import ServiceConfigError, load_service_settings
    from service.control.app import ControlPlaneServer
    from service.health import ServiceHealth
    from service.store import StoreError

    try:
        settings = load_service_settings(args.config)
    except ServiceConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure(settings.logging.level, settings.logging.format)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with ControlPlaneServer(settings) as server, contextlib.AsyncExitStack() as stack:
            health = None
            if settings.health.enabled:
                health = ServiceHealth(settings.health, server=server, expect_scheduler=settings.provisioning.enabled)
                await stack.enter_async_context(health.serving())
            if settings.provisioning.enabled:
                await run_provisioning(settings, server, stop, health)
            else:
                await stop.wait()

    try:
        asyncio.run(serve())
    except (StoreError, OSError) as error:  # a store that cannot be opened, a port in use: one line, no password
        print(f"service: cannot start: {redact_text(str(error))}", file=sys.stderr)
        return 2
    return 0


async def run_provisioning(
    settings: ServiceSettings, server: ControlPlaneServer, stop: asyncio.Event, health: ServiceHealth | None = None
) -> None:
    """The provisioning scheduler next to the control plane: its endpoints, its active signing key
    (``health``: fed by the scheduler's cycle and progress hooks, told while the scheduler runs)."""
    from service.provisioning.jobs import Scheduler
    from service.provisioning.state import StateStore
    from service.provisioning.wiring import JobWiring

    plane = server.plane
    assert plane is not None, "the control plane server is not started"

    async def endpoints(domain: str) -> list[dict[str, Any]]:
        return (await plane.store.endpoints([domain])).get(domain, [])

    section = settings.provisioning
    async with (
        StateStore(settings.provisioning_state_url) as state,
        JobWiring(endpoints=endpoints, signer=plane.signer) as wiring,
    ):
        scheduler = Scheduler(
            state,
            client_for=wiring.client_for,
            target_for=wiring.target_for,
            rules_for=wiring.rules_for,
            replica=section.replica,
            poll=section.poll,
            on_progress=health.on_progress if health is not None else None,
            on_cycle=health.on_cycle if health is not None else None,
        )
        if health is not None:
            health.attach(state)
        try:
            await scheduler.run(stop)
        finally:
            if health is not None:
                health.detach()


def cmd_agent_register(args: argparse.Namespace) -> int:
    from agent.config import ConfigError, load_settings
    from agent.lifecycle import LifecycleError, register
    from agent.lifecycle.service import identity_of

    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if not (args.ca_file or args.ca_fingerprint):
        print("give --ca-file or --ca-fingerprint (printed by 'cloudprov admin token create')", file=sys.stderr)
        return 2
    try:
        ca_pem = Path(args.ca_file).read_text() if args.ca_file else None
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text (a PEM file is)"
        print(f"register: cannot read --ca-file {args.ca_file!r}: {problem}", file=sys.stderr)
        return 2
    state_dir = identity_of(settings).state_dir
    try:
        answer = asyncio.run(
            register(
                args.control_plane,
                args.token,
                args.agent_id or settings.agent.id,
                state_dir,
                ca_pem=ca_pem,
                ca_fingerprint_pin=args.ca_fingerprint,
            )
        )
    except (LifecycleError, ValueError) as error:
        print(f"registration failed: {error}", file=sys.stderr)
        return 2
    print(f"registered agent {answer['agent_id']} for domain {answer['domain']}; identity in {state_dir}")
    print("enable it: control_plane.enabled: true and control_plane.url in the agent's configuration")
    return 0


class AdminSetupError(Exception):
    """The admin command cannot say where or how to call: the message names the option, variable or file."""


def _seconds(option: str, value: float | None) -> float | None:
    """A duration option as given; NaN or an infinity (which JSON cannot carry) is refused in one line."""
    if value is not None and not math.isfinite(value):
        raise AdminSetupError(f"{option} must be a finite number of seconds, not {value!r}")
    return value


def _admin_target(args: argparse.Namespace) -> tuple[str, str, ssl.SSLContext]:
    url, token, ca_file = args.url, args.token, args.ca_file
    ca_source = "--ca-file"
    if args.config:
        from service.config import ServiceConfigError, load_service_settings

        try:
            settings = load_service_settings(args.config)
        except ServiceConfigError as error:
            raise AdminSetupError(str(error)) from None
        control = settings.control
        url = url or f"https://{control.public_hosts[0]}:{control.port}"
        token = token or (settings.admin.token.get_secret_value() if settings.admin.token else None)
        if not ca_file:
            ca_file = str(control.ca_cert_file or control.state_dir / "ca.pem")
            key = "control.ca_cert_file" if control.ca_cert_file else "control.state_dir"
            ca_source = f"{key} of {args.config}"
    url = url or os.environ.get("CLOUDPROV_CONTROL_URL")
    token = token or os.environ.get("CLOUDPROV_ADMIN_TOKEN")
    if not ca_file:
        ca_file, ca_source = os.environ.get("CLOUDPROV_CONTROL_CA"), "CLOUDPROV_CONTROL_CA"
    if not (url and token and ca_file):
        raise AdminSetupError("give --url, --token and --ca-file (or their CLOUDPROV_* variables, or -c service.yaml)")
    try:
        return url, token, ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError:
        raise AdminSetupError(f"the CA file {ca_file!r} ({ca_source}) holds no PEM certificate") from None
    except OSError as exc:
        raise AdminSetupError(f"cannot read the CA file {ca_file!r} ({ca_source}): {exc.strerror}") from None


async def _admin_call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url, token, context = _admin_target(args)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.request(
            method, url.rstrip("/") + path, json=body, ssl=context, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status, await response.json()


def _setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value): VALUE as JSON when it parses (``500``, ``true``), else as text; empty → null."""
    key, equals, raw = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    if raw == "":
        return key, None
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _admin(method: str, path: str, body: Any = None) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            status, answer = asyncio.run(
                _admin_call(args, method, path.format(**vars(args)), body(args) if body else None)
            )
        except AdminSetupError as error:
            print(f"admin: {error}", file=sys.stderr)
            return 2
        except (aiohttp.ClientError, OSError) as error:
            print(f"admin: cannot reach the control plane: {error}", file=sys.stderr)
            return 2
        if status >= 400:
            print(f"admin: refused ({status} {answer.get('error')}): {answer.get('detail')}", file=sys.stderr)
            return 2
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0

    return run


def add_agent_register(agent: Any) -> None:
    """``cloudprov agent register`` under the ``agent`` sub-commands."""
    register = agent.add_parser(
        "register",
        help="register this agent with a control plane (one-time token)",
        epilog="example: cloudprov agent register --control-plane https://cp:8443 --token cpr_… "
        "--ca-fingerprint sha256:…",
    )
    register.add_argument("-c", "--config", help="the agent's YAML configuration (agent id, state folder)")
    register.add_argument(
        "--control-plane", required=True, metavar="URL", help="https://host:port of the control plane"
    )
    register.add_argument("--token", required=True, help="the registration token from 'cloudprov admin token create'")
    register.add_argument("--agent-id", help="register under this id (default: agent.id of the configuration)")
    register.add_argument("--ca-file", help="the control plane's CA certificate (PEM)")
    register.add_argument("--ca-fingerprint", help="or the sha256:… fingerprint of its CA, to pin it")
    register.set_defaults(func=cmd_agent_register)


def add_control_commands(commands: Any) -> None:
    """``cloudprov service run`` and ``cloudprov admin …``."""
    service = commands.add_parser(
        "service", help="run the cloud side", epilog="example: cloudprov service run -c service.yaml"
    ).add_subparsers(dest="action", required=True)
    run = service.add_parser(
        "run", help="run the control plane (HTTPS)", epilog="example: cloudprov service run -c service.yaml"
    )
    run.add_argument("-c", "--config", help="the service's YAML configuration (default: built-in defaults)")
    run.set_defaults(func=cmd_service_run)

    admin = commands.add_parser(
        "admin",
        help="manage agents through the control plane's admin API",
        epilog="example: cloudprov admin -c service.yaml agents list",
    )
    admin.add_argument("-c", "--config", help="take URL, admin token and CA file from this service.yaml")
    admin.add_argument("--url", help="the control plane (env CLOUDPROV_CONTROL_URL)")
    admin.add_argument("--token", help="the admin token (env CLOUDPROV_ADMIN_TOKEN)")
    admin.add_argument("--ca-file", help="the control plane's CA certificate (env CLOUDPROV_CONTROL_CA)")
    actions = admin.add_subparsers(dest="action", required=True)

    example = "example: cloudprov admin"
    token = actions.add_parser(
        "token", help="registration tokens", epilog=f"{example} token create --domain example.com"
    ).add_subparsers(dest="what", required=True)
    create = token.add_parser(
        "create", help="a one-time registration token for a domain", epilog=f"{example} token create --domain a.com"
    )
    create.add_argument("--domain", required=True)
    create.add_argument(
        "--ttl", type=float, help="seconds the token is valid, 30 days at most (default: the service's token_ttl)"
    )
    create.set_defaults(
        func=_admin("POST", "/v1/admin/tokens", lambda a: {"domain": a.domain, "ttl": _seconds("--ttl", a.ttl)})
    )

    agents = actions.add_parser("agents", help="agents", epilog=f"{example} agents list").add_subparsers(
        dest="what", required=True
    )
    agents.add_parser(
        "list", help="agents with status, version, domains", epilog=f"{example} agents list"
    ).set_defaults(func=_admin("GET", "/v1/admin/agents"))
    for name, method, path in (
        ("assign", "POST", "/v1/admin/agents/{agent}/domains"),
        ("unassign", "DELETE", "/v1/admin/agents/{agent}/domains/{domain}"),
    ):
        command = actions.add_parser(
            name, help=f"{name} a domain to/from an agent", epilog=f"{example} {name} agent-1 example.com"
        )
        command.add_argument("agent")
        command.add_argument("domain")
        body = (lambda a: {"domain": a.domain}) if method == "POST" else None
        command.set_defaults(func=_admin(method, path, body))
    revoke = actions.add_parser(
        "revoke", help="revoke an agent: it stops taking requests", epilog=f"{example} revoke agent-1 --reason lost"
    )
    revoke.add_argument("agent")
    revoke.add_argument("--reason", default="revoked by an admin")
    revoke.set_defaults(func=_admin("POST", "/v1/admin/agents/{agent}/revoke", lambda a: {"reason": a.reason}))

    keys = actions.add_parser("keys", help="request-signing keys", epilog=f"{example} keys rotate").add_subparsers(
        dest="what", required=True
    )
    keys.add_parser("list", help="the keys agents trust now", epilog=f"{example} keys list").set_defaults(
        func=_admin("GET", "/v1/admin/keys")
    )
    rotate = keys.add_parser(
        "rotate",
        help="make a new active key; the old one stays valid for a grace period",
        epilog=f"{example} keys rotate --grace 86400",
    )
    rotate.add_argument(
        "--grace",
        type=float,
        help="seconds the old keys stay valid, 7 days at most; shortens an earlier grace (default: key_grace_period)",
    )
    rotate.set_defaults(func=_admin("POST", "/v1/admin/keys/rotate", lambda a: {"grace": _seconds("--grace", a.grace)}))

    pushed = actions.add_parser(
        "settings",
        help="agent settings handed out at bootstrap (KEY=VALUE, VALUE as JSON or text; KEY= removes)",
        epilog=f"{example} settings logging.level=debug scim.max_page_size=500 signing.clock_skew=",
    )
    pushed.add_argument("pairs", nargs="+", metavar="KEY=VALUE", type=_setting)
    pushed.set_defaults(func=_admin("PATCH", "/v1/admin/settings", lambda a: dict(a.pairs)))

    endpoints = actions.add_parser(
        "endpoints",
        help="set a domain's transport endpoints (ordered)",
        epilog=f"{example} endpoints example.com amqps://user:pass@mq-b/prod amqps://user:pass@mq-a/prod",
    )
    endpoints.add_argument("domain")
    endpoints.add_argument("urls", nargs="+", help="transport URLs, most preferred first")
    endpoints.set_defaults(
        func=_admin(
            "PUT", "/v1/admin/domains/{domain}/endpoints", lambda a: {"endpoints": [{"url": u} for u in a.urls]}
        )
    )
