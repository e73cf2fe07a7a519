"""Alert policy, replacement tickets, their store, API, web page and ITSM connectors.

Modules (one job each): ``policy`` (pure alert rule, called by streams/), ``storm`` (fleet-wide
grouping), ``actions`` (repair-first recommendation, CO2e, urgency), ``store/`` (SQLAlchemy
models, repository, alembic migrations), ``tickets`` (alert -> ticket rules, lifecycle),
``consumer`` (Kafka -> store), ``outbox`` + ``connectors/`` (webhook, ServiceNow, TOPdesk,
SMTP; retried, never lost), ``labels`` (outcomes -> labels topic), ``api/`` + ``web/``.

What ``fleetpulse demo`` (and other callers) use — everything takes settings objects::

    from fleetpulse.alerts.consumer import consume_until_idle, run_consumer
    stats = consume_until_idle(settings.alerts, settings.kafka, settings.streams, idle_seconds=5, max_seconds=300)
    # or run_consumer(settings.alerts, settings.kafka, settings.streams, stop_event) until a threading.Event is set

    from fleetpulse.alerts.store.repository import open_tickets
    for t in open_tickets(settings.alerts.store_url):  # OpenTicket: ticket_id, device_id, component,
        ...                                            # component_id, opened_at (alert event time)

    from fleetpulse.alerts.api import create_app       # FastAPI app: JSON API + fleet-manager page
    from fleetpulse.alerts.api.auth import hash_secret # users: [[alerts.api.users]] name/role/password_hash
    from fleetpulse.alerts.web.browser import screenshot_pages  # PNGs of the page via headless Chromium

The consumer also delivers the outbox (connectors, labels topic) between polls.
"""
