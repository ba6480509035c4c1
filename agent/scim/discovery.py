"""The SCIM discovery documents: /ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7643 §5-7).

Built once from ``scim2-models`` (so the schemas match the RFC's attribute definitions) and the
agent's limits; the change feed (``/Changes``) is announced as an extension schema of our own.
``scim2-models`` is imported on the first discovery request: importing it builds pydantic models and a
filter grammar, which would add over a second to every agent's start.
"""

from __future__ import annotations

from functools import cache
from typing import Any

LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
CHANGES_SCHEMA = "urn:cloudprov:params:scim:api:messages:1.0:Changes"


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return data


def service_provider_config(max_results: int) -> dict[str, Any]:
    from scim2_models import Bulk, ChangePassword, ETag, Filter, Patch, ServiceProviderConfig, Sort

    config = ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=max_results),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[],
    )
    body = _dump(config)
    body["meta"] = {"resourceType": "ServiceProviderConfig", "location": "/ServiceProviderConfig"}
    return body


@cache
def resource_types() -> list[dict[str, Any]]:
    from scim2_models import EnterpriseUser, Group, ResourceType, User

    types = []
    for model, endpoint in ((User[EnterpriseUser], "/Users"), (Group, "/Groups")):
        body = _dump(ResourceType.from_resource(model))
        body["endpoint"] = endpoint
        body["meta"] = {"resourceType": "ResourceType", "location": f"/ResourceTypes/{body['id']}"}
        types.append(body)
    return types


@cache
def schemas() -> list[dict[str, Any]]:
    from scim2_models import EnterpriseUser, Group, User

    documents = []
    for model in (User, Group, EnterpriseUser):
        body = _dump(model.to_schema())
        body["meta"] = {"resourceType": "Schema", "location": f"/Schemas/{body['id']}"}
        documents.append(body)
    return documents


def list_response(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": len(resources),
        "startIndex": 1,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
