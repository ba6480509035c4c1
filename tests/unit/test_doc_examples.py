"""The agent configurations shown in README.md and docs/ load as they are written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agent.config import AgentSettings, load_settings
from plugins.registry import create_directory

ROOT = Path(__file__).resolve().parents[2]
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```$", re.M | re.S)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_FILE_REF = re.compile(r"file:(/[^\s\"'}\],]+)")


def _agent_examples() -> list[tuple[str, str]]:
    """Every ```yaml block of README.md and docs/*.md whose sections are all agent settings sections."""
    examples = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, match in enumerate(_YAML_BLOCK.finditer(path.read_text()), 1):
            data = yaml.safe_load(match[1])
            if isinstance(data, dict) and set(data) <= set(AgentSettings.model_fields):
                examples.append((f"{path.relative_to(ROOT)}#{number}", match[1]))
    return examples


EXAMPLES = _agent_examples()


def test_the_docs_have_agent_examples() -> None:
    """README.md and the operator guide each show an agent configuration (the test below has something to load)."""
    names = {name.split("#")[0] for name, _ in EXAMPLES}
    assert {"README.md", "docs/operator-guide.md"} <= names


@pytest.mark.parametrize(("name", "text"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_agent_example_loads(name: str, text: str, tmp_path: Path) -> None:
    """The example passes the settings models and its directory plugin's settings (secrets and env vars stubbed)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = tmp_path / "agent.yaml"
    config.write_text(_FILE_REF.sub(f"file:{secret}", text))
    settings = load_settings(config, env=dict.fromkeys(_ENV_REF.findall(text), "x"))
    create_directory(settings.directory.plugin, settings.directory.plugin_settings())
