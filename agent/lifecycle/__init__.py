"""The agent's lifecycle with a control plane: registration, bootstrap, endpoint refresh, heartbeat.

``register`` (once, ``cloudprov agent register``) makes a key and CSR and stores the certificate;
``install(agent)`` adds the ``bootstrap_service`` and ``heartbeat_service`` and a readiness check;
``initial_transport(settings)`` starts a restarted agent on its last known endpoints. The agent
and the control plane share only the JSON of ``/v1/*`` (this package never imports ``service``).
"""

from agent.lifecycle.client import ControlPlaneRefusedError, ControlPlaneUnavailableError, LifecycleError
from agent.lifecycle.identity import Identity, IdentityError
from agent.lifecycle.register import register
from agent.lifecycle.service import Lifecycle, bootstrap_service, heartbeat_service, initial_transport, install

__all__ = [
    "ControlPlaneRefusedError",
    "ControlPlaneUnavailableError",
    "Identity",
    "IdentityError",
    "Lifecycle",
    "LifecycleError",
    "bootstrap_service",
    "heartbeat_service",
    "initial_transport",
    "install",
    "register",
]
