"""Why a Kafka broker turns this client away at TLS, found with one handshake before a Kafka client waits.

The client libraries log this reason and raise only "Unable to bootstrap" (kafka-python after its
bootstrap timeout). Standard library only: the endpoint agent (``fleetpulse-agent check``) uses it
as the services do.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

from fleetpulse.config import TLS_CLIENT_CERTIFICATE_REFUSALS, KafkaSettings, ssl_key_password

TLS_FILES_UNREADABLE = (
    "cannot load the Kafka TLS files (kafka.ssl_cafile, ssl_certfile, ssl_keyfile with ssl_key_password)"
)
"""The first half of the line every client prints when its TLS files do not load; OpenSSL's reason follows."""


def client_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context kafka-python builds from the same settings, so that the probe judges the broker as the
    agent's client will: TLS 1.2 or newer, the broker's name checked against its certificate, ``ssl_cafile``
    or the system's CAs, the client certificate for mutual TLS; None without TLS. (Not
    ``ssl.create_default_context``: from Python 3.13 it verifies certificates more strictly than kafka-python.)

    Raises :class:`~fleetpulse.config.KeyPasswordMissing`, ``OSError`` or ``ssl.SSLError`` for files that do
    not load; their messages name the file, never the key or its password."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if kafka.ssl_cafile is not None:
        context.load_verify_locations(str(kafka.ssl_cafile))
    else:
        context.load_default_certs()
    if kafka.ssl_certfile is not None:
        context.load_cert_chain(
            certfile=str(kafka.ssl_certfile),
            keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile is not None else None,
            password=ssl_key_password(kafka),
        )
    return context


def handshake_refusal(bootstrap_servers: str, context: ssl.SSLContext, timeout_s: float = 5.0) -> str | None:
    """Why the first of ``bootstrap_servers`` refuses a TLS handshake with ``context``, or None: it passes, the
    server cannot be reached, or it closed the connection mid-handshake without a TLS alert (a broker restarting:
    not a TLS matter, and the agent retries it soon rather than at its retry cap).

    Under TLS 1.3 the client's side of the handshake completes before the broker has checked the client's
    certificate: its refusal arrives as an alert on the first read, so the probe reads (briefly) after the
    handshake."""
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    host = host.strip("[]")
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.settimeout(min(timeout_s, 1.0))
            with contextlib.suppress(TimeoutError):  # nothing said: the broker waits for a request
                tls.recv(1)
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the broker's TLS certificate is not trusted ({exc.verify_message}): set kafka.ssl_cafile to the "
            "cluster's CA certificate"
        )
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if any(alert in reason for alert in TLS_CLIENT_CERTIFICATE_REFUSALS):
            return (
                f"the broker refused this client's TLS certificate, or that it sent none ({reason}): set "
                "kafka.ssl_certfile and ssl_keyfile to a client certificate the cluster's clients CA issued "
                "(if they are, check that the bootstrap address reaches the broker: the alert is not authenticated)"
            )
        return f"the TLS handshake failed ({reason})"
    except (OSError, ValueError):  # unreachable, or no port: not a TLS matter
        return None
    return None
