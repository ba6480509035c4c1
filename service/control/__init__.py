"""The control plane: a CA of its own, agent registration, bootstrap over mutual TLS, and the admin API.

``ca`` signs agent certificates, ``plane`` holds the rules (tokens, assignments, signing keys,
revocation) over a ``service.store.Store``, ``app`` serves them over HTTPS with aiohttp. Nothing
here imports the agent: both sides agree only on the JSON documented in ``app``.
"""
