#!/usr/bin/env bash
# Local single-machine stack for demos and tests: real Apache Kafka (KRaft, from
# Maven Central jars on the machine's JDK), VictoriaMetrics (InfluxDB v2 write
# API), InfluxDB 1.x (InfluxQL for dashboard queries), PostgreSQL and Keycloak (the
# OpenID Connect provider of single sign-on, with the realm in keycloak/fleetpulse-realm.json).
#
#   deploy/local/stack.sh start  [kafka|tsdb|influxdb1|postgres|keycloak|kafka-acl|all]   (default: kafka tsdb)
#   deploy/local/stack.sh stop   [...]                                 (default: all)
#   deploy/local/stack.sh status
#
# kafka-acl (for the ACL integration test, not started by "all") is a second broker secured as in
# production: TLS on every client listener, SASL/SCRAM-SHA-512 over TLS (SASL_SSL) on 127.0.0.1:$FLEETPULSE_KAFKA_ACL_PORT
# (default 9192), mutual TLS (a client certificate, no password) on $FLEETPULSE_KAFKA_ACL_MTLS_PORT (default: that
# port + 2; its controller is on + 1), KRaft's StandardAuthorizer, nothing allowed without an ACL, no topic
# auto-creation. Its one super user is "admin" (password in <state>/kafka-acl/admin-password). Its throwaway
# certificates, made with openssl, are in <state>/kafka-acl/tls: cluster-ca.crt (what clients trust: ssl_cafile),
# clients-ca.crt (signs the client certificates), users/<name>.crt and .key (a client certificate for each
# KafkaUser with tls authentication; its principal is User:CN=<name>, as under Strimzi).
#
# Idempotent: starting a running service is a no-op; stop is clean (TERM, then
# KILL after a grace period). All state lives under $FLEETPULSE_LOCAL_DIR
# (default: <repo>/.local/stack), which you can inspect or delete.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${FLEETPULSE_LOCAL_DIR:-$repo/.local/stack}"
kafka_port="${FLEETPULSE_KAFKA_PORT:-9092}"
controller_port="${FLEETPULSE_KAFKA_CONTROLLER_PORT:-$((kafka_port + 1))}"
acl_port="${FLEETPULSE_KAFKA_ACL_PORT:-9192}"
acl_controller_port="${FLEETPULSE_KAFKA_ACL_CONTROLLER_PORT:-$((acl_port + 1))}"
acl_mtls_port="${FLEETPULSE_KAFKA_ACL_MTLS_PORT:-$((acl_port + 2))}"
vm_port="${FLEETPULSE_VM_PORT:-8428}"
influx1_port="${FLEETPULSE_INFLUXDB1_PORT:-8086}"
pg_port="${FLEETPULSE_PG_PORT:-5433}"
keycloak_port="${FLEETPULSE_KEYCLOAK_PORT:-8180}"
libdir="$here/lib"

log() { printf '%s stack: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # description seconds command...
    local what="$1" secs="$2"; shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if ((SECONDS >= deadline)); then log "$what not ready after ${secs}s"; return 1; fi
        sleep 0.5
    done
}

stop_pid() { # name pidfile
    local name="$1" pidfile="$2"
    if ! alive "$pidfile"; then rm -f "$pidfile"; log "$name not running"; return 0; fi
    local pid; pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 30s, killing"; kill -KILL "$pid" || true; fi
    rm -f "$pidfile"; log "$name stopped"
}

# --- Kafka -----------------------------------------------------------------

kafka_jars() {
    if [[ -f "$libdir/.complete" ]]; then return 0; fi
    command -v java >/dev/null || { log "java not found: install a JDK 17 (apt-get install openjdk-17-jre-headless)"; exit 1; }
    command -v mvn >/dev/null || { log "mvn not found: apt-get install maven"; exit 1; }
    log "fetching Kafka jars from Maven Central into $libdir"
    rm -rf "$libdir"
    mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$libdir" -DincludeScope=runtime
    touch "$libdir/.complete"
}

start_kafka() {
    start_broker kafka "$kafka_port" "$controller_port" <<EOF
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
}

start_kafka_acl() {
    local dir="$state/kafka-acl" password tls
    if alive "$dir/kafka.pid"; then log "kafka-acl already running (pid $(cat "$dir/kafka.pid"), port $acl_port)"; return 0; fi
    mkdir -p "$dir" && chmod 700 "$dir"
    if [[ ! -s "$dir/admin-password" ]]; then # a new admin password needs new storage (the credential is stored there)
        rm -rf "$dir/data"
        (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/admin-password")
    fi
    if ((acl_mtls_port == acl_port || acl_mtls_port == acl_controller_port)); then
        log "kafka-acl: its mutual-TLS port $acl_mtls_port is taken by its own listeners (ports $acl_port, $acl_controller_port)"
        exit 2
    fi
    password="$(cat "$dir/admin-password")"
    tls="$dir/tls"
    acl_tls "$tls"
    # The broker authenticates to itself as admin: SCRAM over TLS on the client listener (the credential is
    # written at format time), PLAIN on the controller listener (KRaft controllers cannot check SCRAM credentials).
    # Certificate principals keep Kafka's default mapping, as Strimzi's: the subject DN, User:CN=<name>.
    start_broker kafka-acl "$acl_port" "$acl_controller_port" "SCRAM-SHA-512=[name=admin,password=$password]" <<EOF
listeners=SASL_SSL://127.0.0.1:$acl_port,MTLS://127.0.0.1:$acl_mtls_port,CONTROLLER://127.0.0.1:$acl_controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$acl_port,MTLS://127.0.0.1:$acl_mtls_port
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:SASL_PLAINTEXT
ssl.keystore.type=PEM
ssl.keystore.location=$tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls/cluster-ca.crt
ssl.enabled.protocols=TLSv1.3,TLSv1.2
ssl.protocol=TLSv1.3
listener.name.mtls.ssl.client.auth=required
listener.name.mtls.ssl.truststore.type=PEM
listener.name.mtls.ssl.truststore.location=$tls/clients-ca.crt
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$password";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$password" user_admin="$password";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
auto.create.topics.enable=false
EOF
    log "kafka-acl: SASL_SSL (SCRAM-SHA-512) on 127.0.0.1:$acl_port, mutual TLS on 127.0.0.1:$acl_mtls_port; clients trust $tls/cluster-ca.crt"
}

# --- kafka-acl's TLS: throwaway CAs and certificates, as Strimzi's operators make them --------------------

# The KafkaUsers whose authentication is tls (deploy/k8s/base/kafka-users.yaml): each gets a client certificate.
acl_tls_users="fleetpulse-mdm"

cert_fresh() { [[ -s "$1" ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1; } # valid a day more

openssl_failed() { log "openssl failed ($1/openssl.log):"; tail -n 5 "$1/openssl.log" >&2; exit 1; }

new_ca() { # folder name common-name
    (umask 077; openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 825 -subj "/CN=$3" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -keyout "$1/$2.key" -out "$1/$2.crt" 2>>"$1/openssl.log")
}

issue_cert() { # folder ca file-stem subject extensions: <stem>.key (PKCS#8, unencrypted) and <stem>.crt, signed by ca
    local folder="$1" ca="$2" stem="$3" subject="$4" ext="$5"
    (umask 077
        openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "$subject" -keyout "$stem.key" -out "$stem.csr" \
            2>>"$folder/openssl.log" &&
        openssl x509 -req -sha256 -days 825 -in "$stem.csr" -CA "$folder/$ca.crt" -CAkey "$folder/$ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -out "$stem.crt" -extfile <(printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" "$ext") \
            2>>"$folder/openssl.log" &&
        rm -f "$stem.csr")
}

# Two CAs as Strimzi has: the cluster CA signs the broker's certificate (clients trust it: ssl_cafile), the clients
# CA signs the users' certificates (the mutual-TLS listener trusts it). Made once, remade a day before they expire.
acl_tls() { # folder
    local tls="$1" user
    command -v openssl >/dev/null || { log "openssl not found: apt-get install openssl"; exit 1; }
    mkdir -p "$tls/users" && chmod 700 "$tls" "$tls/users"
    : >"$tls/openssl.log"
    if ! cert_fresh "$tls/cluster-ca.crt"; then # a new CA: what the old one signed goes
        new_ca "$tls" cluster-ca "fleetpulse-test-cluster-ca" || openssl_failed "$tls"
        rm -f "$tls/broker.crt"
        log "kafka-acl: new cluster CA $tls/cluster-ca.crt"
    fi
    if ! cert_fresh "$tls/clients-ca.crt"; then
        new_ca "$tls" clients-ca "fleetpulse-test-clients-ca" || openssl_failed "$tls"
        rm -f "$tls"/users/*
        log "kafka-acl: new clients CA $tls/clients-ca.crt"
    fi
    if ! cert_fresh "$tls/broker.crt" || ! cert_fresh "$tls/broker-keystore.pem"; then
        issue_cert "$tls" cluster-ca "$tls/broker" "/CN=127.0.0.1" \
            "$(printf '%s\n' "keyUsage=critical,digitalSignature,keyEncipherment" \
                "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost")" ||
            openssl_failed "$tls"
        # Kafka's PEM key store: the private key (PKCS#8), then the certificate chain
        (umask 077; cat "$tls/broker.key" "$tls/broker.crt" "$tls/cluster-ca.crt" >"$tls/broker-keystore.pem")
        rm -f "$tls/broker.key"
    fi
    for user in $acl_tls_users; do # principal User:CN=<name>, as Strimzi's User Operator names a tls user
        if ! cert_fresh "$tls/users/$user.crt"; then
            issue_cert "$tls" clients-ca "$tls/users/$user" "/CN=$user" \
                "$(printf '%s\n' "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth")" ||
                openssl_failed "$tls"
            log "kafka-acl: client certificate $tls/users/$user.crt (key $user.key) for User:CN=$user"
        fi
    done
}

start_broker() { # name port controller-port [SCRAM credential to add at format], listener properties on stdin
    local name="$1" port="$2" ctl_port="$3" scram="${4:-}" dir="$state/$1" pidfile="$state/$1/kafka.pid" listeners
    listeners="$(cat)"
    if alive "$pidfile"; then log "$name already running (pid $(cat "$pidfile"), port $port)"; return 0; fi
    kafka_jars
    mkdir -p "$dir/data"
    (umask 077; cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl_port
controller.listener.names=CONTROLLER
$listeners
log.dirs=$dir/data
num.partitions=12
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=67108864
message.max.bytes=1048576
EOF
    )
    cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$dir/kafka.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.authorizer.logger=INFO
# refused logins (a TLS handshake without a trusted client certificate, a wrong SCRAM password)
log4j.logger.org.apache.kafka.common.network.Selector=INFO
EOF
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id args=()
        cluster_id="$(java -cp "$libdir/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
        [[ -z "$scram" ]] || args=(--add-scram "$scram")
        # in a java @file (read by the launcher), so a password among the arguments stays out of the process list
        (umask 077; printf '"%s"\n' "-Dlog4j.configuration=file:$dir/log4j.properties" -cp "$libdir/*" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" "${args[@]}" >"$dir/format.args")
        java "@$dir/format.args" >/dev/null
        rm -f "$dir/format.args"
        log "formatted KRaft storage in $dir/data (cluster $cluster_id)"
    fi
    : >"$dir/kafka.log"
    nohup java -Xms256m "-Xmx${FLEETPULSE_KAFKA_HEAP:-768m}" -XX:+UseG1GC \
        -Dlog4j.configuration="file:$dir/log4j.properties" \
        -cp "$libdir/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
    echo $! >"$pidfile"
    if ! wait_for "$name" 90 kafka_ready "$pidfile" "$dir/kafka.log" "$port"; then
        tail -n 30 "$dir/stdout.log" "$dir/kafka.log" >&2 || true
        exit 1
    fi
    log "$name ready on 127.0.0.1:$port (pid $(cat "$pidfile"), data $dir/data)"
}

kafka_ready() { # pidfile log port
    alive "$1" || { log "kafka exited during start"; tail -n 30 "$(dirname "$1")/stdout.log" >&2; exit 1; }
    grep -q "Kafka Server started" "$2" 2>/dev/null && port_open "$3"
}

# --- VictoriaMetrics (InfluxDB v2 line-protocol write endpoint) --------------

start_tsdb() {
    local dir="$state/victoria-metrics" pidfile="$state/victoria-metrics/vm.pid"
    if alive "$pidfile"; then log "victoria-metrics already running (port $vm_port)"; return 0; fi
    command -v victoria-metrics >/dev/null || { log "victoria-metrics not found: apt-get install victoria-metrics"; exit 1; }
    mkdir -p "$dir/data"
    nohup victoria-metrics -storageDataPath="$dir/data" -httpListenAddr="127.0.0.1:$vm_port" \
        -search.latencyOffset=0s -retentionPeriod="${FLEETPULSE_VM_RETENTION:-400d}" \
        -loggerOutput=stderr >"$dir/vm.log" 2>&1 &
    echo $! >"$pidfile"
    wait_for "victoria-metrics" 30 port_open "$vm_port"
    log "victoria-metrics ready on http://127.0.0.1:$vm_port (data $dir/data)"
}

# --- InfluxDB 1.x (InfluxQL, for dashboard query tests) ------------------------

start_influxdb1() {
    local dir="$state/influxdb1" pidfile="$state/influxdb1/influxd.pid"
    if alive "$pidfile"; then log "influxdb1 already running (port $influx1_port)"; return 0; fi
    command -v influxd >/dev/null || { log "influxd not found: apt-get install influxdb"; exit 1; }
    mkdir -p "$dir"
    cat >"$dir/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$((influx1_port + 2))"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$influx1_port"
  log-enabled = false
[monitor]
  store-enabled = false
EOF
    nohup influxd -config "$dir/influxdb.conf" >"$dir/influxd.log" 2>&1 &
    echo $! >"$pidfile"
    wait_for "influxdb1" 30 port_open "$influx1_port"
    log "influxdb 1.x ready on http://127.0.0.1:$influx1_port"
}

# --- PostgreSQL (production ticket store) --------------------------------------

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

start_postgres() {
    local dir="$state/postgres" bin
    bin="$(pg_bin)"
    [[ -n "$bin" ]] || { log "PostgreSQL not found: apt-get install postgresql"; exit 1; }
    mkdir -p "$dir"
    local run=()
    if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$dir"; run=(runuser -u postgres --); fi
    # The superuser's password, readable by this user only (a trusting server on 127.0.0.1 would let any
    # local user in as superuser, and on to the postgres account's shell through COPY ... FROM PROGRAM).
    local password_file="$dir/password"
    if [[ ! -s "$password_file" ]]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$password_file")
    fi
    if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$password_file"; fi
    if [[ -f "$dir/data/postmaster.pid" ]] && "${run[@]}" "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        log "postgres already running (port $pg_port)"
    else
        if [[ ! -f "$dir/data/PG_VERSION" ]]; then
            "${run[@]}" "$bin/initdb" -D "$dir/data" -U fleetpulse --auth=scram-sha-256 --pwfile="$password_file" \
                -E UTF8 >/dev/null
        fi
        local options="-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c unix_socket_permissions=0700"
        "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -o "$options" start >/dev/null
    fi
    if grep -qE '^(local|host)\s.*\strust$' "$dir/data/pg_hba.conf"; then # made by an older version of this script
        "${run[@]}" "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U fleetpulse -d postgres -q \
            <<<"ALTER ROLE fleetpulse PASSWORD '$(cat "$password_file")'"
        sed -i -E 's/^((local|host)\s.*\s)trust$/\1scram-sha-256/' "$dir/data/pg_hba.conf"
        "${run[@]}" "$bin/pg_ctl" -D "$dir/data" reload >/dev/null
        log "postgres: password authentication instead of trust"
    fi
    PGPASSWORD="$(cat "$password_file")" "${run[@]}" "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U fleetpulse -d postgres \
        -tAc "SELECT 1 FROM pg_database WHERE datname='fleetpulse'" | grep -q 1 ||
        PGPASSWORD="$(cat "$password_file")" "${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U fleetpulse fleetpulse
    log "postgres ready: postgresql://fleetpulse:<$password_file>@127.0.0.1:$pg_port/fleetpulse"
}

stop_postgres() {
    local dir="$state/postgres" bin
    bin="$(pg_bin)"
    [[ -n "$bin" && -f "$dir/data/postmaster.pid" ]] || { log "postgres not running"; return 0; }
    local run=()
    [[ "$(id -u)" == 0 ]] && run=(runuser -u postgres --)
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    log "postgres stopped"
}

# --- Keycloak (OpenID Connect provider for single sign-on) -------------------------

keycloak_home() { echo "$here/keycloak-dist/keycloak-$(cat "$here/keycloak/version")"; }

keycloak_ready() {
    alive "$1" || { log "keycloak exited during start"; tail -n 30 "$(dirname "$1")/keycloak.log" >&2; exit 1; }
    curl -sf "http://127.0.0.1:$((keycloak_port + 1))/health/ready" >/dev/null 2>&1
}

# The admin password and token go to curl in files, never as arguments: any local user can read those (ps).
keycloak_admin_header() { # state dir: writes <dir>/admin-header, the admin's bearer token as a curl header
    (umask 077; curl -sf --max-time 120 "http://127.0.0.1:$keycloak_port/realms/master/protocol/openid-connect/token" \
        -d grant_type=password -d client_id=admin-cli -d username=admin --data-urlencode "password@$1/admin-password" |
        python3 -c 'import json, sys; print("Authorization: Bearer " + json.load(sys.stdin)["access_token"])' \
            >"$1/admin-header")
}

keycloak_realm() { # state dir: imports the fleetpulse realm unless it exists
    keycloak_admin_header "$1"
    if ! curl -sf --max-time 120 -o /dev/null -H "@$1/admin-header" \
        "http://127.0.0.1:$keycloak_port/admin/realms/fleetpulse"; then
        curl -sf --max-time 300 -o /dev/null -H "@$1/admin-header" -H "Content-Type: application/json" \
            --data-binary "@$here/keycloak/fleetpulse-realm.json" "http://127.0.0.1:$keycloak_port/admin/realms"
        log "imported realm fleetpulse"
    fi
    rm -f "$1/admin-header"
}

start_keycloak() {
    local dir="$state/keycloak" pidfile="$state/keycloak/keycloak.pid" home
    if alive "$pidfile"; then log "keycloak already running (port $keycloak_port)"; keycloak_realm "$dir"; return 0; fi
    home="$(keycloak_home)"
    [[ -f "$home/.complete" ]] || { log "Keycloak not installed: run make install (deploy/local/install-deps.sh)"; exit 1; }
    mkdir -p "$dir" && chmod 700 "$dir"
    if [[ ! -f "$dir/admin-password" ]]; then (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/admin-password"); fi
    KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat "$dir/admin-password")" \
        JAVA_HOME="$("$here/keycloak/java-home.sh")" JAVA_OPTS_KC_HEAP="-Xms128m -Xmx512m" \
        nohup "$home/bin/kc.sh" start --optimized --http-enabled=true --http-host=127.0.0.1 \
        --http-port="$keycloak_port" --http-management-port="$((keycloak_port + 1))" --hostname-strict=false \
        --db-url="jdbc:h2:file:$dir/db;NON_KEYWORDS=VALUE" >"$dir/keycloak.log" 2>&1 &
    echo $! >"$pidfile"
    wait_for "keycloak" 300 keycloak_ready "$pidfile" || { tail -n 30 "$dir/keycloak.log" >&2; exit 1; }
    keycloak_realm "$dir"
    log "keycloak ready on http://127.0.0.1:$keycloak_port/realms/fleetpulse (admin password in $dir/admin-password)"
}

# --- dispatch ------------------------------------------------------------------

services() { if [[ $# -eq 0 ]]; then echo "$default"; elif [[ "$1" == all ]]; then echo "$everything"; else echo "$@"; fi; }

cmd="${1:-}"; shift || true
case "$cmd" in
start)
    default="kafka tsdb" everything="kafka tsdb influxdb1 postgres keycloak"
    for s in $(services "$@"); do "start_${s//-/_}"; done ;;
stop)
    default="kafka tsdb influxdb1 postgres keycloak kafka-acl" everything="$default"
    for s in $(services "$@"); do
        case "$s" in
        kafka) stop_pid kafka "$state/kafka/kafka.pid" ;;
        kafka-acl) stop_pid kafka-acl "$state/kafka-acl/kafka.pid" ;;
        tsdb) stop_pid victoria-metrics "$state/victoria-metrics/vm.pid" ;;
        influxdb1) stop_pid influxdb1 "$state/influxdb1/influxd.pid" ;;
        postgres) stop_postgres ;;
        keycloak) stop_pid keycloak "$state/keycloak/keycloak.pid" ;;
        *) log "unknown service $s"; exit 2 ;;
        esac
    done ;;
status)
    for s in kafka:kafka/kafka.pid kafka-acl:kafka-acl/kafka.pid tsdb:victoria-metrics/vm.pid influxdb1:influxdb1/influxd.pid keycloak:keycloak/keycloak.pid; do
        if alive "$state/${s#*:}"; then echo "${s%%:*}: running"; else echo "${s%%:*}: stopped"; fi
    done
    if [[ -f "$state/postgres/data/postmaster.pid" ]]; then echo "postgres: running"; else echo "postgres: stopped"; fi ;;
*)
    echo "usage: $0 start|stop|status [kafka|tsdb|influxdb1|postgres|keycloak|kafka-acl|all]" >&2; exit 2 ;;
esac
