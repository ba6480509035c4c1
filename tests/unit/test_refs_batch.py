"""References.refs_for resolves many DNs with a few searches, not one read per DN (large groups)."""

from __future__ import annotations

from typing import Any

from agent.scim import refs as refs_module
from agent.scim.profile import load_profile
from agent.scim.refs import References, normalized
from plugins import dn as dnlib
from plugins.memory import MemoryDirectory, MemorySettings

BASE = "dc=example,dc=com"


class CountingDirectory(MemoryDirectory):
    def __init__(self, settings: MemorySettings) -> None:
        super().__init__(settings)
        self.gets = 0
        self.searches = 0

    async def get(self, dn: str, attributes: Any = None) -> Any:
        self.gets += 1
        return await super().get(dn, attributes)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.searches += 1
        return super().search(*args, **kwargs)


async def _users(directory: MemoryDirectory, count: int) -> list[str]:
    await directory.add(f"ou=people,{BASE}", {"objectClass": ["top", "organizationalUnit"], "ou": ["people"]})
    dns = []
    for i in range(count):
        dn = f"uid=u{i},ou=people,{BASE}"
        await directory.add(dn, {"objectClass": ["inetOrgPerson"], "uid": [f"u{i}"], "cn": [f"U {i}"], "sn": ["U"]})
        dns.append(dn)
    return dns


async def test_many_dns_are_resolved_by_searches() -> None:
    async with CountingDirectory(MemorySettings()) as directory:
        dns = await _users(directory, 600)
        references = References(directory, load_profile("openldap"), BASE)
        # odd spellings, a DN that names nothing, and one outside any user container
        asked = [dn.upper() if i % 7 == 0 else dn for i, dn in enumerate(dns)]
        asked += [f"uid=ghost,ou=people,{BASE}", f"cn=nobody,ou=elsewhere,{BASE}"]
        directory.gets = directory.searches = 0
        found = await references.refs_for(asked)
        assert len(found) == 600
        # people chunks, the other parent, then the two DNs no search found, read one by one (base searches:
        # the directory scopes them, a get it does not)
        assert directory.searches == -(-600 // refs_module.SEARCH_CHUNK) + 1 + 2
        assert directory.gets == 0
        ref = found[next(k for k in found if k.startswith("uid=u5,"))]
        assert ref.resource == "User"
        assert ref.dn.lower() == dns[5].lower()


async def test_few_dns_are_read_one_by_one() -> None:
    async with CountingDirectory(MemorySettings()) as directory:
        dns = await _users(directory, 5)
        references = References(directory, load_profile("openldap"), BASE)
        directory.gets = directory.searches = 0
        found = await references.refs_for(dns)
        assert len(found) == 5
        assert directory.searches == 5  # one base search each, which the directory scopes
        assert directory.gets == 0


def test_the_fast_normal_form_is_the_normal_form() -> None:
    plain = [
        "uid=user000001,ou=people,dc=example,dc=com",
        "CN=Group-0001,OU=Groups,DC=Example,DC=Com",
        "uid=a.b_c@d,ou=x",
        "o=x",
    ]
    tricky = [
        "uid=a b,ou=people,dc=example,dc=com",
        "uid=a  b ,ou=people",
        "cn=a+sn=b,ou=people",
        "cn=Smith\\, John,ou=people",
        "2.5.4.3=x,ou=people",
        "uid=#04024142,ou=people",
        "uid=Ärger,ou=people",
        'cn=\\"quoted\\",ou=people',
        "uid = a , ou = people",
        "",
    ]
    for dn in plain + tricky:
        assert normalized(dn) == dnlib.normalize(dn), dn
    for dn in plain:
        assert refs_module._PLAIN_DN.fullmatch(dn)
    for dn in tricky:
        assert not refs_module._PLAIN_DN.fullmatch(dn)


async def test_escaped_and_plain_member_dns_are_both_found_by_search() -> None:
    async with CountingDirectory(MemorySettings()) as directory:
        dns = await _users(directory, 40)
        odd = f"uid=Smith\\, J,ou=people,{BASE}"
        await directory.add(odd, {"objectClass": ["inetOrgPerson"], "uid": ["Smith, J"], "cn": ["J"], "sn": ["S"]})
        references = References(directory, load_profile("openldap"), BASE)
        directory.gets = 0
        found = await references.refs_for([*dns, odd])
        assert len(found) == 41
        assert directory.gets == 0


async def test_a_listed_page_is_remembered_as_ref_of_would() -> None:
    """remember_listed leaves the same references behind as ref_of on each entry, and a DN that changed
    under the same id replaces the one held (by id and by DN)."""
    async with MemoryDirectory(MemorySettings()) as directory:
        await _users(directory, 3)
        profile = load_profile("openldap")
        users = profile.resource("users")
        pages = directory.search(BASE, "(uid=*)", attributes=users.ldap_attributes)
        entries = [entry async for page in pages for entry in page]
        one_by_one = References(directory, profile, BASE)
        expected = [one_by_one.ref_of(entry, users) for entry in entries]
        listed = References(directory, profile, BASE)
        listed.remember_listed(users, entries)
        for ref in expected:
            assert ref is not None
            assert listed._by_id.get(ref.id) == ref
            assert listed._by_dn.get(normalized(ref.dn)) == ref
        moved = entries[0]
        moved.dn = f"uid=moved,ou=people,{BASE}"
        listed.remember_listed(users, [moved])
        held = listed._by_id.get(expected[0].id)
        assert held is not None
        assert held.dn == moved.dn
        assert listed._by_dn.get(normalized(moved.dn)) == held
