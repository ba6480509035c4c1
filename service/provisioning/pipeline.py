"""One object through Import → Scope → Match → Action (``Pipeline.plan`` then ``Pipeline.apply``).

What it is
    ``plan(resource_type, resource)`` decides, without writing, what the target needs: ``create``,
    ``update`` (only the attributes that differ), ``enable``/``disable``, ``delete`` (groups out of
    scope, or users with ``out_of_scope: delete``), ``none`` or ``skip``; each step records its
    reason (``Step``), which is what the provisioning log and on-demand provisioning show.
    ``apply(plan)`` writes it. ``AnchorIndex`` remembers source anchor → target id, for membership.

Guarantees
    Matching is by anchor; with ``matching_attribute`` set, an unanchored target object whose
    attribute equals the mapped value is claimed (its anchor is set) instead of creating a second
    one. Membership is changed by value (``change_members`` add/remove), never replaced.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.provisioning.rules import Rules, decision, dn_of
from service.provisioning.settings import JobSettings
from service.provisioning.targets.base import Target, TargetObject


@dataclass(frozen=True, slots=True)
class Step:
    name: str  # import | scope | match | action
    outcome: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"step": self.name, "outcome": self.outcome, "detail": self.detail}


@dataclass
class Plan:
    resource_type: str
    anchor: str
    dn: str | None
    action: str = "none"
    target: TargetObject | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    claim: bool = False
    in_scope: bool = True
    steps: list[Step] = field(default_factory=list)
    members: list[str] | None = None  # source member anchors of a group in scope


def _blank(value: Any) -> Any:
    return None if value in ("", [], {}) else value


def changed_attributes(current: TargetObject, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of ``desired`` whose value the target does not hold yet."""
    out: dict[str, Any] = {}
    for key, value in desired.items():
        if key == "active" and key not in current.attributes:
            held: Any = current.active
        else:
            held = current.attributes.get(key)
        if _blank(held) != _blank(value):
            out[key] = value
    return out


class AnchorIndex:
    """Source anchor → target id, filled as objects are matched and created; misses asked of the target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._ids: dict[str, str] = {}

    def remember(self, anchor: str, target_id: str) -> None:
        self._ids[anchor] = target_id

    def forget(self, anchor: str) -> None:
        self._ids.pop(anchor, None)

    def clear(self) -> None:
        self._ids.clear()

    async def resolve(self, anchors: Iterable[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for anchor in anchors:
            target_id = self._ids.get(anchor)
            if target_id is None:
                for resource_type in ("User", "Group"):
                    obj = await self.target.get_by_anchor(resource_type, anchor)
                    if obj is not None:
                        target_id = obj.id
                        self._ids[anchor] = obj.id
                        break
            if target_id is not None:
                found[anchor] = target_id
        return found


class Pipeline:
    def __init__(self, target: Target, rules: Rules, settings: JobSettings, index: AnchorIndex) -> None:
        self.target = target
        self.rules = rules
        self.settings = settings
        self.index = index

    async def plan(
        self,
        resource_type: str,
        resource: Mapping[str, Any],
        membership: Any,
        *,
        first_sync: bool = False,
        absent: bool = False,
    ) -> Plan:
        """What the target needs for this object; ``absent``: the caller knows the target has no
        object of this type yet (no lookup by anchor or matching attribute)."""
        anchor = str(resource["id"])
        plan = Plan(resource_type, anchor, dn_of(resource))
        plan.steps.append(Step("import", "imported", f"{resource_type} {plan.dn or anchor} (anchor {anchor})"))
        in_scope, reason = decision(self.rules.scope.decide(resource, membership))
        plan.in_scope = in_scope
        plan.steps.append(Step("scope", "in scope" if in_scope else "out of scope", reason))
        mapper = self.rules.mappers.get(resource_type)
        mapped = mapper.map(resource, creating=True) if mapper is not None and in_scope else {}
        obj = None if absent else await self.target.get_by_anchor(resource_type, anchor)
        if obj is not None:
            plan.steps.append(Step("match", "matched", f"target {obj.id} by anchor"))
        elif in_scope and self.settings.matching_attribute and first_sync and not absent:
            key = self.settings.matching_attribute
            value = mapped.get(key)
            candidate = await self.target.find_by_attribute(resource_type, key, value) if value is not None else None
            if candidate is not None and candidate.anchor is None:
                obj, plan.claim = candidate, True
                plan.steps.append(Step("match", "matched", f"target {obj.id} by {key} = {value!r} (anchor claimed)"))
            else:
                plan.steps.append(Step("match", "no match", f"no target object with this anchor or {key} = {value!r}"))
        else:
            plan.steps.append(Step("match", "no match", "no target object with this anchor"))
        plan.target = obj
        if obj is not None:
            self.index.remember(anchor, obj.id)
            if mapper is not None and in_scope:
                mapped = mapper.map(resource, creating=False)
        self._decide(plan, obj, mapped)
        if in_scope and resource_type == "Group":
            plan.members = [str(m["value"]) for m in resource.get("members") or [] if isinstance(m, Mapping)]
        return plan

    def _decide(self, plan: Plan, obj: TargetObject | None, mapped: dict[str, Any]) -> None:
        if not plan.in_scope:
            if obj is None:
                plan.action, why = "skip", "out of scope and not in the target"
            elif plan.resource_type == "User" and self.settings.out_of_scope == "disable":
                plan.action, why = (
                    ("disable", "left scope") if obj.active else ("none", "out of scope, already disabled")
                )
            else:
                plan.action, why = "delete", "left scope"
        elif obj is None:
            plan.action, plan.attributes = "create", {k: v for k, v in mapped.items() if v is not None}
            why = f"{len(plan.attributes)} attributes"
        else:
            desired = dict(mapped)
            if plan.resource_type == "User" and not obj.active:
                desired.setdefault("active", True)
            plan.attributes = changed_attributes(obj, desired)
            if plan.attributes or plan.claim:
                plan.action = "update"
                why = "changed: " + ", ".join(sorted(plan.attributes)) if plan.attributes else "anchor claimed"
            else:
                plan.action, why = "none", "target already up to date"
        plan.steps.append(Step("action", plan.action, why))

    async def apply(self, plan: Plan) -> None:
        """Write a plan's action (not ``delete``: the engine applies deletions after its threshold check)."""
        if plan.action == "create":
            obj = await self.target.create(plan.resource_type, plan.anchor, plan.attributes)
            plan.target = obj
            self.index.remember(plan.anchor, obj.id)
        elif plan.action == "update" and plan.target is not None:
            plan.target = await self.target.update(
                plan.target, plan.attributes, anchor=plan.anchor if plan.claim else None
            )
        elif plan.action == "disable" and plan.target is not None:
            await self.target.disable(plan.target)

    async def sync_members(self, plan: Plan) -> tuple[int, int]:
        """Bring a group's members in line with the source: value-level adds and removes; their counts."""
        group = plan.target
        if group is None or plan.members is None:
            return 0, 0
        current = await self.target.get_by_anchor(plan.resource_type, plan.anchor)
        held: Collection[str] = current.members if current is not None else group.members
        resolved = await self.index.resolve(plan.members)
        missing = len(set(plan.members)) - len(resolved)
        if missing:  # said in the group's log entry: a member left out is otherwise silent
            plan.steps.append(
                Step(
                    "members",
                    "not in target",
                    f"{missing} member(s) of the source group are not in the target: out of scope, failed "
                    "(`sync log --failed`), or written later in the cycle and added then",
                )
            )
        wanted = set(resolved.values())
        add = sorted(wanted - set(held))
        remove = sorted(set(held) - wanted)
        if add or remove:
            await self.target.change_members(current or group, add, remove)
            plan.steps.append(Step("action", "members", f"+{len(add)} -{len(remove)} members"))
        return len(add), len(remove)
