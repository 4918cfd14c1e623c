#!/usr/bin/env bash
# `make interop`: OpenStack's own conformance tests (tempest, pinned, in .venv-tempest) against a
# fresh `eventsvm up` on a free port with its own data directory. Runs every test of the interop
# 2020.06 compute guideline (interop/interop-2020.06-compute.tsv) and fails when a test listed in
# interop/passing.txt no longer passes.  INTEROP_UPDATE=1 rewrites that list from this run.
# The few guideline tests that SSH into a guest (tempest's run_validation) run a second time against
# a one-host `eventsvm up --hypervisor qemu` (real TCG guests, reachable on their network's bridge;
# the guest image is built first); both runs' results are judged together.
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
QCLOUD=""
QDATA="$WORK/qdata"
cleanup() {
    kill "$CLOUD" 2>/dev/null || true
    wait "$CLOUD" 2>/dev/null || true
    if [[ -n "$QCLOUD" ]]; then
        kill "$QCLOUD" 2>/dev/null || true
        wait "$QCLOUD" 2>/dev/null || true
        bash scripts/libvirtd.sh stop "$QDATA/libvirt" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

await_cloud() {  # await_cloud URL PID LOG: until the cloud's identity API answers; 1 when it exited
    for _ in $(seq 1 240); do
        if curl -fsS "$1/identity/v3/" >/dev/null 2>&1; then return 0; fi
        kill -0 "$2" 2>/dev/null || { cat "$3"; echo "interop: eventsvm up exited" >&2; return 1; }
        sleep 0.5
    done
    echo "interop: $1 did not answer in 120 s" >&2
    return 1
}
await_cloud "$URL" "$CLOUD" "$WORK/cloud.log" || exit 1

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
kill "$CLOUD" 2>/dev/null || true
wait "$CLOUD" 2>/dev/null || true

# The validation run: its own cloud on real QEMU, its own workspace. A failure here is reported
# and judged like any failing test (a listed test that no longer passes is a regression).
QWS="$WORK/tempest-validation"
validation_run() {
    bash scripts/guest-image.sh >"$WORK/guest-image.log" 2>&1 || { cat "$WORK/guest-image.log"; return 1; }
    local port
    port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    local qurl="http://127.0.0.1:$port"
    .venv/bin/eventsvm up --hypervisor qemu --data-dir "$QDATA" --port "$port" --hosts 1 >"$WORK/qcloud.log" 2>&1 &
    QCLOUD=$!
    await_cloud "$qurl" "$QCLOUD" "$WORK/qcloud.log" || return 1
    mkdir -p "$QWS"
    (cd "$QWS" && "$TVENV/bin/tempest" init --name eventsvm-interop-validation . >/dev/null 2>&1 || true)
    .venv/bin/python scripts/interop.py provision "$qurl" "$QWS" --validation || return 1
    .venv/bin/python scripts/interop.py select "$QWS" --validation
    echo "interop: running $(wc -l <"$QWS/include.txt") validation tests against real QEMU guests at $qurl"
    (cd "$QWS" && "$TVENV/bin/tempest" run --config-file "$QWS/etc/tempest.conf" \
        --include-list "$QWS/include.txt" --concurrency 1 >"$WORK/tempest-validation.log" 2>&1)
    (cd "$QWS" && "$TVENV/bin/stestr" last --subunit | "$TVENV/bin/subunit2csv" >"$QWS/results.csv")
    tail -5 "$WORK/tempest-validation.log"
}
started=$SECONDS
validation_run || echo "interop: the validation run on QEMU failed (logs in $WORK)" >&2
echo "interop: validation run took $((SECONDS - started)) s"
# what the QEMU cloud warned of (a guest it could not make reachable, a spawn that failed): CI's
# log is often all there is to tell why an SSH test timed out
if grep -qE " (WARNING|ERROR) " "$WORK/qcloud.log" 2>/dev/null; then
    echo "interop: the QEMU cloud's warnings and errors (last 10):"
    grep -E " (WARNING|ERROR) " "$WORK/qcloud.log" | tail -10 | cut -c1-400
fi

if [[ "${INTEROP_UPDATE:-0}" == "1" ]]; then
    .venv/bin/python scripts/interop.py judge "$WS" --also "$QWS" --update
else
    .venv/bin/python scripts/interop.py judge "$WS" --also "$QWS"
fi
