#!/usr/bin/env bash
# Proves the Python versions pyproject claims: the endpoint agent's unit tests on CPython 3.10, 3.12
# and 3.13 with only the agent's own dependencies, and the server's unit tests on the same versions with
# the full dev install (3.11 runs everything in `make test`). Each in a fresh venv under
# .local/pythons, interpreters from pyenv ($PYENV_ROOT/versions/X.Y.*). A missing interpreter is
# skipped with a warning, but fails the run under CI=true.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$repo/.local/pythons"
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
# The agent's tests: its package, the wire contract and the one retry policy, all it imports.
agent_tests=(tests/unit/agent tests/unit/test_contract.py tests/unit/test_retry.py tests/unit/test_agent_imports.py)

interpreter() { find "$pyenv_root/versions" -maxdepth 3 -path "*/versions/$1.*/bin/python$1" 2>/dev/null | sort -V | tail -n1; }

fresh_venv() { # python dir
    rm -rf "$2"
    "$1" -m venv "$2"
    "$2/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
}

run() { # label python pip-target tests...
    local label="$1" python="$2" target="$3"; shift 3
    local venv="$root/$label"
    echo "== $label: $("$python" --version)" >&2
    fresh_venv "$python" "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo$target" pytest pytest-timeout pytest-asyncio hypothesis
    (cd "$repo" && "$venv/bin/python" -m pytest -p no:cacheprovider -q -m "not integration and not slow" "$@")
}

status=0
for version in 3.10 3.12 3.13; do
    python="$(interpreter "$version")"
    if [[ -z "$python" ]]; then
        echo "warning: no CPython $version under $pyenv_root/versions" >&2
        [[ "${CI:-}" == true ]] && status=1
        continue
    fi
    run "agent-$version" "$python" "" "${agent_tests[@]}" || status=1
    run "server-$version" "$python" "[dev]" tests/unit || status=1
done
exit "$status"
