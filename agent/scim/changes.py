"""The delta extension: ``GET /Changes?watermark=W&count=N`` — what changed since a watermark.

Response (schema ``urn:cloudprov:params:scim:api:messages:1.0:Changes``)::

    {"schemas": [...], "watermark": "<next>", "more": false, "totalResults": 2,
     "Resources": [{"op": "upsert", "resourceType": "User", "id": "…", "resource": {…}},
                   {"op": "delete", "resourceType": "Group", "id": "…"}]}

Without ``watermark`` the feed returns no changes and the current watermark: the point a full
sync starts from. Several changes to one object within a batch collapse into its latest state.
Deletions carry the id of the deleted resource. A watermark the directory no longer has history for
is answered 410 (``scimType: expiredWatermark``): the caller runs a full sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.scim.discovery import CHANGES_SCHEMA
from agent.scim.profile import ResourceMapping
from agent.scim.refs import classify
from agent.scim.values import anchor_to_id
from plugins.directory import ChangeKind, DirectoryError, Entry
from protocol.errors import ScimError, invalid_value

if TYPE_CHECKING:
    from agent.scim.handler import ScimHandler


async def read(handler: ScimHandler, query: dict[str, str]) -> tuple[int, Any]:
    raw_count = query.get("count") or "1000"
    try:
        count = int(raw_count)
    except ValueError:
        raise invalid_value(f"count must be an integer, got {raw_count!r}") from None
    if not 1 <= count <= 10_000:
        raise invalid_value("count must be between 1 and 10000")
    try:
        batch = await handler.directory.changes(query.get("watermark") or None, limit=count)
    except DirectoryError as error:
        if "watermark" in type(error).__name__.lower() or "watermark" in str(error).lower():
            raise ScimError(410, f"{error}; run a full sync", "expiredWatermark") from None
        raise
    latest: dict[str, tuple[str, ResourceMapping | None, Entry | None, str]] = {}
    for change in batch.changes:
        entry = change.entry
        in_scope = handler.bases.holds(change.dn)
        # renamed out of the bases: gone from SCIM's view, as a deletion would be
        moved_out = change.kind is ChangeKind.RENAME and not in_scope and handler.bases.holds(change.old_dn)
        if entry is None or not (in_scope or moved_out):
            continue
        mapping = classify(handler.profile, entry)
        scim_id = _id_of(handler, entry, mapping)
        if scim_id is None:
            continue
        if change.kind is ChangeKind.DELETE or moved_out:
            latest.pop(scim_id, None)
            latest[scim_id] = ("delete", mapping, None, scim_id)
            ref = handler.refs.ref_of(entry, mapping) if mapping else None
            if ref is not None:
                handler.refs.forget(ref)
        elif mapping is not None:
            latest.pop(scim_id, None)
            latest[scim_id] = ("upsert", mapping, entry, scim_id)
    records: list[dict[str, Any]] = []
    for op, mapping, entry, scim_id in latest.values():
        record: dict[str, Any] = {"op": op, "resourceType": mapping.name if mapping else None, "id": scim_id}
        if entry is not None and mapping is not None:
            current = await handler.directory.get(entry.dn, mapping.ldap_attributes)
            if current is None:
                continue  # deleted after this change; a later batch carries the deletion
            record["resource"] = await handler.resource(mapping, current)
        records.append(record)
    return 200, {
        "schemas": [CHANGES_SCHEMA],
        "watermark": batch.watermark,
        "more": batch.more,
        "totalResults": len(records),
        "Resources": records,
    }


def _id_of(handler: ScimHandler, entry: Entry, mapping: ResourceMapping | None) -> str | None:
    for candidate in (mapping, *handler.profile.resources) if mapping else handler.profile.resources:
        if candidate is None:
            continue
        anchor = entry.first(candidate.id_attribute)
        if anchor is not None:
            return anchor_to_id(anchor, candidate.id_binary)
    return None
