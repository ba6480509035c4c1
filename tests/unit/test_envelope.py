"""The request/response envelope: round trips, and every malformed input refused with a reason."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from protocol.envelope import (
    EnvelopeError,
    Request,
    Response,
    ScimOperation,
    canonical,
    decode_request,
    decode_response,
    encode_response,
)


def _request(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": 1,
        "id": "req-1",
        "domain": "example.com",
        "op": {"method": "PATCH", "path": "/Users/42", "query": {"attributes": "userName"}, "body": {"a": [1, 2]}},
        "deadline": 1_700_000_000.5,
        "reply_to": "reply.x",
        "key_id": "k1",
        "sig": "c2ln",
    }
    data.update(changes)
    return data


def _op(**changes: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"method": "GET", "path": "/Users", "query": {}, "body": None}
    op.update(changes)
    return op


def _decode(data: Any) -> Request:
    return decode_request(json.dumps(data))


def test_request_round_trip() -> None:
    """A request decodes to exactly what was encoded, field by field."""
    request = Request(
        id="r1",
        domain="example.com",
        operation=ScimOperation("POST", "/Users", {"a": "b"}, {"userName": "ada", "n": [1, 2.5, None, "é"]}),
        deadline=1_700_000_123.25,
        key_id="k1",
        signature="AAAA",
        reply_to="inbox",
    )
    assert decode_request(request.encode()) == request


def test_response_round_trip() -> None:
    """A response decodes to exactly what was encoded, timings included."""
    response = Response("r1", 201, {"id": "x", "meta": {"version": 'W/"1"'}}, "agent-1", {"handle_ms": 1.5})
    assert decode_response(response.encode()) == response


def test_decoded_request_keeps_optional_fields_empty() -> None:
    """An unsigned request without reply_to decodes with those fields as None, not empty strings."""
    request = _decode(_request(key_id=None, sig=None, reply_to=None))
    assert (request.key_id, request.signature, request.reply_to) == (None, None, None)


def test_canonical_encoding_is_stable() -> None:
    """The canonical form sorts keys and drops whitespace, so equal data gives equal bytes."""
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == canonical({"a": [1, {"c": "é", "d": 2}], "b": 1})
    assert canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_signed_part_leaves_out_only_the_signature() -> None:
    """The signed bytes change with every field but the signature."""
    request = _decode(_request())
    assert request.signed_part() == request.with_signature("k1", "other").signed_part()
    assert b'"sig"' not in request.signed_part()
    assert b'"key_id":"k1"' in request.signed_part()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"text"', "must be a JSON object, not str"),
        (b"null", "must be a JSON object, not NoneType"),
    ],
)
def test_request_that_is_not_a_json_object_is_refused(raw: bytes, problem: str) -> None:
    """Bytes that are not a JSON object are refused with the reason."""
    with pytest.raises(EnvelopeError, match=problem):
        decode_request(raw)


@pytest.mark.parametrize("version", [None, 0, 2, "1", 1.5, 1.0, True])
def test_wrong_version_is_refused(version: Any) -> None:
    """Any version but the integer 1 is refused, naming the version received."""
    data = _request(v=version)
    if version is None:
        del data["v"]
    with pytest.raises(EnvelopeError, match="unsupported version"):
        _decode(data)


@pytest.mark.parametrize("name", ["id", "domain", "op", "deadline"])
def test_missing_required_field_is_named(name: str) -> None:
    """A request without a required field is refused, naming the field."""
    data = _request()
    del data[name]
    with pytest.raises(EnvelopeError, match=f"'{name}' must be"):
        _decode(data)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", 5),
        ("domain", ["example.com"]),
        ("op", "GET /Users"),
        ("deadline", "soon"),
        ("deadline", True),
        ("key_id", 1),
        ("sig", {"x": 1}),
        ("reply_to", 3.5),
    ],
)
def test_wrong_typed_field_is_named(name: str, value: Any) -> None:
    """A field of the wrong JSON type is refused, naming the field and the type received."""
    with pytest.raises(EnvelopeError, match=f"'{name}' must be .*got {type(value).__name__}"):
        _decode(_request(**{name: value}))


@pytest.mark.parametrize(
    ("op", "problem"),
    [
        (_op(method="TRACE"), "method 'TRACE' is not one of"),
        (_op(method=""), "method '' is not one of"),
        (_op(method=1), "'method' must be str"),
        ({"path": "/Users"}, "'method' must be str"),
        (_op(path="Users"), "path 'Users' must start with '/'"),
        (_op(path=""), "path '' must start with '/'"),
        (_op(path=None), "'path' must be str"),
        (_op(query=["a"]), "query must be an object of string values"),
        (_op(query={"count": 5}), "query must be an object of string values"),
        (_op(query="filter=x"), "query must be an object of string values"),
    ],
)
def test_malformed_operation_is_refused(op: dict[str, Any], problem: str) -> None:
    """A bad SCIM operation (method, path, query) is refused with a message naming the problem."""
    with pytest.raises(EnvelopeError, match=problem):
        _decode(_request(op=op))


def test_lower_case_method_is_refused() -> None:
    """The method must be spelled upper-case, as signed: "delete" is refused rather than read as DELETE."""
    with pytest.raises(EnvelopeError, match="upper-case"):
        _decode(_request(op=_op(method="delete")))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_deadline_is_refused(literal: str) -> None:
    """NaN and infinite numbers (which Python's own JSON parser accepts) are refused as not JSON."""
    raw = json.dumps(_request(deadline=0)).replace('"deadline": 0', f'"deadline": {literal}')
    with pytest.raises(EnvelopeError, match=r"request is not valid JSON: .*(character|digit|infinity)"):
        decode_request(raw)


@pytest.mark.parametrize("request_id", ["", "x" * 201])
def test_request_id_length_is_bounded(request_id: str) -> None:
    """An empty or over-long request id is refused."""
    with pytest.raises(EnvelopeError, match="'id' must be 1 to 200 characters"):
        _decode(_request(id=request_id))


def test_deep_nesting_is_refused_not_crashed() -> None:
    """A body nested deeper than the parser can go is an EnvelopeError, not a RecursionError."""
    depth = 100_000
    raw = '{"v":1,"id":"x","domain":"d","deadline":1,"op":{"method":"POST","path":"/Users","body":'
    raw += "[" * depth + "]" * depth + "}}"
    with pytest.raises(EnvelopeError, match="nests too deeply"):
        decode_request(raw)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"v": 1, "status": 200}, "'request_id' must be str"),
        ({"v": 1, "request_id": "r", "status": "200"}, "'status' must be int"),
        ({"v": 1, "request_id": "r", "status": True}, "'status' must be int"),
        ({"v": 1, "request_id": "r", "status": 200, "timing": [1]}, "'timing' must be an object"),
        ({"v": 2, "request_id": "r", "status": 200}, "unsupported version 2"),
        ([], "must be a JSON object"),
    ],
)
def test_malformed_response_is_refused(data: Any, problem: str) -> None:
    """A malformed response envelope is refused with a message naming the problem."""
    with pytest.raises(EnvelopeError, match=problem):
        decode_response(json.dumps(data))


def test_encoding_refuses_non_finite_numbers() -> None:
    """A request whose body holds NaN cannot be encoded, so it never reaches the wire."""
    request = Request("r", "d", ScimOperation("POST", "/Users", {}, {"x": float("nan")}), 1.0)
    with pytest.raises(ValueError, match="not JSON compliant"):
        request.encode()


def test_with_signature_keeps_every_other_field() -> None:
    """Signing changes key_id, sig and proof only: every other field of the request comes through as it was."""
    request = decode_request(json.dumps(_request()).encode())
    signed = request.with_signature("k2", "other", ("r:AAAA",))
    changed = {"key_id", "signature", "proof"}
    for field in dataclasses.fields(Request):
        if field.name not in changed:
            assert getattr(signed, field.name) == getattr(request, field.name), field.name
    assert (signed.key_id, signed.signature, signed.proof) == ("k2", "other", ("r:AAAA",))


def test_encode_response_makes_the_bytes_of_a_response() -> None:
    """The agent's shortcut encodes exactly what Response.encode would, field order included."""
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0, "Resources": []}
    response = Response("req-1", 200, body, "agent-1", {"handle_ms": 1.5})
    assert encode_response("req-1", 200, body, "agent-1", {"handle_ms": 1.5}) == response.encode()
    assert decode_response(encode_response("req-1", 404, None, "", {})) == Response("req-1", 404, None, "", {})


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"request_id": 7}, "'request_id' must be str"),
        ({"status": "200"}, "'status' must be int"),
        ({"status": True}, "'status' must be int"),
        ({"agent_id": 3}, "'agent_id' must be str"),
    ],
)
def test_a_response_field_of_the_wrong_type_is_refused(changes: dict[str, Any], problem: str) -> None:
    """Each response field of the wrong type is refused, naming the field."""
    data = {"v": 1, "request_id": "req-1", "status": 200, "body": None, "agent_id": "a", "timing": {}}
    data.update(changes)
    with pytest.raises(EnvelopeError, match=problem):
        decode_response(json.dumps(data).encode())


# a value of its field's type for every field, each different from the others
_DISTINCT: dict[type, dict[str, Any]] = {
    ScimOperation: {"method": "PATCH", "path": "/Users/1", "query": {"q": "1"}, "body": {"b": 2}},
    Request: {
        "id": "r1",
        "domain": "d1",
        "operation": ScimOperation("GET", "/Groups"),
        "deadline": 3.5,
        "key_id": "k1",
        "signature": "s1",
        "reply_to": "inbox",
        "proof": ("p1",),
        "version": 7,
    },
    Response: {"request_id": "r2", "status": 201, "body": [1], "agent_id": "a1", "timing": {"t": 1.0}, "version": 8},
}


@pytest.mark.parametrize("cls", [ScimOperation, Request, Response])
def test_each_envelope_init_sets_every_field_to_its_own_argument(cls: type) -> None:
    """The envelope classes' own __init__ sets each dataclass field, by keyword, to the value passed for it."""
    values = _DISTINCT[cls]
    assert set(values) == {field.name for field in dataclasses.fields(cls)}
    made = cls(**values)
    assert {name: getattr(made, name) for name in values} == values
    assert made == cls(**values)
    assert made != cls(**{**values, dataclasses.fields(cls)[0].name: "another"})


@pytest.mark.parametrize(
    ("made", "field"),
    [
        (ScimOperation("GET", "/Users"), "path"),
        (Request("r", "d", ScimOperation("GET", "/Users"), 1.0), "signature"),
        (Response("r", 200), "status"),
    ],
)
def test_envelope_objects_stay_frozen(made: object, field: str) -> None:
    """A request, its operation or a response cannot be changed by assignment once made."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, field, "changed")


def test_envelope_defaults_are_fresh_dicts() -> None:
    """An operation's query and a response's timing default to an empty dict of their own, not a shared one."""
    assert ScimOperation("GET", "/a").query == {}
    assert ScimOperation("GET", "/a").query is not ScimOperation("GET", "/b").query
    assert Response("a", 200).timing is not Response("b", 200).timing


def test_a_body_nested_deeper_than_the_encoder_writes_is_malformed() -> None:
    """A body orjson reads but cannot write back (300 levels) is an EnvelopeError when its signature is checked,
    so the dispatcher refuses it as malformed instead of retrying it as a fault of its own."""
    body: Any = "x"
    for _ in range(300):
        body = [body]
    request = _decode(_request(op=_op(method="POST", body=body)))
    with pytest.raises(EnvelopeError, match="cannot be encoded"):
        request.signed_part()
