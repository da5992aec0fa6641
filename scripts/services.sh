#!/usr/bin/env bash
# Start / stop the real backing services that evnet's tests use, on this
# machine, without Docker or systemd:
#   * MariaDB  (Debian package, run as a plain background mariadbd)
#   * Apache Kafka, single-node KRaft broker+controller (jars from Maven Central)
#   * on request, a three-broker KRaft Kafka cluster (each broker also a
#     controller), its own ports and data dirs: topics replicated 3 times
#
# Usage: bash scripts/services.sh COMMAND [SERVICE...]
#   up [mysql] [kafka] [kafka-cluster] [kafka-broker-N]
#                          install what is missing, start (idempotent), print exports
#                          (no service named: mysql and kafka, the test suite's)
#   down [SERVICE...]      stop what this script started (by PID), SIGTERM then SIGKILL
#   status                 print what is up (exit 0 if mysql and kafka are up, 3 otherwise)
#   env                    print `export ...` lines for the services that are up
#   restart-mysql          stop MariaDB by PID, start it again on the same data dir
#   restart-kafka          stop Kafka by PID, start it again on the same data dir
#   (down / restart-* accept --kill: SIGKILL at once, i.e. simulate a crash;
#    down kafka-broker-2 --kill crashes one broker of the cluster, up kafka-broker-2
#    starts it again)
#
# Environment: EVNET_SERVICES_DIR (state dir, default /tmp/evnet-services),
#   EVNET_BIND_ADDRESS (the address every service listens on, 127.0.0.1),
#   EVNET_MYSQL_PORT (13306), EVNET_KAFKA_PORT (19092),
#   EVNET_KAFKA_CONTROLLER_PORT (Kafka port + 1), EVNET_KAFKA_HEAP (512m),
#   EVNET_KAFKA_CLUSTER_PORT (19192: brokers on 19192..19194, controllers on
#   19202..19204), EVNET_KAFKA_CLUSTER_BROKERS (3), EVNET_KAFKA_CLUSTER_HEAP (384m),
#   EVNET_KAFKA_LIBS (the Kafka jars, default $EVNET_SERVICES_DIR/kafka-libs:
#   another state dir's can be shared),
#   EVNET_PYTHON (a python with kafka-python for the readiness check).
#
# Progress goes to stderr; stdout carries only the export lines (for up / env),
# so   eval "$(bash scripts/services.sh up)"   works.
# See docs/services.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

STATE=${EVNET_SERVICES_DIR:-/tmp/evnet-services}
# ports: the env variable if set, else the port this state dir last used, else the default
recorded() { [[ -s $STATE/$1 ]] && tr -dc '0-9' <"$STATE/$1" || true; }
MYSQL_PORT=${EVNET_MYSQL_PORT:-$(recorded mysql.port)}
MYSQL_PORT=${MYSQL_PORT:-13306}
SINGLE_PORT=${EVNET_KAFKA_PORT:-$(recorded kafka.port)}
SINGLE_PORT=${SINGLE_PORT:-19092}
SINGLE_CONTROLLER_PORT=${EVNET_KAFKA_CONTROLLER_PORT:-$((SINGLE_PORT + 1))}
SINGLE_HEAP=${EVNET_KAFKA_HEAP:-512m}
CLUSTER_PORT=${EVNET_KAFKA_CLUSTER_PORT:-$(recorded kafka-cluster.port)}
CLUSTER_PORT=${CLUSTER_PORT:-19192}
CLUSTER_BROKERS=${EVNET_KAFKA_CLUSTER_BROKERS:-3}
CLUSTER_HEAP=${EVNET_KAFKA_CLUSTER_HEAP:-384m}
BIND=${EVNET_BIND_ADDRESS:-127.0.0.1}
MYSQL_USER=evnet
MYSQL_PASSWORD=evnet
MYSQL_DB=evnet

MYSQL_START_TIMEOUT=30
KAFKA_START_TIMEOUT=90
STOP_TIMEOUT=15
APT_LOCK_WAIT=300

KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_LIBS=${EVNET_KAFKA_LIBS:-$STATE/kafka-libs}
MYSQL_DATA="$STATE/mysql"
MYSQL_SOCKET="$STATE/mysql.sock"
MYSQL_LOG="$STATE/mariadb.log"
MYSQL_PIDFILE="$STATE/mariadb.pid"
CLUSTER_DIR="$STATE/kafka-cluster"
ENV_FILE="$STATE/env.sh"

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}
# die with the tail of a log file
die_log() {
    local msg=$1 logfile=$2
    if [[ -f $logfile ]]; then
        printf '[services] ---- last lines of %s ----\n' "$logfile" >&2
        tail -n 25 "$logfile" >&2 || true
        printf '[services] ----\n' >&2
    fi
    die "$msg (log: $logfile)"
}

mysql_url() { echo "mysql://$MYSQL_USER:$MYSQL_PASSWORD@$BIND:$MYSQL_PORT/$MYSQL_DB"; }
kafka_addr() { echo "$BIND:$KAFKA_PORT"; }

# ---------------------------------------------------------------- helpers

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$BIND/$1" 2>/dev/null; }

# pid from a pid file if it names a live process that is ours (its command
# line mentions our state dir), else empty
our_pid() {
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 0
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] || return 0
    [[ -r /proc/$pid/cmdline ]] || return 0
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ $cmdline == *"$STATE/"* ]]; then
        echo "$pid"
    fi
}

alive() { kill -0 "$1" 2>/dev/null; }

# start a command detached in its own session; its PID (that of the exec'd
# program itself) lands in the pid file
spawn() {
    local pidfile=$1 logfile=$2
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $pidfile ]] && return 0
        sleep 0.1
    done
    die_log "could not start $1" "$logfile"
}

# stop_pid NAME PIDFILE [--kill]
stop_by_pidfile() {
    local name=$1 pidfile=$2 hard=${3:-} pid i
    pid=$(our_pid "$pidfile")
    if [[ -z $pid ]]; then
        [[ -e $pidfile ]] && log "$name: stale pid file removed"
        rm -f "$pidfile"
        log "$name: not running"
        return 0
    fi
    if [[ $hard == --kill ]]; then
        log "$name: SIGKILL pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
    else
        log "$name: SIGTERM pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "$name: still alive after ${STOP_TIMEOUT}s, SIGKILL pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && die "$name: pid $pid would not die"
    rm -f "$pidfile"
    log "$name: stopped"
}

# ---------------------------------------------------------------- install

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

# run an apt-get command, waiting (bounded) while another apt/dpkg holds the lock
apt_run() {
    local deadline=$((SECONDS + APT_LOCK_WAIT)) out rc
    while true; do
        rc=0
        out=$(DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get \
            -o DPkg::Lock::Timeout=60 -q -y "$@" 2>&1) || rc=$?
        if ((rc == 0)); then return 0; fi
        if grep -qiE 'could not get lock|is locked|unable to lock|lock-frontend' <<<"$out" &&
            ((SECONDS < deadline)); then
            log "apt/dpkg is busy (another install running?), waiting..."
            sleep 5
            continue
        fi
        printf '%s\n' "$out" | tail -n 20 >&2
        die "apt-get $* failed (exit $rc)"
    done
}

ensure_packages() {
    local want=(mariadb-server mariadb-client default-libmysqlclient-dev pkg-config)
    command -v java >/dev/null 2>&1 || want+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || want+=(maven)
    local missing=() p
    for p in "${want[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing apt packages: ${missing[*]} (this takes a while)"
    apt_run update
    apt_run install --no-install-recommends "${missing[@]}"
    for p in "${missing[@]}"; do
        pkg_installed "$p" || die "apt package $p still not installed"
    done
}

ensure_kafka_libs() {
    local stamp="$KAFKA_LIBS/.stamp" want
    want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found"
    log "fetching Kafka jars with Maven (pom: $KAFKA_POM)"
    local tmp="$KAFKA_LIBS.tmp" mvnlog="$STATE/maven.log"
    rm -rf "$tmp"
    if ! timeout 900 mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" >"$mvnlog" 2>&1; then
        die_log "Maven could not fetch the Kafka jars" "$mvnlog"
    fi
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die_log "Maven fetched no kafka_2.13 jar" "$mvnlog"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- MariaDB

mysql_admin() { mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" -uroot "$@"; }
mysql_root() { mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot "$@"; }

mysql_is_up() {
    local pid
    pid=$(our_pid "$MYSQL_PIDFILE")
    [[ -n $pid ]] && port_open "$MYSQL_PORT"
}

mysql_start() {
    local pid
    pid=$(our_pid "$MYSQL_PIDFILE")
    if [[ -n $pid ]]; then
        if port_open "$MYSQL_PORT"; then
            log "mysql: already up (pid $pid, $BIND:$MYSQL_PORT)"
            mysql_provision
            return 0
        fi
        log "mysql: pid $pid alive but port $MYSQL_PORT not answering yet, waiting"
    else
        rm -f "$MYSQL_PIDFILE"
        port_open "$MYSQL_PORT" && die "mysql: port $MYSQL_PORT is taken by another process (set EVNET_MYSQL_PORT)"
        if [[ ! -d $MYSQL_DATA/mysql ]]; then
            log "mysql: initialising data dir $MYSQL_DATA"
            rm -rf "$MYSQL_DATA"
            mkdir -p "$MYSQL_DATA"
            if ! timeout 120 mariadb-install-db --no-defaults --datadir="$MYSQL_DATA" --user=root \
                --auth-root-authentication-method=normal --skip-test-db >>"$MYSQL_LOG" 2>&1; then
                rm -rf "$MYSQL_DATA"
                die_log "mysql: mariadb-install-db failed" "$MYSQL_LOG"
            fi
        fi
        log "mysql: starting mariadbd on $BIND:$MYSQL_PORT"
        echo "$MYSQL_PORT" >"$STATE/mysql.port"
        spawn "$MYSQL_PIDFILE" "$MYSQL_LOG" mariadbd --no-defaults \
            --datadir="$MYSQL_DATA" --socket="$MYSQL_SOCKET" --port="$MYSQL_PORT" \
            --bind-address="$BIND" --user=root --pid-file="$STATE/mariadbd.pid" \
            --log-error="$MYSQL_LOG" --skip-name-resolve \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
            --max-connections=500 --innodb-flush-log-at-trx-commit=2
        pid=$(tr -dc '0-9' <"$MYSQL_PIDFILE")
    fi
    local i
    for ((i = 0; i < MYSQL_START_TIMEOUT * 2; i++)); do
        alive "$pid" || { rm -f "$MYSQL_PIDFILE"; die_log "mysql: mariadbd exited during start-up" "$MYSQL_LOG"; }
        if mysql_admin --connect-timeout=2 ping >/dev/null 2>&1 && port_open "$MYSQL_PORT"; then
            mysql_provision
            log "mysql: up (pid $pid) $(mysql_url)"
            return 0
        fi
        sleep 0.5
    done
    die_log "mysql: not ready after ${MYSQL_START_TIMEOUT}s (pid $pid left running; 'down' stops it)" "$MYSQL_LOG"
}

mysql_provision() {
    local sql
    sql="CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    local host
    local hosts=(127.0.0.1 localhost)
    [[ $BIND != 127.0.0.1 ]] && hosts+=("$BIND") # clients on this host connecting to its address
    for host in "${hosts[@]}"; do
        sql+="CREATE USER IF NOT EXISTS '$MYSQL_USER'@'$host' IDENTIFIED BY '$MYSQL_PASSWORD';"
        sql+="ALTER USER '$MYSQL_USER'@'$host' IDENTIFIED BY '$MYSQL_PASSWORD';"
        # tests create their own databases (evnet_test_*): grant everything
        sql+="GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'$host' WITH GRANT OPTION;"
    done
    sql+="FLUSH PRIVILEGES;"
    local out
    out=$(timeout 30 mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot -e "$sql" 2>&1) ||
        { printf '%s\n' "$out" >&2; die_log "mysql: could not create database/user" "$MYSQL_LOG"; }
    out=$(timeout 30 mariadb --no-defaults -h "$BIND" -P "$MYSQL_PORT" -u"$MYSQL_USER" \
        -p"$MYSQL_PASSWORD" "$MYSQL_DB" -e 'SELECT 1' 2>&1) ||
        { printf '%s\n' "$out" >&2; die_log "mysql: cannot log in as $MYSQL_USER over TCP" "$MYSQL_LOG"; }
}

mysql_stop() { stop_by_pidfile mysql "$MYSQL_PIDFILE" "${1:-}"; }

# ---------------------------------------------------------------- Kafka
# One set of functions for every broker: kafka_single / kafka_broker N select
# which one (its ports, dirs, log, pid file, quorum and replication).

kafka_single() {
    KAFKA_NAME=kafka KAFKA_NODE=1
    KAFKA_PORT=$SINGLE_PORT KAFKA_CONTROLLER_PORT=$SINGLE_CONTROLLER_PORT KAFKA_HEAP=$SINGLE_HEAP
    KAFKA_DIR="$STATE/kafka" KAFKA_LOG="$STATE/kafka.log" KAFKA_PIDFILE="$STATE/kafka.pid"
    KAFKA_DATA="$KAFKA_DIR/data" KAFKA_CLUSTER_ID_FILE="$STATE/kafka/cluster.id"
    KAFKA_VOTERS="1@$BIND:$KAFKA_CONTROLLER_PORT" KAFKA_REPLICAS=1 KAFKA_MIN_ISR=1
    KAFKA_PORT_VAR=EVNET_KAFKA_PORT KAFKA_CONTROLLER_VAR=EVNET_KAFKA_CONTROLLER_PORT
}

cluster_port() { echo $((CLUSTER_PORT + $1 - 1)); }
cluster_controller_port() { echo $((CLUSTER_PORT + 10 + $1 - 1)); }
cluster_addr() {
    local n out=
    for ((n = 1; n <= CLUSTER_BROKERS; n++)); do out+="${out:+,}$BIND:$(cluster_port "$n")"; done
    echo "$out"
}

kafka_broker() {
    local n=$1 i voters=
    ((n >= 1 && n <= CLUSTER_BROKERS)) || die "no broker $n in a cluster of $CLUSTER_BROKERS"
    for ((i = 1; i <= CLUSTER_BROKERS; i++)); do voters+="${voters:+,}$i@$BIND:$(cluster_controller_port "$i")"; done
    KAFKA_NAME=kafka-broker-$n KAFKA_NODE=$n
    KAFKA_PORT=$(cluster_port "$n") KAFKA_CONTROLLER_PORT=$(cluster_controller_port "$n") KAFKA_HEAP=$CLUSTER_HEAP
    KAFKA_DIR="$CLUSTER_DIR/broker-$n" KAFKA_LOG="$STATE/kafka-broker-$n.log" KAFKA_PIDFILE="$STATE/kafka-broker-$n.pid"
    KAFKA_DATA="$KAFKA_DIR/data" KAFKA_CLUSTER_ID_FILE="$CLUSTER_DIR/cluster.id"
    KAFKA_VOTERS=$voters
    KAFKA_REPLICAS=$((CLUSTER_BROKERS < 3 ? CLUSTER_BROKERS : 3))
    KAFKA_MIN_ISR=$((KAFKA_REPLICAS >= 3 ? 2 : 1))
    KAFKA_PORT_VAR=EVNET_KAFKA_CLUSTER_PORT KAFKA_CONTROLLER_VAR=EVNET_KAFKA_CLUSTER_PORT
}

kafka_write_config() {
    mkdir -p "$KAFKA_DIR" "$KAFKA_DATA"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# generated by scripts/services.sh -- rewritten at every start
process.roles=broker,controller
node.id=$KAFKA_NODE
controller.quorum.voters=$KAFKA_VOTERS
listeners=PLAINTEXT://$BIND:$KAFKA_PORT,CONTROLLER://$BIND:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$BIND:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=3
default.replication.factor=$KAFKA_REPLICAS
min.insync.replicas=$KAFKA_MIN_ISR
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=$KAFKA_REPLICAS
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$KAFKA_REPLICAS
transaction.state.log.min.isr=$KAFKA_MIN_ISR
share.coordinator.state.topic.replication.factor=$KAFKA_REPLICAS
share.coordinator.state.topic.min.isr=$KAFKA_MIN_ISR
# a broker that comes back catches up and leads again
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
# let tests use short consumer session timeouts (default minimum is 6 s)
group.min.session.timeout.ms=1000
# after a crash (SIGKILL) the restarted broker waits for its old registration
# to expire: keep that short (defaults 9 s / 2 s); in a cluster, the others
# notice a dead broker as soon
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
log.retention.hours=24
EOF
    cat >"$KAFKA_DIR/log4j2.properties" <<'EOF'
# generated by scripts/services.sh
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.req.name = kafka.request.logger
logger.req.level = WARN
logger.ctrl.name = state.change.logger
logger.ctrl.level = WARN
EOF
}

kafka_java() {
    KAFKA_JAVA=(java -Xmx"$KAFKA_HEAP" -Xms128m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties"
        -cp "$KAFKA_LIBS/*")
}

kafka_format() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local cid
    mkdir -p "$(dirname "$KAFKA_CLUSTER_ID_FILE")"
    if [[ -s $KAFKA_CLUSTER_ID_FILE ]]; then
        cid=$(cat "$KAFKA_CLUSTER_ID_FILE")
    else
        cid=$(timeout 60 java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1) ||
            die "$KAFKA_NAME: could not generate a cluster id"
        [[ -n $cid ]] || die "$KAFKA_NAME: empty cluster id"
        echo "$cid" >"$KAFKA_CLUSTER_ID_FILE"
    fi
    log "$KAFKA_NAME: formatting $KAFKA_DATA (cluster id $cid)"
    timeout 120 "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cid" \
        -c "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1 ||
        die_log "$KAFKA_NAME: storage format failed" "$KAFKA_LOG"
}

# a python that has kafka-python, if any
kafka_python() {
    local py
    for py in ${EVNET_PYTHON:-} "$REPO_DIR/.venv/bin/python" python3; do
        [[ -n $py ]] || continue
        command -v "$py" >/dev/null 2>&1 || [[ -x $py ]] || continue
        if timeout 20 "$py" -c 'import kafka' >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
}

# the cluster at $2 answers metadata and (with $3) reports that many brokers
kafka_metadata_ok() {
    local py=$1
    timeout 20 "$py" - "$2" "${3:-0}" <<'EOF' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
c = KafkaAdminClient(bootstrap_servers=sys.argv[1].split(","), request_timeout_ms=8000)
try:
    brokers = c.describe_cluster()["brokers"]
    assert len(brokers) >= int(sys.argv[2]), brokers
finally:
    c.close()
EOF
}

kafka_is_up() {
    local pid
    pid=$(our_pid "$KAFKA_PIDFILE")
    [[ -n $pid ]] && port_open "$KAFKA_PORT"
}

# start the selected broker unless it runs; does not wait for it
kafka_spawn() {
    local pid
    pid=$(our_pid "$KAFKA_PIDFILE")
    if [[ -n $pid ]]; then
        port_open "$KAFKA_PORT" || log "$KAFKA_NAME: pid $pid alive but port $KAFKA_PORT not answering yet, waiting"
        return 0
    fi
    rm -f "$KAFKA_PIDFILE"
    port_open "$KAFKA_PORT" && die "$KAFKA_NAME: port $BIND:$KAFKA_PORT is taken by another process (set $KAFKA_PORT_VAR)"
    port_open "$KAFKA_CONTROLLER_PORT" && die "$KAFKA_NAME: controller port $KAFKA_CONTROLLER_PORT is taken (set $KAFKA_CONTROLLER_VAR)"
    command -v java >/dev/null 2>&1 || die "java not found"
    ensure_kafka_libs
    kafka_write_config
    kafka_java
    [[ -f $KAFKA_LOG ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.prev"
    kafka_format
    log "$KAFKA_NAME: starting broker on $BIND:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)"
    spawn "$KAFKA_PIDFILE" "$KAFKA_LOG" "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties"
}

# wait (bounded) until the selected broker serves metadata ($1: bootstrap to ask, $2: brokers it must report)
kafka_wait() {
    local where=${1:-$BIND:$KAFKA_PORT} brokers=${2:-0} pid py deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    pid=$(our_pid "$KAFKA_PIDFILE")
    [[ -n $pid ]] || die_log "$KAFKA_NAME: not running" "$KAFKA_LOG"
    py=$(kafka_python || true)
    while ((SECONDS < deadline)); do
        alive "$pid" || { rm -f "$KAFKA_PIDFILE"; die_log "$KAFKA_NAME: broker exited during start-up" "$KAFKA_LOG"; }
        if port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$KAFKA_LOG" 2>/dev/null; then
            if [[ -z $py ]] || kafka_metadata_ok "$py" "$where" "$brokers"; then
                log "$KAFKA_NAME: up (pid $pid) $(kafka_addr)${py:+ (metadata checked with kafka-python)}"
                return 0
            fi
        fi
        sleep 0.5
    done
    die_log "$KAFKA_NAME: not ready after ${KAFKA_START_TIMEOUT}s (pid $pid left running; 'down' stops it)" "$KAFKA_LOG"
}

kafka_start() {
    kafka_single
    kafka_spawn
    echo "$KAFKA_PORT" >"$STATE/kafka.port"
    kafka_wait
}

kafka_stop() {
    kafka_single
    stop_by_pidfile kafka "$KAFKA_PIDFILE" "${1:-}"
}

# the brokers named (default all): spawned together (a quorum of controllers
# must be up before any broker is ready), then each waited for, until the
# cluster reports every broker
cluster_start() {
    local n brokers=("$@")
    ((${#brokers[@]})) || brokers=($(seq 1 "$CLUSTER_BROKERS"))
    echo "$CLUSTER_PORT" >"$STATE/kafka-cluster.port"
    for n in "${brokers[@]}"; do
        kafka_broker "$n"
        kafka_spawn
    done
    for n in "${brokers[@]}"; do
        kafka_broker "$n"
        kafka_wait "$(cluster_addr)" "$CLUSTER_BROKERS"
    done
}

cluster_stop() {
    local hard=$1 n
    shift
    local brokers=("$@")
    ((${#brokers[@]})) || brokers=($(seq "$CLUSTER_BROKERS" -1 1))
    local pid
    if [[ $hard != --kill ]]; then
        # SIGTERM to all at once: the last broker alone would wait for a quorum to shut down
        for n in "${brokers[@]}"; do
            kafka_broker "$n"
            pid=$(our_pid "$KAFKA_PIDFILE")
            [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
        done
    fi
    for n in "${brokers[@]}"; do
        kafka_broker "$n"
        stop_by_pidfile "$KAFKA_NAME" "$KAFKA_PIDFILE" "$hard"
    done
}

cluster_is_up() {
    local n
    [[ -d $CLUSTER_DIR ]] || return 1
    for ((n = 1; n <= CLUSTER_BROKERS; n++)); do
        kafka_broker "$n"
        kafka_is_up || return 1
    done
}

# ---------------------------------------------------------------- env / status

print_env() {
    if mysql_is_up; then echo "export EVNET_TEST_MYSQL=$(mysql_url)"; fi
    kafka_single
    if kafka_is_up; then echo "export EVNET_TEST_KAFKA=$(kafka_addr)"; fi
    if cluster_is_up; then echo "export EVNET_TEST_KAFKA_CLUSTER=$(cluster_addr)"; fi
    return 0
}

write_env_file() {
    [[ -d $STATE ]] || return 0
    print_env >"$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_status() {
    local ok=0 pid n
    pid=$(our_pid "$MYSQL_PIDFILE")
    if mysql_is_up; then
        echo "mysql: up   pid $pid  $(mysql_url)  (log $MYSQL_LOG)"
    else
        echo "mysql: down${pid:+ (pid $pid alive, port $MYSQL_PORT not answering)}"
        ok=3
    fi
    kafka_single
    pid=$(our_pid "$KAFKA_PIDFILE")
    if kafka_is_up; then
        echo "kafka: up   pid $pid  $(kafka_addr)  (log $KAFKA_LOG)"
    else
        echo "kafka: down${pid:+ (pid $pid alive, port $KAFKA_PORT not answering)}"
        ok=3
    fi
    if [[ -d $CLUSTER_DIR ]]; then # only once it was started: not part of the exit status
        for ((n = 1; n <= CLUSTER_BROKERS; n++)); do
            kafka_broker "$n"
            pid=$(our_pid "$KAFKA_PIDFILE")
            if kafka_is_up; then
                echo "$KAFKA_NAME: up   pid $pid  $(kafka_addr)  (log $KAFKA_LOG)"
            else
                echo "$KAFKA_NAME: down${pid:+ (pid $pid alive, port $KAFKA_PORT not answering)}"
            fi
        done
    fi
    echo "state dir: $STATE"
    return $ok
}

# which services: args among mysql/kafka/kafka-cluster/kafka-broker-N, default mysql and kafka
parse_services() {
    WANT_MYSQL=0 WANT_KAFKA=0 WANT_CLUSTER=0 BROKERS=() HARD=
    local a
    for a in "$@"; do
        case $a in
        mysql | mariadb) WANT_MYSQL=1 ;;
        kafka) WANT_KAFKA=1 ;;
        kafka-cluster) WANT_CLUSTER=1 ;;
        kafka-broker-[0-9]*)
            [[ ${a#kafka-broker-} =~ ^[0-9]+$ ]] || die "unknown argument: $a"
            BROKERS+=("${a#kafka-broker-}")
            ;;
        --kill) HARD=--kill ;;
        *) die "unknown argument: $a" ;;
        esac
    done
    if ((WANT_MYSQL == 0 && WANT_KAFKA == 0 && WANT_CLUSTER == 0 && ${#BROKERS[@]} == 0)); then
        WANT_MYSQL=1 WANT_KAFKA=1
    fi
    if ((WANT_CLUSTER)); then BROKERS=(); fi # the whole cluster
}

with_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 1200 9 || die "another services.sh holds $STATE/.lock"
    # keep env.sh truthful whatever happens below
    trap 'write_env_file || true' EXIT
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
    up)
        parse_services "$@"
        with_lock
        local t0=$SECONDS
        ensure_packages
        if ((WANT_KAFKA || WANT_CLUSTER || ${#BROKERS[@]})); then ensure_kafka_libs; fi
        if ((WANT_MYSQL)); then mysql_start; fi
        if ((WANT_KAFKA)); then kafka_start; fi
        if ((WANT_CLUSTER || ${#BROKERS[@]})); then cluster_start "${BROKERS[@]}"; fi
        write_env_file
        log "ready in $((SECONDS - t0))s; state dir $STATE; env file $ENV_FILE"
        ((WANT_MYSQL)) && log "  MySQL: $(mysql_url)   (log $MYSQL_LOG)"
        ((WANT_KAFKA)) && kafka_single && log "  Kafka: $(kafka_addr)   (log $KAFKA_LOG)"
        ((WANT_CLUSTER)) && log "  Kafka cluster: $(cluster_addr)   (logs $STATE/kafka-broker-N.log)"
        print_env
        ;;
    down)
        parse_services "$@"
        [[ -d $STATE ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
        with_lock
        if ((WANT_CLUSTER || ${#BROKERS[@]})); then cluster_stop "$HARD" "${BROKERS[@]}"; fi
        if ((WANT_KAFKA)); then kafka_stop "$HARD"; fi
        if ((WANT_MYSQL)); then mysql_stop "$HARD"; fi
        write_env_file
        ;;
    restart-mysql | restart-kafka)
        parse_services "$@"
        with_lock
        if [[ $cmd == restart-mysql ]]; then
            mysql_stop "$HARD"
            mysql_start
        else
            kafka_stop "$HARD"
            kafka_start
        fi
        write_env_file
        ;;
    status) cmd_status ;;
    env) print_env ;;
    -h | --help | help) usage ;;
    *)
        usage
        exit 2
        ;;
    esac
}

main "$@"
