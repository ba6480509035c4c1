"""What the provisioning service and the agent agree on.

The request/response envelope and its signature (``envelope``, ``signing``), SCIM error types
(``errors``) and the SCIM filter language (``scimfilter``). Nothing here imports the rest of
cloudprov: both sides depend on this package, never on each other.
"""
