#!/usr/bin/env bash
# Compatibility suite: runs the released, unmodified HumanLayer SDKs
# (PyPI humanlayer==0.7.9 and npm @humanlayer/sdk@0.7.9) against a real
# `countersign serve` process.
#
# Usage: [COUNTERSIGN_BIN=/path/to/countersign] scripts/compat.sh [extra pytest args]
# Requires: python3 (3.11+), node/npm (20+), network access to PyPI and npm.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COUNTERSIGN_BIN="${COUNTERSIGN_BIN:-$REPO/target/debug/countersign}"
# make a relative COUNTERSIGN_BIN relative to the caller's cwd, then absolute
case "$COUNTERSIGN_BIN" in
  /*) ;;
  *) COUNTERSIGN_BIN="$(pwd)/$COUNTERSIGN_BIN" ;;
esac
export COUNTERSIGN_BIN

if [[ ! -x "$COUNTERSIGN_BIN" ]]; then
  echo "compat: countersign binary not found or not executable: $COUNTERSIGN_BIN" >&2
  echo "compat: build it with 'cargo build -p countersign' or set COUNTERSIGN_BIN" >&2
  exit 2
fi

# The SDKs must only see what the tests give them.
unset HUMANLAYER_API_KEY HUMANLAYER_API_BASE HUMANLAYER_RUN_ID || true
export PYTHONDONTWRITEBYTECODE=1
# The suites' webhook receivers listen on loopback, which servers refuse as a webhook target
# unless their configuration allows private targets.
export COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS=true

status=0

# With COUNTERSIGN_TEST_DATABASE_URL (a PostgreSQL admin URL) each suite gets a fresh database
# and the servers it starts use it; without it they use SQLite in their data directories.
fresh_database() {
  local admin=${COUNTERSIGN_TEST_DATABASE_URL:-}
  if [[ -z "$admin" ]]; then
    unset COUNTERSIGN_DATABASE_URL
    return
  fi
  local name="cs_compat_$1_$(date +%s%N)"
  psql "$admin" -qAt -c "CREATE DATABASE $name" >/dev/null
  export COUNTERSIGN_DATABASE_URL="${admin%/*}/$name"
  echo "    (on PostgreSQL: $COUNTERSIGN_DATABASE_URL)"
}

echo "==> Python SDK (humanlayer==0.7.9)"
fresh_database python
PY_DIR="$REPO/compat/python"
VENV="$("$REPO/scripts/compat-venv")"
set +e
(cd "$PY_DIR" && "$VENV/bin/python" -m pytest -q "$@")
py_rc=$?
set -e
[[ $py_rc -eq 0 ]] || status=1

echo "==> TypeScript SDK (@humanlayer/sdk@0.7.9)"
fresh_database ts
TS_DIR="$REPO/compat/ts"
# `set -e` is suspended inside a subshell that is the left side of `||`,
# so run it untested and collect its status explicitly.
set +e
(
  set -e
  cd "$TS_DIR"
  if [[ -f package-lock.json ]]; then
    npm ci --silent --no-audit --no-fund
  else
    npm install --silent --no-audit --no-fund
  fi
  node --test --test-reporter=spec test/
)
ts_rc=$?
set -e
[[ $ts_rc -eq 0 ]] || status=1

if [[ $status -ne 0 ]]; then
  echo "compat: FAILED" >&2
else
  echo "compat: all suites passed"
fi
exit $status
