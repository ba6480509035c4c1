"""A SCIM client that speaks to a domain's agents through any transport's ``Requester``.

``ScimClient.call(method, path, query, body)`` builds a request envelope with a fresh id and a
deadline ``timeout`` seconds away, signs it, sends it and returns the decoded ``Response``. Calls
made together share one batch signature (``protocol.signing.SignatureBatcher``): the agent checks
one Ed25519 signature per batch instead of one per request. A call made while others are in flight
waits up to ``batch_linger`` seconds for them to join its batch (their replies trickle in one by one
and each makes its caller send again). Over a ``PostingRequester`` (the local transport's) a call is
sent by the callback that signs its batch and wakes once, for its reply. Helpers
cover the usual calls (``get``, ``search``, ``create``, ``patch``, ``delete``, ``changes``) and
``read_all`` streams every resource of a type with cursor paging.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

from mypy_extensions import mypyc_attr

from protocol.envelope import Request, Response, ScimOperation, decode_response, request_fields
from protocol.signing import SignatureBatcher, Signer
from transports.base import MisroutedReplyError, PostingRequester, Requester

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
#: Seconds a call may wait for the client's other calls in flight to join its batch signature.
DEFAULT_BATCH_LINGER = 0.001


class ScimCallError(Exception):
    """A SCIM call came back with an error status."""

    def __init__(self, response: Response) -> None:
        body = response.body if isinstance(response.body, dict) else {}
        super().__init__(f"SCIM {response.status}: {body.get('detail', response.body)}")
        self.response = response


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled, and subclassed by code that is not
class ScimClient:
    def __init__(
        self,
        requester: Requester,
        signer: Signer,
        domain: str,
        *,
        timeout: float = 600.0,
        batch_linger: float = DEFAULT_BATCH_LINGER,
    ) -> None:
        self.requester = requester
        self.signer = signer
        self.domain = domain
        self.timeout = timeout
        self._batcher = SignatureBatcher(linger=batch_linger)
        self._in_flight = 0

    def _unsigned(
        self, method: str, path: str, query: Mapping[str, str] | None, body: Any, timeout: float | None
    ) -> Request:
        # positional: keyword arguments cost a Python call more to match up
        return Request(
            os.urandom(16).hex(),  # 32 random hex digits, as uuid4().hex without building a UUID
            self.domain,
            ScimOperation(method.upper(), path, dict(query or {}), body),
            time.time() + (timeout or self.timeout),
            self.signer.key_id,
            None,
            self.requester.reply_address,
        )

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        timeout: float | None = None,
    ) -> Request:
        """A signed request envelope (not sent), with a signature of its own."""
        return self.signer.sign(self._unsigned(method, path, query, body, timeout))

    async def send(self, request: Request, *, timeout: float | None = None) -> Response:
        raw = await self.requester.request(self.domain, request.id, request.encode(), timeout=timeout or self.timeout)
        return _answering(decode_response(raw), request.id)

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        timeout: float | None = None,
    ) -> Response:
        self._in_flight += 1
        try:
            # the request's signed fields only (not a Request: nothing here reads it back), positional
            request_id = os.urandom(16).hex()
            timeout = timeout or self.timeout
            fields = request_fields(
                request_id,
                self.domain,
                method.upper(),
                path,
                dict(query or {}),
                body,
                time.time() + timeout,
                self.signer.key_id,
                self.requester.reply_address,
            )
            requester = self.requester
            if isinstance(requester, PostingRequester):
                # sent as its batch is signed: this task wakes once, for the reply (a test holds this way
                # and the one below together)
                waiter, timer = requester.expect(request_id, timeout)
                try:
                    self._batcher.sign_then(
                        self.signer,
                        fields,
                        partial(requester.post, self.domain, request_id, timeout),
                        waiter,
                        expected=self._in_flight - 1,
                    )
                except Exception as error:  # a body the envelope refuses: raised by ``reply``, which forgets it
                    waiter.set_exception(error)
                raw = await requester.reply(request_id, waiter, timer, timeout)
            else:
                envelope = await self._batcher.sign_and_encode(self.signer, fields, expected=self._in_flight - 1)
                # ``send``, inlined: one coroutine less per call
                raw = await requester.request(self.domain, request_id, envelope, timeout=timeout)
            return _answering(decode_response(raw), request_id)
        finally:
            self._in_flight -= 1

    async def ok(self, method: str, path: str, query: Mapping[str, str] | None = None, body: Any = None) -> Any:
        """The body of a successful call; ``ScimCallError`` otherwise."""
        response = await self.call(method, path, query, body)
        if response.status >= 400:
            raise ScimCallError(response)
        return response.body

    async def get(self, path: str) -> Any:
        return await self.ok("GET", path)

    async def search(self, endpoint: str, filter: str | None = None, **query: str) -> Any:
        params = dict(query)
        if filter is not None:
            params["filter"] = filter
        return await self.ok("GET", endpoint, params)

    async def create(self, endpoint: str, resource: dict[str, Any]) -> Any:
        return await self.ok("POST", endpoint, body=resource)

    async def patch(self, path: str, operations: list[dict[str, Any]]) -> Any:
        return await self.ok("PATCH", path, body={"schemas": [PATCH_SCHEMA], "Operations": operations})

    async def delete(self, path: str) -> None:
        await self.ok("DELETE", path)

    async def changes(self, watermark: str | None, count: int = 1000) -> Any:
        query = {"count": str(count)}
        if watermark:
            query["watermark"] = watermark
        return await self.ok("GET", "/Changes", query)

    def read_all(self, endpoint: str, *, page_size: int = 1000, **query: str) -> AsyncIterator[list[Any]]:
        """Every resource of ``endpoint``, page by page, with cursor paging (one directory pass)."""
        return _Pages(self, endpoint, {**query, "count": str(page_size), "cursor": ""})


class _Pages(AsyncIterator[list[Any]]):
    """``ScimClient.read_all``: one cursor-paged list call per page until the agent gives no next cursor.
    Written out rather than as an async generator, which mypyc does not compile (this module is
    compiled: pyproject's ``[tool.cloudprov] compiled``)."""

    def __init__(self, client: ScimClient, endpoint: str, params: dict[str, str]) -> None:
        self._client = client
        self._endpoint = endpoint
        self._params = params
        self._ended = False

    def __aiter__(self) -> _Pages:
        return self

    async def __anext__(self) -> list[Any]:
        if self._ended:
            raise StopAsyncIteration
        body = await self._client.ok("GET", self._endpoint, self._params)
        cursor = body.get("nextCursor")
        if cursor:
            self._params["cursor"] = cursor
        else:
            self._ended = True
        resources: list[Any] = body.get("Resources", [])
        return resources


def _answering(response: Response, request_id: str) -> Response:
    """``response`` if it answers ``request_id``: the reply queue's correlation id is not signed, so a reply
    routed or published to the wrong request must not stand for its answer."""
    if response.request_id != request_id:
        raise MisroutedReplyError(f"the reply to request {request_id} answers request {response.request_id!r}")
    return response
