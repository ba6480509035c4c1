"""The agent as its container runs it: configured by a mounted file plus env, JSON logs on stdout,
non-root on a read-only root filesystem with only the state folder writable, SIGTERM → exit 0.

Docker does not run here, so the container is imitated: as root, a private mount namespace makes
``/`` read-only (venv and code included) and leaves only the state folder writable, then the same
entrypoint as the image (``cloudprov agent run -c …``) runs as uid 10001, the image's user.
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_settings

UID = GID = 10001  # the image's USER (deploy/Dockerfile)
REPO = Path(__file__).resolve().parents[2]
CLOUDPROV = Path(sys.executable).parent / "cloudprov"


def test_env_overrides_the_mounted_file(tmp_path: Path) -> None:
    """A value in CLOUDPROV__SECTION__KEY wins over the mounted YAML; file: references and the rest of the file stay."""
    (tmp_path / "k1.pub").write_text("public-key-text\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "agent: {id: from-file, state_dir: /var/lib/cloudprov}\n"
        "health: {port: 9000, host: 127.0.0.1}\n"
        f"signing: {{public_keys: {{k1: 'file:{tmp_path / 'k1.pub'}'}}}}\n"
    )
    env = {
        "CLOUDPROV__HEALTH__PORT": "0",
        "CLOUDPROV__AGENT__STATE_DIR": "/state",
        "CLOUDPROV__HEALTH__ENABLED": "false",
    }
    settings = load_settings(config, env=env)
    assert settings.health.port == 0
    assert settings.health.enabled is False
    assert settings.health.host == "127.0.0.1"
    assert settings.agent.state_dir == Path("/state")
    assert settings.agent.id == "from-file"
    assert settings.signing.public_keys == {"k1": "public-key-text"}


def test_plugin_secrets_may_be_mounted_files(tmp_path: Path) -> None:
    """A directory plugin's bind password written as file:/run/secrets/… reaches the plugin as the file's content."""
    (tmp_path / "ldap-password").write_text("s3cret\n")
    config = tmp_path / "agent.yaml"
    config.write_text(f"directory: {{plugin: ldap, bind_dn: cn=a, password: 'file:{tmp_path / 'ldap-password'}'}}\n")
    settings = load_settings(config, env={})
    assert settings.directory.plugin_settings() == {"bind_dn": "cn=a", "password": "s3cret"}


def test_settings_come_from_env_alone() -> None:
    """Without any file, environment variables configure every section the sidecar needs."""
    env = {
        "CLOUDPROV__TRANSPORT__URL": "amqp://agent@rabbitmq/",
        "CLOUDPROV__AGENT__DOMAINS": "[corp.example.com]",
        "CLOUDPROV__HEALTH__PORT": "9090",
        "CLOUDPROV__LOGGING__FORMAT": "json",
    }
    settings = load_settings(None, env=env)
    assert settings.transport.url == "amqp://agent@rabbitmq/"
    assert settings.agent.domains == ["corp.example.com"]
    assert settings.health.port == 9090
    assert settings.logging.format == "json"


def _top_hidden_ancestor(path: Path) -> Path | None:
    """The highest ancestor of ``path`` that other users cannot traverse (e.g. /root), if any."""
    for ancestor in reversed(path.parents):
        if ancestor != Path("/") and not ancestor.stat().st_mode & 0o001:
            return ancestor
    return None


def _sandbox_script(state: Path, command: list[str]) -> str:
    """Shell run in a new mount namespace: read-only /, writable state folder, then drop to uid 10001."""
    needed = [Path(sys.base_prefix).resolve(), REPO]
    lines = ["set -e", "mount --make-rprivate /", "stash=$(mktemp -d)"]
    hidden: dict[Path, list[Path]] = {}
    for path in needed:
        top = _top_hidden_ancestor(path)
        if top is not None:
            hidden.setdefault(top, []).append(path)
    for index, (top, paths) in enumerate(hidden.items()):
        for inner, path in enumerate(paths):
            lines += [
                f"mkdir -p $stash/{index}-{inner}",
                f"mount --bind {shlex.quote(str(path))} $stash/{index}-{inner}",
            ]
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(top))}")
        for inner, path in enumerate(paths):
            lines += [
                f"mkdir -p {shlex.quote(str(path))}",
                f"mount --bind $stash/{index}-{inner} {shlex.quote(str(path))}",
            ]
        lines.append(f"mount -o remount,ro {shlex.quote(str(top))}")
    quoted = shlex.quote(str(state))
    lines += [
        f"mount --bind {quoted} {quoted}",
        "mount -o remount,bind,ro /",
        f"exec setpriv --reuid={UID} --regid={GID} --clear-groups --no-new-privs " + shlex.join(command),
    ]
    return "\n".join(lines)


@pytest.fixture
def sidecar_dirs() -> Iterator[tuple[Path, Path]]:
    """A state folder owned by the agent's uid and a root-owned, read-only config folder."""
    base = Path(tempfile.mkdtemp(prefix="cloudprov-sidecar-"))
    base.chmod(0o755)
    state, config = base / "state", base / "config"
    state.mkdir()
    config.mkdir()
    if os.geteuid() == 0:
        os.chown(state, UID, GID)
    try:
        yield state, config
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _read_json_line(proc: subprocess.Popen[bytes], selector: selectors.BaseSelector, deadline: float) -> Any:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
            break
        line = proc.stdout.readline()
        if not line:
            break
        return json.loads(line)
    raise AssertionError("the agent printed no further log line in time")


def _assert_confined(pid: int) -> None:
    """The process runs as uid 10001 and sees / mounted read-only."""
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(UID)}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            assert "ro" in fields[5].split(",")
            return
    raise AssertionError("no root mount in the agent's mountinfo")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_agent_runs_non_root_on_a_read_only_root(sidecar_dirs: tuple[Path, Path]) -> None:
    """`cloudprov agent run` as uid 10001 on a read-only / logs JSON to stdout, answers /healthz, exits 0 on SIGTERM."""
    state, config_dir = sidecar_dirs
    config = config_dir / "agent.yaml"
    config.write_text(
        "agent: {id: sidecar, domains: [example.com]}\n"
        "transport: {url: 'local://sidecar'}\n"
        "directory: {plugin: memory, seed_users: 3}\n"
        "health: {host: 127.0.0.1, port: 1, heartbeat_interval: 0.2}\n"  # port 1 would need root: env must win
    )
    command = [str(CLOUDPROV), "agent", "run", "-c", str(config)]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(state),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CLOUDPROV__HEALTH__PORT": "0",
        "CLOUDPROV__AGENT__STATE_DIR": str(state),
    }
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or shutil.which("setpriv") is None:
            pytest.skip("unshare/setpriv (util-linux) are needed to imitate the container as root")
        probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
        command = ["unshare", "--mount", "sh", "-c", _sandbox_script(state, command)]
    # unbuffered: readline() must not take a second line into a buffer that select() cannot see
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0) as proc:
        stderr = _drive(proc)
    assert "Traceback" not in stderr, stderr
    if os.geteuid() == 0:
        assert "Read-only" not in stderr


def _drive(proc: subprocess.Popen[bytes]) -> str:
    """Wait for the health port in the JSON logs, probe it, send SIGTERM, check exit 0; return stderr."""
    try:
        selector = selectors.DefaultSelector()
        assert proc.stdout is not None
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        lines = []
        while not any(line.get("event") == "health server listening" for line in lines):
            lines.append(_read_json_line(proc, selector, deadline))
        port = next(line["port"] for line in lines if line.get("event") == "health server listening")
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        if os.geteuid() == 0:
            _assert_confined(proc.pid)
        while _get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert time.monotonic() < deadline, "the agent never became ready"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        rest = [json.loads(line) for line in proc.stdout.read().splitlines() if line.strip()]
        assert rest[-1]["event"] == "agent stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.stderr.read().decode() if proc.stderr else ""
