#!/usr/bin/env bash
# `make interop`: OpenStack's own conformance tests (tempest, pinned, in .venv-tempest) against a
# fresh `eventsvm up` on a free port with its own data directory. Runs every test of the interop
# 2020.06 compute guideline (interop/interop-2020.06-compute.tsv) and fails when a test listed in
# interop/passing.txt no longer passes.  INTEROP_UPDATE=1 rewrites that list from this run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

TEMPEST_VERSION="47.0.0"
TVENV="$ROOT/.venv-tempest"
WORK="$(mktemp -d /tmp/eventsvm-interop.XXXXXX)"
DATA="$WORK/data"
WS="$WORK/tempest"
CONCURRENCY="${INTEROP_CONCURRENCY:-2}"

installed="$("$TVENV/bin/python" -c "import importlib.metadata as m; print(m.version('tempest'))" 2>/dev/null || true)"
if [[ "$installed" != "$TEMPEST_VERSION" ]]; then
    echo "interop: installing tempest $TEMPEST_VERSION into $TVENV"
    python3 -m venv "$TVENV"
    "$TVENV/bin/pip" install -q --upgrade pip
    "$TVENV/bin/pip" install -q "tempest==$TEMPEST_VERSION"
fi

PORT="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
export EVENTSVM_ADMIN_PASSWORD="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"
export EVENTSVM_DEMO_PASSWORD="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"

# two simulated hosts: the resize tests need somewhere to go
.venv/bin/eventsvm up --data-dir "$DATA" --port "$PORT" --hosts 2 >"$WORK/cloud.log" 2>&1 &
CLOUD=$!
cleanup() {
    kill "$CLOUD" 2>/dev/null || true
    wait "$CLOUD" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 120); do
    if curl -fsS "$URL/identity/v3/" >/dev/null 2>&1; then break; fi
    kill -0 "$CLOUD" 2>/dev/null || { cat "$WORK/cloud.log"; echo "interop: eventsvm up exited" >&2; exit 1; }
    sleep 0.5
done

mkdir -p "$WS"
(cd "$WS" && "$TVENV/bin/tempest" init --name eventsvm-interop . >/dev/null 2>&1 || true)
.venv/bin/python scripts/interop.py provision "$URL" "$WS"
.venv/bin/python scripts/interop.py select "$WS"

echo "interop: running $(wc -l <"$WS/include.txt") guideline tests against $URL (logs in $WORK)"
# tempest and stestr exit non-zero when any test failed; the judge below decides what fails CI
set +e
(cd "$WS" && "$TVENV/bin/tempest" run --config-file "$WS/etc/tempest.conf" \
    --include-list "$WS/include.txt" --concurrency "$CONCURRENCY" >"$WORK/tempest-run.log" 2>&1)
(cd "$WS" && "$TVENV/bin/stestr" last --subunit | "$TVENV/bin/subunit2csv" >"$WS/results.csv")
set -e
[[ -s "$WS/results.csv" ]] || { tail -40 "$WORK/tempest-run.log"; echo "interop: tempest produced no results" >&2; exit 1; }
tail -5 "$WORK/tempest-run.log"

if [[ "${INTEROP_UPDATE:-0}" == "1" ]]; then
    .venv/bin/python scripts/interop.py judge "$WS" --update
else
    .venv/bin/python scripts/interop.py judge "$WS"
fi
