"""The configuration reference in docs/ is generated from the settings models and cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentSettings
from cli import configdoc
from service.config import ServiceSettings


def test_configuration_reference_matches_the_models() -> None:
    """docs/configuration.md is exactly what `python -m cli.configdoc` generates now (regenerate after a change)."""
    pytest.importorskip("bonsai", reason="the ldap plugin's settings are part of the reference")
    assert configdoc.TARGET.read_text() == configdoc.render(), "run: python -m cli.configdoc"


def test_reference_names_every_setting_with_its_environment_variable() -> None:
    """Every field of every AgentSettings section appears with its key and CLOUDPROV__ variable."""
    pytest.importorskip("bonsai", reason="the ldap plugin's settings are part of the reference")
    text = configdoc.render()
    for section, field in AgentSettings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        for name in model.model_fields:
            assert f"`{section}.{name}`" in text
            assert f"`CLOUDPROV__{section.upper()}__{name.upper()}`" in text
    assert "`directory.faults.error_rate`" in text
    assert "`directory.bind_dn`" in text


def test_reference_names_every_service_setting_with_its_environment_variable() -> None:
    """Every field of every ServiceSettings section is in the service part with its CLOUDPROV_SERVICE__ variable."""
    pytest.importorskip("bonsai", reason="the ldap plugin's settings are part of the reference")
    text = configdoc.render()
    service_part = text.split("# Service (`cloudprov service run`)", 1)[1]
    for section, field in ServiceSettings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert f"## service `{section}`" in service_part
        for name in model.model_fields:
            assert f"`{section}.{name}`" in service_part
            assert f"`CLOUDPROV_SERVICE__{section.upper()}__{name.upper()}`" in service_part
    assert "`health.port` | int | `8082`" in service_part


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    """`--check` exits 1 for an outdated file and 0 once the file has been regenerated."""
    pytest.importorskip("bonsai", reason="the ldap plugin's settings are part of the reference")
    target = tmp_path / "configuration.md"
    target.write_text("# old\n")
    assert configdoc.main(["--check", "--output", str(target)]) == 1
    assert configdoc.main(["--output", str(target)]) == 0
    assert configdoc.main(["--check", "--output", str(target)]) == 0
