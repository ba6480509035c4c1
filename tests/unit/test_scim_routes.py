"""``ScimHandler._route``: the shortcut for list requests picks the call the general path picks."""

from __future__ import annotations

from functools import partial

import pytest

from agent.scim.handler import ScimHandler
from agent.scim.profile import load_profile
from plugins.memory import MemoryDirectory
from protocol.envelope import ScimOperation


@pytest.mark.parametrize("profile", ["openldap", "ad"])
@pytest.mark.parametrize("path", ["/Users", "/Groups"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_collection_path_routes_as_the_general_path_does(profile: str, path: str, method: str) -> None:
    """``/Users`` and ``/Groups`` (the shortcut) route to the call their other spellings (``/users/``, which
    the general path splits and lowers) route to, with the same mapping and query."""
    handler = ScimHandler(MemoryDirectory(), load_profile(profile))
    query = {"filter": 'userName eq "a"'}
    shortcut = handler._route(ScimOperation(method, path, query, {}))
    general = handler._route(ScimOperation(method, path.lower() + "/", query, {}))
    assert isinstance(shortcut, partial)
    assert isinstance(general, partial)
    assert (shortcut.func, shortcut.args, shortcut.keywords) == (general.func, general.args, general.keywords)
