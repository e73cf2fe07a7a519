#!/usr/bin/env bash
# One-shot Kafka setup on the internal listener: topics with the retention of deploy/retention.yaml,
# the SCRAM user agents authenticate with on the external listener, and its write-only ACL on the
# health topic (reports, key enrolments and the agent's inventory all travel there, MACed with the
# device's own key). The control topic (IT's re-enrolments) is written from the internal network only.
# Idempotent: existing topics are reconfigured to the policy, the user's password is re-set.
set -euo pipefail
bin=/opt/kafka/bin
bootstrap="${KAFKA_BOOTSTRAP:-kafka:9092}"
partitions="${FLEETPULSE_PARTITIONS:-12}"
day_ms=86400000

until "$bin/kafka-broker-api-versions.sh" --bootstrap-server "$bootstrap" >/dev/null 2>&1; do
    echo "waiting for kafka at $bootstrap" >&2; sleep 2
done

topic() { # name retention_days|compact|compact+retention_days [max GiB per partition]
    local name="$1" policy="$2" max_gib="${3:-}" pairs pair config="" create_args=()
    case "$policy" in
        compact) pairs=("cleanup.policy=compact" "delete.retention.ms=$day_ms") ;;
        compact+*) pairs=("cleanup.policy=compact,delete" "retention.ms=$((${policy#compact+} * day_ms))"
            "delete.retention.ms=$day_ms") ;;
        *) pairs=("cleanup.policy=delete" "retention.ms=$((policy * day_ms))") ;;
    esac
    if [[ -n "$max_gib" ]]; then pairs+=("retention.bytes=$((max_gib * 1073741824))"); fi
    for pair in "${pairs[@]}"; do
        create_args+=(--config "$pair")
        # kafka-configs takes the pairs as one comma-separated list: a list value goes in brackets
        if [[ "${pair#*=}" == *,* ]]; then pair="${pair%%=*}=[${pair#*=}]"; fi
        config="${config:+$config,}$pair"
    done
    "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$name" \
        --partitions "$partitions" --replication-factor 1 "${create_args[@]}" >/dev/null
    "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --alter --entity-type topics --entity-name "$name" \
        --add-config "$config" >/dev/null
    echo "topic $name: $config"
}

topic fleetpulse.health.v1 7 4
topic fleetpulse.mobile.v1 7 1
topic fleetpulse.inventory.v1 compact
topic fleetpulse.mobile.inventory.v1 compact+30 1
topic fleetpulse.scores.v1 7
topic fleetpulse.alerts.v1 30
topic fleetpulse.labels.v1 365
topic fleetpulse.features.v1 30
topic fleetpulse.control.v1 30
topic fleetpulse.serving.v1 compact
topic fleetpulse.deadletter.v1 14 1

password="$(cat /run/secrets/kafka_agent_password)"
"$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --alter --entity-type users --entity-name fleetpulse-agent \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$password]" >/dev/null
# every PC shares this user: its quota (per broker) bounds what one PC's flood can take from the others
"$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --alter --entity-type users --entity-name fleetpulse-agent \
    --add-config "producer_byte_rate=1048576" >/dev/null
"$bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --add --allow-principal User:fleetpulse-agent \
    --operation Write --operation Describe --topic fleetpulse.health.v1 >/dev/null
# earlier setups also let agents write these: an agent could then pose as the MDM bridge or as IT's inventory
for t in fleetpulse.mobile.v1 fleetpulse.inventory.v1; do
    "$bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --remove --force --allow-principal User:fleetpulse-agent \
        --operation Write --operation Describe --topic "$t" >/dev/null
done
echo "user fleetpulse-agent: SCRAM-SHA-512, write-only on health"
# No MDM bridge user here: the bridge writes from the internal network, trusted as super user like the workers,
# so there is no credential of it to leak. Its topics are bounded in size all the same (topic lines above). Every
# user created here gets a produce quota (tests/unit/deploy/test_compose.py); on Kubernetes the bridge's user
# fleetpulse-mdm has one of 262144 bytes/s (deploy/k8s/base/kafka-users.yaml).
