#!/usr/bin/env bash
# Generates every secret the compose stack reads: .env (interpolated into service
# environments) and secrets/* (mounted as files). Never overwrites existing values.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
rand() { head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 32; }
for name in postgres_password influx_admin_password influx_admin_token influx_grafana_password \
    grafana_admin_password kafka_agent_password; do
    [[ -s "secrets/$name" ]] || rand >"secrets/$name"
done
if [[ ! -f .env ]]; then
    sed -e "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$(cat secrets/postgres_password)/" \
        -e "s/^INFLUX_ADMIN_TOKEN=.*/INFLUX_ADMIN_TOKEN=$(cat secrets/influx_admin_token)/" .env.example >.env
fi
echo "secrets in $(pwd)/secrets and .env; Kafka TLS: put kafka.keystore.p12 and its password file in secrets/"
