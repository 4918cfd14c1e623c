#!/usr/bin/env bash
# Apache Kafka on 127.0.0.1 only, in KRaft mode (each node a broker and a controller in one JVM).
#   bash scripts/kafka.sh start|stop|status [PORT] [BROKERS]   (PORT 9092, BROKERS 1 by default)
# One broker: clients on PORT, its controller on a free port. BROKERS=3: a cluster, clients on
# PORT..PORT+2 and the controller quorum on PORT+3..PORT+5 (fixed: the voters are in every node's
# config); `start` on a cluster starts whichever of its nodes is not running (a restart after one
# was killed) and waits until all answer; the event topics then get 3 replicas, min.insync 2.
# The jars come from Maven Central via infra/kafka/pom.xml; data, config, pid and log live in
# .kafka/<port>/ at the top of the clone (one directory per node), so nodes never share anything.
set -euo pipefail
# The broker's data is the log: every user's password hash and every project's servers. Whatever
# this script or the broker it starts creates is the owner's alone (directories 0700, files 0600).
umask 077

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
INFRA="$ROOT/infra/kafka"
LIBS="$INFRA/libs"
CMD="${1:-}"
FIRST_PORT="${2:-9092}"
BROKERS="${3:-${BROKERS:-1}}"
# A node restarted after a SIGKILL first recovers every partition it holds: on a loaded machine
# that takes longer, so callers may give it more (KAFKA_START_TIMEOUT_S).
START_TIMEOUT_S="${KAFKA_START_TIMEOUT_S:-90}"
STOP_TIMEOUT_S=30

die() { echo "kafka.sh: $*" >&2; exit 1; }

[[ "$FIRST_PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$FIRST_PORT'"
[[ "$BROKERS" =~ ^[0-9]+$ && "$BROKERS" -ge 1 ]] || die "brokers must be a number from 1, got '$BROKERS'"

# The node the functions below act on: node N (1-based) of the cluster.
node() {
    NODE_ID="$1"
    PORT=$((FIRST_PORT + NODE_ID - 1))
    DIR="$ROOT/.kafka/$PORT"
    CONF="$DIR/server.properties"
    PIDFILE="$DIR/broker.pid"
    LOG="$DIR/broker.log"
}
node 1

# The pid in the pid file, only while that process is still our broker (pids get reused).
broker_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $CONF" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True once the broker answers a metadata request; without the project's venv (confluent-kafka)
# fall back to the broker's own "started" log line plus an open port.
answers_metadata() {
    local py="$ROOT/.venv/bin/python"
    if [[ -x "$py" ]] && "$py" -c 'import confluent_kafka' 2>/dev/null; then
        "$py" - "$PORT" <<'EOF' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}", "log_level": 0})
md = admin.list_topics(timeout=2)
sys.exit(0 if md.brokers else 1)
EOF
    else
        port_open "$PORT" && grep -q "Kafka Server started" "$LOG" 2>/dev/null
    fi
}

# Copy the broker's jars once; the marker holds the pom's checksum so a version bump re-copies.
ensure_libs() {
    local sum
    sum="$(sha256sum "$INFRA/pom.xml" | cut -d' ' -f1)"
    if [[ -f "$LIBS/.copied" && "$(cat "$LIBS/.copied")" == "$sum" ]]; then
        return
    fi
    command -v mvn >/dev/null || die "mvn not found; install Maven (apt-get install maven)"
    echo "kafka.sh: fetching the Kafka broker jars with Maven (once)"
    rm -rf "$LIBS"
    mkdir -p "$ROOT/.kafka"
    mvn -q -B -f "$INFRA/pom.xml" dependency:copy-dependencies >"$ROOT/.kafka/mvn.log" 2>&1 \
        || die "mvn could not fetch the broker jars; see $ROOT/.kafka/mvn.log"
    echo "$sum" > "$LIBS/.copied"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_config() {
    local cport="" voters replicas=1 isr=1
    if ((BROKERS == 1)); then
        # Keep the controller port of an existing node so its quorum address stays the same.
        if [[ -f "$CONF" ]]; then
            cport="$(sed -n 's/^controller.quorum.voters=1@127.0.0.1://p' "$CONF")"
        fi
        if [[ -z "$cport" ]] || port_open "$cport"; then
            cport="$(free_port)"
        fi
        voters="1@127.0.0.1:$cport"
    else
        cport=$((FIRST_PORT + BROKERS + NODE_ID - 1))
        voters=""
        for ((i = 1; i <= BROKERS; i++)); do
            voters+="${voters:+,}$i@127.0.0.1:$((FIRST_PORT + BROKERS + i - 1))"
        done
        # The group offsets and the transaction log as safe as the event topics: three copies,
        # two in sync before a commit counts, so a lost broker loses no commit and stops none.
        replicas=$((BROKERS >= 3 ? 3 : 1))
        isr=$((BROKERS >= 3 ? 2 : 1))
    fi
    cat > "$CONF" <<EOF
# Written by scripts/kafka.sh; rewritten on every start.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DIR/data
# Internal topics: one replica on one broker (it cannot hold more), three on a cluster.
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$isr
min.insync.replicas=$isr
# Fewer internal partitions than the default 50 so the first group or transaction is quick.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
# The group coordinator holds each offset commit up to 5 ms (the 4.x default) to batch its writes;
# a consumer that commits after every step waited that on every commit.
group.coordinator.append.linger.ms=0
# Topics are made on purpose (KafkaLog.create_topics, kept forever), never by a typo.
auto.create.topics.enable=false
EOF
}

already_running() {
    local pid
    pid="$(broker_pid)" || return 1
    echo "kafka on 127.0.0.1:$PORT already running (pid $pid)"
}

# A clone whose .kafka/ an older version of this script made world-readable is tightened, loudly.
tighten() {
    local open
    open="$(find "$ROOT/.kafka" -perm /077 -not -type l -print -quit 2>/dev/null || true)"
    if [[ -n "$open" ]]; then
        echo "kafka.sh: tightening $ROOT/.kafka (e.g. $open) to owner-only: it holds the log" >&2
        chmod -R go-rwx "$ROOT/.kafka"
    fi
}

new_cluster_id() {
    # Like Kafka's own ids: a random UUID in URL-safe base64, never starting with "-" (one in 64
    # would, and the storage tool would take it for an option and refuse to format).
    python3 -c 'import base64, uuid
while (id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(id)'
}

# Format (first time only) and launch the current node; does not wait for it.
launch() {
    mkdir -p "$DIR"
    port_open "$PORT" && die "127.0.0.1:$PORT is already taken by another process"
    write_config
    local cport
    cport="$(sed -n 's/^listeners=.*CONTROLLER:\/\/127.0.0.1://p' "$CONF")"
    ((BROKERS == 1)) || ! port_open "$cport" || die "controller port 127.0.0.1:$cport is already taken"
    if [[ ! -f "$DIR/data/meta.properties" ]]; then
        java -cp "$LIBS/*" -Dlog4j2.configurationFile="$INFRA/log4j2.properties" \
            kafka.tools.StorageTool format --cluster-id="$CLUSTER_ID" -c "$CONF" >"$DIR/format.log" 2>&1 \
            || die "formatting the storage failed; see $DIR/format.log"
    fi
    # setsid: the broker outlives the shell that started it (it is stopped by pid, not by group);
    # 9>&-: it must not inherit the start lock, or every later start would wait for it to exit.
    setsid java -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$INFRA/log4j2.properties" \
        -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$LOG" 2>&1 </dev/null 9>&- &
    echo $! > "$PIDFILE"
}

# Wait until the current node, just launched, answers a metadata request.
await_node() {
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        sleep 0.5  # first: until the background job has exec'd java, its cmdline is this script's
        if ! broker_pid >/dev/null; then
            die "the broker on port $PORT exited during start; see $LOG"
        fi
        if answers_metadata; then
            echo "kafka on 127.0.0.1:$PORT is up (pid $(cat "$PIDFILE")), log $LOG"
            return
        fi
    done
    die "the broker on port $PORT did not answer within ${START_TIMEOUT_S}s; see $LOG"
}

start() {
    node 1
    mkdir -p "$DIR"
    tighten
    # Two starts at once (make test and a test session) must not both format and launch.
    exec 9>"$DIR/.lock"
    flock -w 300 9 || die "another kafka.sh holds $DIR/.lock"
    local launched=() n
    for ((n = 1; n <= BROKERS; n++)); do
        node "$n"
        already_running || launched+=("$n")
    done
    ((${#launched[@]})) || return 0
    command -v java >/dev/null || die "java not found; install a JDK 17 (apt-get install openjdk-17-jre-headless)"
    ensure_libs
    # One cluster id for every node of a cluster, kept beside node 1 for the nodes formatted later.
    node 1
    CLUSTER_ID="$(cat "$DIR/cluster.id" 2>/dev/null || true)"
    if [[ -z "$CLUSTER_ID" ]]; then
        CLUSTER_ID="$(new_cluster_id)"
        ((BROKERS == 1)) || echo "$CLUSTER_ID" > "$DIR/cluster.id"
    fi
    # All at once: a node of a cluster answers only once a majority of the quorum runs.
    for n in "${launched[@]}"; do
        node "$n"
        launch
    done
    for n in "${launched[@]}"; do
        node "$n"
        await_node
    done
}

stop_node() {
    local pid
    if ! pid="$(broker_pid)"; then
        echo "kafka on 127.0.0.1:$PORT is not running"
        rm -f "$PIDFILE"
        return
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "kafka.sh: broker pid $pid ignored TERM for ${STOP_TIMEOUT_S}s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    echo "kafka on 127.0.0.1:$PORT stopped"
}

stop() {
    local n
    # A cluster's nodes all at once: one by one, the last would wait for a quorum that is gone.
    for ((n = 1; n <= BROKERS; n++)); do
        node "$n"
        stop_node &
    done
    wait
}

status() {
    local pid n down=0
    for ((n = 1; n <= BROKERS; n++)); do
        node "$n"
        if pid="$(broker_pid)"; then
            echo "kafka on 127.0.0.1:$PORT running (pid $pid), log $LOG"
        else
            echo "kafka on 127.0.0.1:$PORT not running"
            down=1
        fi
    done
    ((down == 0)) || exit 3
}

case "$CMD" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: kafka.sh start|stop|status [PORT] [BROKERS]" ;;
esac
