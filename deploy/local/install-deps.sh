#!/usr/bin/env bash
# Installs what the local stack and the tests need on a fresh Debian machine:
# Debian packages (TSDBs, PostgreSQL, Chromium, smartmontools, prometheus for promtool,
# comparison agents for the footprint benchmark), the Python package with its dev extras,
# and the Kafka jars from Maven Central. Safe to run again: skips what is there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

debs=(openjdk-17-jre-headless maven victoria-metrics influxdb postgresql chromium chromium-driver
      smartmontools upower prometheus-node-exporter prometheus collectd-core systemd)
missing=()
for p in "${debs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
    sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a service when it installs its package; the project runs its own instances, so
    # stop the ones this run just installed. Services that were installed before are left as they were.
    declare -A service_of=([influxdb]=influxdb [victoria-metrics]=victoria-metrics [prometheus]=prometheus
        [prometheus-node-exporter]=prometheus-node-exporter [collectd-core]=collectd [postgresql]=postgresql)
    for p in "${missing[@]}"; do
        svc="${service_of[$p]:-}"
        [[ -n "$svc" ]] || continue
        $sudo systemctl stop "$svc" 2>/dev/null || $sudo service "$svc" stop 2>/dev/null || true
    done
fi

python3 -m pip install -q --disable-pip-version-check -e "$repo[dev]"
# The editable install builds fleetpulse.streams._native (streams/native) in place with cargo, and goes on
# without it when there is no cargo or the build fails. Only the first is expected.
if ! (cd / && python3 -c "import fleetpulse.streams._native") 2>/dev/null; then
    if command -v cargo >/dev/null; then
        echo "error: fleetpulse.streams._native did not build: \`make native\` shows cargo's output" >&2
        exit 1
    fi
    echo "warning: no cargo (rustup): fleetpulse.streams._native not built (optional)" >&2
fi

# Validators for deploy/ (tests/unit/deploy): kustomize from the Go module proxy, dclint
# (ships the Compose Specification schema) from npm. Installed under .local/, not system-wide.
tools="$repo/.local"
if [[ ! -x "$tools/bin/kustomize" ]]; then
    go="$(command -v go || echo /usr/local/go/bin/go)"
    if [[ -x "$go" ]]; then
        echo "building kustomize (Go module proxy)" >&2
        GOBIN="$tools/bin" "$go" install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
    else
        echo "warning: no Go toolchain: the Kubernetes manifest tests will be skipped (they fail under CI=true)" >&2
    fi
fi
if [[ ! -x "$tools/node/node_modules/.bin/dclint" ]]; then
    if command -v npm >/dev/null; then
        echo "installing dclint (npm)" >&2
        mkdir -p "$tools/node"
        npm install --silent --no-audit --no-fund --prefix "$tools/node" dclint@3.1.0 >/dev/null
    else
        echo "warning: no npm: the compose schema tests will be skipped (they fail under CI=true)" >&2
    fi
fi

if [[ ! -f "$here/lib/.complete" ]]; then
    echo "fetching Kafka jars from Maven Central" >&2
    rm -rf "$here/lib"
    mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$here/lib" -DincludeScope=runtime
    touch "$here/lib/.complete"
fi

# Keycloak (the identity provider the single sign-on tests log in through) from its Maven Central
# distribution, built once for the local stack's options (file database, health endpoint).
kc_version="$(cat "$here/keycloak/version")"
kc_home="$here/keycloak-dist/keycloak-$kc_version"
if [[ ! -f "$kc_home/.complete" ]]; then
    echo "fetching Keycloak $kc_version from Maven Central" >&2
    rm -rf "$here/keycloak-dist" && mkdir -p "$here/keycloak-dist"
    mvn -q -B -Dstyle.color=never dependency:copy \
        -Dartifact="org.keycloak:keycloak-quarkus-dist:$kc_version:tar.gz" -DoutputDirectory="$here/keycloak-dist"
    tar -xzf "$here/keycloak-dist/keycloak-quarkus-dist-$kc_version.tar.gz" -C "$here/keycloak-dist"
    rm "$here/keycloak-dist/keycloak-quarkus-dist-$kc_version.tar.gz"
    JAVA_HOME="$("$here/keycloak/java-home.sh")" "$kc_home/bin/kc.sh" build --db=dev-file --health-enabled=true --cache=local >/dev/null
    touch "$kc_home/.complete"
fi
