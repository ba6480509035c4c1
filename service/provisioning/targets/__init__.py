"""Targets: where the provisioning service writes objects (interface in ``targets.base``)."""
