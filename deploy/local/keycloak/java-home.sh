#!/usr/bin/env bash
# Prints a JDK home that runs Keycloak (Java 21 or newer): $FLEETPULSE_KEYCLOAK_JAVA_HOME, else the
# newest such JDK under /usr/lib/jvm. Kafka keeps the machine's default JDK 17.
set -euo pipefail
if [[ -n "${FLEETPULSE_KEYCLOAK_JAVA_HOME:-}" ]]; then echo "$FLEETPULSE_KEYCLOAK_JAVA_HOME"; exit 0; fi
for home in $(ls -d /usr/lib/jvm/*/ 2>/dev/null | sort -rV); do
    version="$("$home/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    if [[ -n "$version" && "${version%%.*}" -ge 21 ]]; then echo "${home%/}"; exit 0; fi
done
echo "no JDK 21 or newer under /usr/lib/jvm: install one (Keycloak needs it) or set FLEETPULSE_KEYCLOAK_JAVA_HOME" >&2
exit 1
