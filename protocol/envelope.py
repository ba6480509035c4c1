"""The request/response envelope carried by every transport (wire format version 1).

A request is one SCIM operation (method, path, query parameters, JSON body) addressed to a domain,
with an id, a deadline (Unix seconds) and an Ed25519 signature over its canonical encoding (see
``signing``). A response names the request it answers, the SCIM status and body, the agent that
produced it and how long each stage took. Both encode as UTF-8 JSON objects; ``decode_request`` and
``decode_response`` reject anything else with an ``EnvelopeError`` that names the problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from protocol.errors import ProtocolError

VERSION = 1
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
MAX_PROOF_STEPS = 32  # a batch proof climbs one step per tree level: 2**32 requests is beyond any batch


class EnvelopeError(ProtocolError):
    """The bytes on the wire are not a valid envelope (the message names what is wrong)."""


# The envelope classes are frozen dataclasses (equality, repr, hashing, ``dataclasses.replace`` and
# ``FrozenInstanceError`` as dataclasses make them) with an ``__init__`` of their own: the generated one
# sets each field through ``object.__setattr__`` (looked up per field, to get past the frozen
# ``__setattr__``), about twice the cost of setting it through the field's slot descriptor, which is
# what this ``__init__`` does. About six are built per request.


@dataclass(frozen=True, slots=True, init=False)
class ScimOperation:
    """One SCIM call: ``GET /Users?filter=…``, ``PATCH /Groups/{id}`` with a PatchOp body, …"""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def __init__(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None) -> None:
        _set_method(self, method)
        _set_path(self, path)
        _set_query(self, {} if query is None else query)
        _set_body(self, body)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "body": self.body}

    @property
    def is_write(self) -> bool:
        return self.method != "GET"


@dataclass(frozen=True, slots=True, init=False)
class Request:
    """A signed SCIM request for the agents of ``domain``; void after ``deadline`` (Unix seconds)."""

    id: str
    domain: str
    operation: ScimOperation
    deadline: float
    key_id: str | None = None
    signature: str | None = None
    reply_to: str | None = None
    proof: tuple[str, ...] | None = None
    version: int = VERSION

    def __init__(
        self,
        id: str,
        domain: str,
        operation: ScimOperation,
        deadline: float,
        key_id: str | None = None,
        signature: str | None = None,
        reply_to: str | None = None,
        proof: tuple[str, ...] | None = None,
        version: int = VERSION,
    ) -> None:
        _set_id(self, id)
        _set_domain(self, domain)
        _set_operation(self, operation)
        _set_deadline(self, deadline)
        _set_key_id(self, key_id)
        _set_signature(self, signature)
        _set_reply_to(self, reply_to)
        _set_proof(self, proof)
        _set_version(self, version)

    def to_dict(self) -> dict[str, Any]:
        return _with_signature(self.signed_fields(), self.signature, self.proof)

    def signed_fields(self) -> dict[str, Any]:
        """Every field a signature covers (all but the signature and its batch proof), in a fresh dict:
        laid out by ``request_fields``, the one layout of a request's signed fields."""
        op = self.operation
        fields = request_fields(
            self.id, self.domain, op.method, op.path, op.query, op.body, self.deadline, self.key_id, self.reply_to
        )
        if self.version != VERSION:  # never so once decoded (``_load_object`` accepts VERSION only)
            fields["v"] = self.version  # the key keeps its place
        return fields

    def signed_part(self) -> bytes:
        """The canonical bytes a signature covers: every field but the signature and its batch proof.

        ``key_id`` is covered, so a signature cannot be re-attributed to another key. A body nested deeper
        than the encoder writes (orjson reads 1,024 levels but writes 255) is an ``EnvelopeError``.
        """
        try:
            return canonical(self.signed_fields())
        except TypeError as error:  # orjson.JSONEncodeError
            raise EnvelopeError(f"request cannot be encoded to check its signature: {error}") from None

    def with_signature(self, key_id: str, signature: str, proof: tuple[str, ...] | None = None) -> Request:
        # every field named (dataclasses.replace looks them all up each time: 3x the cost, per request signed)
        return Request(
            self.id, self.domain, self.operation, self.deadline, key_id, signature, self.reply_to, proof, self.version
        )

    def encode(self) -> bytes:
        refuse_non_finite(self.operation.body)
        return _dumps(self.to_dict())


@dataclass(frozen=True, slots=True, init=False)
class Response:
    """The answer to request ``request_id``: SCIM status and body, who answered, stage timings (ms)."""

    request_id: str
    status: int
    body: Any = None
    agent_id: str = ""
    timing: dict[str, float] = field(default_factory=dict)
    version: int = VERSION

    def __init__(
        self,
        request_id: str,
        status: int,
        body: Any = None,
        agent_id: str = "",
        timing: dict[str, float] | None = None,
        version: int = VERSION,
    ) -> None:
        _set_request_id(self, request_id)
        _set_status(self, status)
        _set_body_of_response(self, body)
        _set_agent_id(self, agent_id)
        _set_timing(self, {} if timing is None else timing)
        _set_response_version(self, version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "request_id": self.request_id,
            "status": self.status,
            "body": self.body,
            "agent_id": self.agent_id,
            "timing": self.timing,
        }

    def encode(self) -> bytes:
        return _dumps(self.to_dict())


def _setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The ``__set__`` of ``cls``'s slot ``name``: sets the field past the frozen ``__setattr__``."""
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


_set_method, _set_path, _set_query, _set_body = (_setter(ScimOperation, n) for n in ("method", "path", "query", "body"))
(
    _set_id, _set_domain, _set_operation, _set_deadline, _set_key_id, _set_signature, _set_reply_to, _set_proof,
    _set_version,
) = (
    _setter(Request, n)
    for n in ("id", "domain", "operation", "deadline", "key_id", "signature", "reply_to", "proof", "version")
)  # fmt: skip
_set_request_id, _set_status, _set_body_of_response, _set_agent_id, _set_timing, _set_response_version = (
    _setter(Response, n) for n in ("request_id", "status", "body", "agent_id", "timing", "version")
)


def encode_response(request_id: str, status: int, body: Any, agent_id: str, timing: dict[str, float]) -> bytes:
    """``Response(request_id, status, body, agent_id, timing).encode()``, without making the Response (an
    agent encodes one per request and never reads it back)."""
    return _dumps(
        {"v": VERSION, "request_id": request_id, "status": status, "body": body, "agent_id": agent_id, "timing": timing}
    )


def request_fields(
    request_id: str,
    domain: str,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    deadline: float,
    key_id: str | None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """The signed fields of a request (``Request.signed_fields`` lays its own out here), also without making
    the Request and its ScimOperation: what a requester that sends a request and never reads it back lays
    out for ``Signer.encode_fields`` (two frozen objects less per call)."""
    return {
        "v": VERSION,
        "id": request_id,
        "domain": domain,
        "op": {"method": method, "path": path, "query": query, "body": body},
        "deadline": float(deadline),  # the decoder yields a float: sign what arrives
        "reply_to": reply_to,
        "key_id": key_id,
    }


def encode_signed(fields: dict[str, Any], signature: str, proof: tuple[str, ...] | None) -> bytes:
    """The envelope of the request whose ``signed_fields()`` are ``fields``, signed with ``signature``
    (and ``proof``): the bytes ``with_signature(…).encode()`` makes (``to_dict`` lays them out the same
    way), from the fields its signed part was encoded from, which get the two added. A signer lays each
    request's fields out once this way instead of three times; the body is not checked here again
    (``refuse_non_finite``, before signing)."""
    return _dumps(_with_signature(fields, signature, proof))


def _with_signature(fields: dict[str, Any], signature: str | None, proof: tuple[str, ...] | None) -> dict[str, Any]:
    fields["sig"] = signature
    if proof is not None:
        fields["proof"] = list(proof)
    return fields


def canonical(data: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 (orjson; NaN and infinity encode as null)."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def refuse_non_finite(value: Any) -> None:
    """``ValueError`` for NaN or infinity in ``value`` (a request body): orjson writes them as null, which
    would silently clear a value."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not JSON compliant: a request body holds only finite numbers")
    elif isinstance(value, dict):
        for item in value.values():
            refuse_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            refuse_non_finite(item)


def _load_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            raise EnvelopeError(f"{what} nests too deeply (more than 1,024 levels)") from None
        raise EnvelopeError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EnvelopeError(f"{what} must be a JSON object, not {type(data).__name__}")
    version = data.get("v")
    if type(version) is not int or version != VERSION:  # JSON true and 1.0 are not version 1
        raise EnvelopeError(f"{what} has unsupported version {version!r} (this side speaks {VERSION})")
    return data


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if type(value) is kind:  # the usual case, first (never bool: no field asks for a bool)
        return value
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EnvelopeError(f"{what} field {name!r} must be {expected}, got {type(value).__name__}")
    return value


def decode_request(raw: bytes | str) -> Request:
    """Parse and validate a request envelope; raises ``EnvelopeError`` naming the faulty field."""
    data = _load_object(raw, "request")
    op = data.get("op")
    if type(op) is not dict:
        op = _field(data, "op", dict, "request")
    method = op.get("method")
    if type(method) is not str or method not in METHODS:
        method = _field(op, "method", str, "request op")
        # Exact spelling only: the signature covers the method as sent, so "get" is not silently "GET".
        raise EnvelopeError(f"request op method {method!r} is not one of {', '.join(sorted(METHODS))} (upper-case)")
    path = op.get("path")
    if type(path) is not str:
        path = _field(op, "path", str, "request op")
    if not path.startswith("/"):
        raise EnvelopeError(f"request op path {path!r} must start with '/'")
    query = op.get("query") or {}
    if not isinstance(query, dict):
        raise EnvelopeError("request op query must be an object of string values")
    for name, value in query.items():  # a plain loop: a generator under all() costs a frame per request
        if not (isinstance(name, str) and isinstance(value, str)):
            raise EnvelopeError("request op query must be an object of string values")
    deadline = data.get("deadline")
    if type(deadline) is not float:
        deadline = float(_field(data, "deadline", (int, float), "request"))
    if not math.isfinite(deadline):
        raise EnvelopeError("request field 'deadline' must be a finite number")
    request_id = data.get("id")
    if type(request_id) is not str:
        request_id = _field(data, "id", str, "request")
    if not request_id or len(request_id) > 200:
        raise EnvelopeError("request field 'id' must be 1 to 200 characters")
    domain = data.get("domain")
    if type(domain) is not str:
        domain = _field(data, "domain", str, "request")
    key_id, signature, reply_to, proof = data.get("key_id"), data.get("sig"), data.get("reply_to"), data.get("proof")
    if not (type(key_id) is str or key_id is None):
        key_id = _field(data, "key_id", str, "request", optional=True)
    if not (type(signature) is str or signature is None):
        signature = _field(data, "sig", str, "request", optional=True)
    if not (type(reply_to) is str or reply_to is None):
        reply_to = _field(data, "reply_to", str, "request", optional=True)
    return Request(  # id, domain, operation, deadline, key_id, signature, reply_to, proof (positional: cheaper)
        request_id,
        domain,
        # the query is the parser's own fresh dict (or an empty one): nothing else holds it, no copy needed
        ScimOperation(method, path, query, op.get("body")),
        deadline,
        key_id,
        signature,
        reply_to,
        None if proof is None else _proof(proof),
    )


def _proof(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_PROOF_STEPS:
        raise EnvelopeError(f"request field 'proof' must be a list of at most {MAX_PROOF_STEPS} strings")
    for step in value:  # a plain loop, as for the query
        if not isinstance(step, str):
            raise EnvelopeError(f"request field 'proof' must be a list of at most {MAX_PROOF_STEPS} strings")
    return tuple(value)


def decode_response(raw: bytes | str) -> Response:
    """Parse and validate a response envelope; raises ``EnvelopeError`` naming the faulty field."""
    data = _load_object(raw, "response")
    timing = data.get("timing") or {}
    if not isinstance(timing, dict):
        raise EnvelopeError("response field 'timing' must be an object")
    times: dict[str, float] = {}
    for name, value in timing.items():  # a plain loop: a comprehension costs a frame per response
        if isinstance(value, (int, float)):
            times[str(name)] = float(value)
    request_id, status, agent_id = data.get("request_id"), data.get("status"), data.get("agent_id")
    if type(request_id) is not str:
        request_id = _field(data, "request_id", str, "response")
    if type(status) is not int:
        status = _field(data, "status", int, "response")
    if type(agent_id) is not str:
        agent_id = _field(data, "agent_id", str, "response", optional=True) or ""
    return Response(
        request_id,
        status,
        data.get("body"),
        agent_id,
        times,
    )
