"""What the provisioning service and the agent agree on.

The request/response envelope and its signature (``envelope``, ``signing``), SCIM error types
(``errors``) and the SCIM filter language (``scimfilter``). Nothing here imports the rest of
cloudprov: both sides depend on this package, never on each other.
"""


def compiled() -> bool:
    """Whether this install runs the modules compiled with mypyc (``setup.py``; pyproject's ``[tool.cloudprov]
    compiled``), judged by ``protocol.envelope``, which is compiled with the rest."""
    from protocol import envelope

    return not (envelope.__file__ or "").endswith(".py")
