#!/usr/bin/env bash
# Generates every secret the compose stack reads, in secrets/* (mounted as files), and a .env with
# the image name and public URLs (no secret). Never overwrites existing values.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
rand() { head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 32; }
for name in postgres_password influx_admin_password influx_admin_token influx_grafana_password \
    grafana_admin_password kafka_agent_password; do
    [[ -s "secrets/$name" ]] || rand >"secrets/$name"
done
# The ticket store's URL as the services read it, from a file: a password in their environment would reach
# every child process, /proc/<pid>/environ and crash reports.
[[ -s secrets/store_url ]] ||
    printf 'postgresql://fleetpulse:%s@postgres:5432/fleetpulse' "$(cat secrets/postgres_password)" >secrets/store_url
[[ -f .env ]] || cp .env.example .env
# Kafka's external listener needs a TLS keystore. Without one of your own (from the municipal CA),
# a self-signed certificate for $KAFKA_PUBLIC_HOST is made; agents then trust secrets/kafka-ca.pem.
if [[ ! -s secrets/kafka.keystore.p12 ]]; then
    host="${KAFKA_PUBLIC_HOST:-kafka.example.org}"
    [[ -s secrets/kafka_keystore_password ]] || rand >secrets/kafka_keystore_password
    openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
        -keyout secrets/kafka-key.pem -out secrets/kafka-ca.pem 2>/dev/null
    openssl pkcs12 -export -in secrets/kafka-ca.pem -inkey secrets/kafka-key.pem -name kafka \
        -out secrets/kafka.keystore.p12 -passout file:secrets/kafka_keystore_password
    rm -f secrets/kafka-key.pem
    echo "self-signed Kafka certificate for $host: give agents secrets/kafka-ca.pem as ssl_cafile" >&2
fi
# Signs the page's session cookie (at least 32 characters).
[[ -s secrets/session_secret_key ]] || head -c 48 /dev/urandom | base64 | tr -d '/+=\n' >secrets/session_secret_key
# The page's single sign-on client secret is issued by the identity provider, not made here.
if [[ ! -s secrets/oidc_client_secret && -n "${OIDC_CLIENT_SECRET:-}" ]]; then
    printf '%s' "$OIDC_CLIENT_SECRET" >secrets/oidc_client_secret
fi
# Containers run as their own non-root users and read the files through bind mounts, so the files are
# world-readable while the directory stays private to the host's root.
chmod 0700 secrets
chmod 0644 secrets/*
echo "secrets in $(pwd)/secrets, settings in .env"
if [[ ! -s secrets/oidc_client_secret ]]; then
    echo "missing secrets/oidc_client_secret: register the page at your identity provider (deploy/production.md," \
        "Single sign-on), set [alerts.api.oidc] in server.toml, then run OIDC_CLIENT_SECRET=... ./make-secrets.sh" >&2
    exit 1
fi
