"""The cloud side: the requester client today; the control plane and provisioning service build on it."""
