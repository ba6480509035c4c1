"""Sample data for demos and load tests: containers, users and groups shaped for each flavor.

Settings: ``seed_users``, ``seed_groups``, ``seed`` and ``flavor``. openldap: inetOrgPerson users
``uid=user00001,ou=people,<base>`` and groupOfNames groups ``cn=group0001,ou=groups,<base>``; ad:
``user`` entries ``CN=user00001,OU=people,<base>`` with sAMAccountName, userPrincipalName and
userAccountControl=512, and global security ``group`` entries.

Guarantees: the same settings give the same entries (names, attributes, group members); every group
has at least one member (groupOfNames requires one; with no users it is the base DN).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from plugins import dn as dnlib
from plugins.directory import AttrValue
from plugins.memory.settings import MemorySettings

SeedRecord = tuple[str, dict[str, list[AttrValue]]]

FIRST_NAMES = (
    "Ada", "Alan", "Barbara", "Claude", "Dennis", "Donald", "Edsger", "Frances", "Grace", "Guido",
    "Hedy", "John", "Ken", "Leslie", "Linus", "Margaret", "Niklaus", "Radia", "Shafi", "Tim",
)  # fmt: skip
LAST_NAMES = (
    "Allen", "Backus", "Conway", "Dijkstra", "Engelbart", "Floyd", "Goldwasser", "Hopper", "Hamilton",
    "Knuth", "Lamport", "Liskov", "Lovelace", "Perlman", "Ritchie", "Shannon", "Thompson", "Turing",
    "Wirth", "Yao",
)  # fmt: skip
TITLES = ("Engineer", "Senior Engineer", "Manager", "Analyst", "Designer", "Director", "Support Specialist")


def containers(settings: MemorySettings) -> list[SeedRecord]:
    """The ou=people and ou=groups containers (only when something is generated)."""
    if not settings.seed_users and not settings.seed_groups:
        return []
    name = "OU" if settings.flavor == "ad" else "ou"
    return [
        (f"{name}={ou},{settings.base_dn}", {"objectClass": ["top", "organizationalUnit"], "ou": [ou]})
        for ou in ("people", "groups")
    ]


def _mail_domain(base_dn: str) -> str:
    parts = [ava.value for item in dnlib.parse(base_dn) for ava in item.avas if ava.attribute.lower() == "dc"]
    return ".".join(parts) or "example.com"


def users(settings: MemorySettings) -> Iterator[SeedRecord]:
    rng = random.Random(f"{settings.seed}:users")
    domain = _mail_domain(settings.base_dn)
    ad = settings.flavor == "ad"
    for number in range(1, settings.seed_users + 1):
        login = f"user{number:05d}"
        given, family = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        common: dict[str, list[AttrValue]] = {
            "givenName": [given],
            "sn": [family],
            "displayName": [f"{given} {family}"],
            "mail": [f"{login}@{domain}"],
            "title": [rng.choice(TITLES)],
            "telephoneNumber": [f"+1 555 {rng.randrange(10_000):04d}"],
            "employeeNumber": [str(100_000 + number)],
        }
        if ad:
            attributes: dict[str, list[AttrValue]] = {
                "objectClass": ["top", "person", "organizationalPerson", "user"],
                "cn": [login],
                "sAMAccountName": [login],
                "userPrincipalName": [f"{login}@{domain}"],
                "userAccountControl": ["512"],
                **common,
            }
            yield f"CN={login},OU=people,{settings.base_dn}", attributes
        else:
            attributes = {
                "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
                "uid": [login],
                "cn": [f"{given} {family}"],
                **common,
            }
            yield f"uid={login},ou=people,{settings.base_dn}", attributes


def user_dn(settings: MemorySettings, number: int) -> str:
    if settings.flavor == "ad":
        return f"CN=user{number:05d},OU=people,{settings.base_dn}"
    return f"uid=user{number:05d},ou=people,{settings.base_dn}"


def groups(settings: MemorySettings) -> Iterator[SeedRecord]:
    rng = random.Random(f"{settings.seed}:groups")
    ad = settings.flavor == "ad"
    for number in range(1, settings.seed_groups + 1):
        name = f"group{number:04d}"
        if settings.seed_users:
            picked = rng.sample(range(1, settings.seed_users + 1), rng.randint(1, min(settings.seed_users, 50)))
            members = [user_dn(settings, index) for index in sorted(picked)]
        else:
            members = [settings.base_dn]
        attributes: dict[str, list[AttrValue]] = {
            "objectClass": ["top", "group"] if ad else ["top", "groupOfNames"],
            "cn": [name],
            "description": [f"Sample group {number}"],
            "member": list(members),
        }
        if ad:
            attributes["sAMAccountName"] = [name]
            attributes["groupType"] = ["-2147483646"]
            yield f"CN={name},OU=groups,{settings.base_dn}", attributes
        else:
            yield f"cn={name},ou=groups,{settings.base_dn}", attributes


def generate(settings: MemorySettings) -> Iterator[SeedRecord]:
    """Containers, then users, then groups: parents always before children."""
    yield from containers(settings)
    yield from users(settings)
    yield from groups(settings)
