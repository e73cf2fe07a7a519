#!/usr/bin/env bash
# Runs once, at InfluxDB's first start (docker-entrypoint-initdb.d), after the bucket exists:
# maps InfluxQL database "fleetpulse" to the bucket (DBRP) so the dashboards' InfluxQL works,
# and creates the read-only v1 user Grafana logs in with.
set -euo pipefail
bucket_id="$(influx bucket list --name "$DOCKER_INFLUXDB_INIT_BUCKET" --hide-headers | cut -f1)"
influx v1 dbrp create --db fleetpulse --rp autogen --bucket-id "$bucket_id" --default
influx v1 auth create --username "$FLEETPULSE_INFLUX_READ_USER" \
    --password "$(cat /run/secrets/influx_grafana_password)" --read-bucket "$bucket_id"
