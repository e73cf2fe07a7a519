"""HTTP API and fleet-manager page of the ticket store (FastAPI app factory: :func:`create_app`)."""

from __future__ import annotations

from fleetpulse.alerts.api.app import create_app

__all__ = ["create_app"]
