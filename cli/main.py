"""The ``cloudprov`` command: agent, config, keys, demo, service, admin, sync, version.

Each sub-command is a small function taking the parsed arguments and returning an exit code;
errors a user can fix (a bad config file, a missing key) print one clear message and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import protocol
from agent.config import ConfigError, load_settings
from agent.logging import configure
from cli.control import add_agent_register, add_control_commands
from cli.sync import add_sync_commands

EXAMPLES = """
examples:
  cloudprov demo --users 200                 the whole system in one process: full sync, then a delta
  cloudprov agent run -c agent.yaml          serve SCIM requests from the configured transport
  cloudprov service run -c service.yaml      control plane and provisioning service
  cloudprov sync status                      provisioning jobs: running?, progress, last cycle, lag
  cloudprov config check agent.yaml          validate a configuration file and print the result
  cloudprov keys generate                    make a request-signing key pair
"""


def _version() -> str:
    try:
        return version("cloudprov")
    except PackageNotFoundError:
        return "0+unknown"


def _count(text: str) -> int:
    """argparse type: a whole number of zero or more (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"cloudprov {_version()} ({'compiled' if protocol.compiled() else 'plain Python'})")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    from agent.runtime import check_settings

    problems = check_settings(settings)
    if problems:
        print(f"{args.file}: invalid configuration", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(
        f"{args.file}: OK (transport {settings.transport.url.split('://', 1)[0]}, "
        f"directory {settings.directory.plugin}, profile {settings.scim.profile}, "
        f"{len(settings.signing.public_keys)} signing key(s))"
    )
    return 0


def cmd_agent_run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure(settings.logging.level, settings.logging.format, stream=sys.stdout)  # containers collect stdout
    from agent.health import health_service
    from agent.lifecycle import initial_transport, install
    from agent.runtime import Agent, settle_heap

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        agent = Agent(
            settings,
            services=[settle_heap, *([health_service] if settings.health.enabled else [])],
            transport=initial_transport(settings),  # the last known endpoints, when bootstrapping
        )
        if settings.control_plane.enabled:
            install(agent)
        await agent.run(stop)

    try:
        asyncio.run(serve())
    except ConfigError as error:
        print(f"{args.config or 'defaults'}: invalid configuration: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from protocol.signing import Signer, private_key_text, public_key_text

    signer = Signer.generate(args.key_id)
    print(f"key id:      {signer.key_id}")
    print(f"public key:  {public_key_text(signer.public_key)}   (agent: signing.public_keys.{signer.key_id})")
    print(f"private key: {private_key_text(signer.private_key)}   (requester only; keep it secret)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo, run_scim_demo

    configure("error", "console" if sys.stderr.isatty() else "json")
    if args.scim:
        return asyncio.run(run_scim_demo(users=args.users, groups=args.groups))
    return asyncio.run(run_demo(users=args.users, groups=args.groups, follow=args.follow))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudprov",
        description="Self-hostable cloud provisioning: SCIM 2.0 over a durable queue to an agent beside LDAP.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the whole system in one process on embedded defaults",
        description="Control plane, an agent over a seeded memory directory (local transport) and the "
        "provisioning service syncing it into the embedded store: a full sync with progress, then a few "
        "source changes and the delta cycle that picks them up (--scim: the scripted SCIM walkthrough).",
        epilog="example: cloudprov demo --users 1000 --groups 20",
    )
    demo.add_argument("--users", type=_count, default=100, help="sample users to seed (default 100)")
    demo.add_argument("--groups", type=_count, default=5, help="sample groups to seed (default 5)")
    demo.add_argument("--follow", action="store_true", help="keep syncing every 2 s until Ctrl-C")
    demo.add_argument("--scim", action="store_true", help="the scripted SCIM walkthrough of the agent instead")
    demo.set_defaults(func=cmd_demo)

    agent = commands.add_parser(
        "agent", help="run the agent", epilog="example: cloudprov agent run -c agent.yaml"
    ).add_subparsers(dest="action", required=True)
    run = agent.add_parser(
        "run",
        help="serve SCIM requests from the configured transport",
        epilog="example: cloudprov agent run -c /etc/cloudprov/agent.yaml",
    )
    run.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CLOUDPROV_CONFIG") or None,
        help="YAML configuration file (default: $CLOUDPROV_CONFIG, else built-in defaults)",
    )
    run.set_defaults(func=cmd_agent_run)
    add_agent_register(agent)

    config = commands.add_parser(
        "config", help="work with configuration files", epilog="example: cloudprov config check agent.yaml"
    ).add_subparsers(dest="action", required=True)
    check = config.add_parser(
        "check", help="validate a configuration file", epilog="example: cloudprov config check agent.yaml"
    )
    check.add_argument("file", help="the YAML file to check")
    check.set_defaults(func=cmd_config_check)

    keys = commands.add_parser(
        "keys", help="request-signing keys", epilog="example: cloudprov keys generate --key-id svc1"
    ).add_subparsers(dest="action", required=True)
    generate = keys.add_parser("generate", help="make an Ed25519 key pair", epilog="example: cloudprov keys generate")
    generate.add_argument("--key-id", default="k1", help="the key id to announce (default k1)")
    generate.set_defaults(func=cmd_keys_generate)

    add_control_commands(commands)
    add_sync_commands(commands)
    commands.add_parser("version", help="print the version", epilog="example: cloudprov version").set_defaults(
        func=cmd_version
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
