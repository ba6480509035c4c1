"""Directory errors the SCIM layer answers without a retry: a write whose outcome is unknown, a server limit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.scim.handler import ScimHandler
from agent.scim.profile import load_profile
from plugins.directory import AttrValue, LimitExceededError, WriteOutcomeUnknownError
from plugins.memory import MemoryDirectory, MemorySettings
from protocol.envelope import ScimOperation

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


class LostWrites(MemoryDirectory):
    """Applies each add, then loses the answer (the connection dropped after the server got the request)."""

    async def add(self, dn: str, attributes: Mapping[str, Sequence[AttrValue]]) -> None:
        await super().add(dn, attributes)
        raise WriteOutcomeUnknownError(f"add {dn!r}: the connection was lost before the answer came")

    def search(self, *args: Any, **kwargs: Any) -> Any:
        if "(uid=too-many)" in str(args[1:2]):
            raise LimitExceededError("sizeLimitExceeded: more entries than the bound identity may read")
        return super().search(*args, **kwargs)


async def test_a_write_whose_outcome_is_unknown_is_answered_503_and_not_taken_again() -> None:
    """503 with the reason, but not transient: the dispatcher answers it instead of giving the request back,
    since running it again could apply the write twice (an add would then fail 409)."""
    async with LostWrites(MemorySettings(seed_users=0, seed_groups=0)) as directory:
        people = f"ou=people,{directory.base_dn}"
        await MemoryDirectory.add(directory, people, {"objectClass": ["top", "organizationalUnit"], "ou": ["people"]})
        handler = ScimHandler(directory, load_profile("openldap"))
        body = {"schemas": [USER], "userName": "dave", "name": {"familyName": "D", "givenName": "Dave"}}
        result = await handler.handle(ScimOperation("POST", "/Users", body=body))
        assert (result.status, result.transient) == (503, False)
        assert "connection was lost" in result.body["detail"]
        assert await directory.get(f"uid=dave,{people}") is not None  # it was applied
        too_many = await handler.handle(ScimOperation("GET", "/Users", {"filter": 'userName eq "too-many"'}))
        assert (too_many.status, too_many.body.get("scimType"), too_many.transient) == (400, "tooMany", False)
