"""The provisioning service: scheduled sync from directories (through their agents) to a target.

``targets/`` (where objects are written: the embedded store, any SCIM 2.0 service), ``expressions``
and ``mapping`` (source → target attributes), ``scoping`` (which objects are in scope), and the
engine, jobs, scheduler, state and safety rails that drive a sync cycle.
"""
