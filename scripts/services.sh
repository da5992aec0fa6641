#!/usr/bin/env bash
# Start / stop the real backing services that evnet's tests use, on this
# machine, without Docker or systemd:
#   * MariaDB  (Debian package, run as a plain background mariadbd)
#   * Apache Kafka, single-node KRaft broker+controller (jars from Maven Central)
#
# Usage: bash scripts/services.sh COMMAND [SERVICE...]
#   up [mysql] [kafka]     install what is missing, start (idempotent), print exports
#   down [mysql] [kafka]   stop what this script started (by PID), SIGTERM then SIGKILL
#   status                 print what is up (exit 0 if all up, 3 otherwise)
#   env                    print `export ...` lines for the services that are up
#   restart-mysql          stop MariaDB by PID, start it again on the same data dir
#   restart-kafka          stop Kafka by PID, start it again on the same data dir
#   (down / restart-* accept --kill: SIGKILL at once, i.e. simulate a crash)
#
# Environment: EVNET_SERVICES_DIR (state dir, default /tmp/evnet-services),
#   EVNET_MYSQL_PORT (13306), EVNET_KAFKA_PORT (19092),
#   EVNET_KAFKA_CONTROLLER_PORT (Kafka port + 1), EVNET_KAFKA_HEAP (512m),
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
KAFKA_PORT=${EVNET_KAFKA_PORT:-$(recorded kafka.port)}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${EVNET_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_HEAP=${EVNET_KAFKA_HEAP:-512m}
MYSQL_USER=evnet
MYSQL_PASSWORD=evnet
MYSQL_DB=evnet

MYSQL_START_TIMEOUT=30
KAFKA_START_TIMEOUT=90
STOP_TIMEOUT=15
APT_LOCK_WAIT=300

KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_LIBS="$STATE/kafka-libs"
MYSQL_DATA="$STATE/mysql"
MYSQL_SOCKET="$STATE/mysql.sock"
MYSQL_LOG="$STATE/mariadb.log"
MYSQL_PIDFILE="$STATE/mariadb.pid"
KAFKA_DIR="$STATE/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOG="$STATE/kafka.log"
KAFKA_PIDFILE="$STATE/kafka.pid"
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

mysql_url() { echo "mysql://$MYSQL_USER:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT/$MYSQL_DB"; }
kafka_addr() { echo "127.0.0.1:$KAFKA_PORT"; }

# ---------------------------------------------------------------- helpers

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

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
            log "mysql: already up (pid $pid, 127.0.0.1:$MYSQL_PORT)"
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
        log "mysql: starting mariadbd on 127.0.0.1:$MYSQL_PORT"
        echo "$MYSQL_PORT" >"$STATE/mysql.port"
        spawn "$MYSQL_PIDFILE" "$MYSQL_LOG" mariadbd --no-defaults \
            --datadir="$MYSQL_DATA" --socket="$MYSQL_SOCKET" --port="$MYSQL_PORT" \
            --bind-address=127.0.0.1 --user=root --pid-file="$STATE/mariadbd.pid" \
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
    for host in 127.0.0.1 localhost; do
        sql+="CREATE USER IF NOT EXISTS '$MYSQL_USER'@'$host' IDENTIFIED BY '$MYSQL_PASSWORD';"
        sql+="ALTER USER '$MYSQL_USER'@'$host' IDENTIFIED BY '$MYSQL_PASSWORD';"
        # tests create their own databases (evnet_test_*): grant everything
        sql+="GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'$host' WITH GRANT OPTION;"
    done
    sql+="FLUSH PRIVILEGES;"
    local out
    out=$(timeout 30 mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot -e "$sql" 2>&1) ||
        { printf '%s\n' "$out" >&2; die_log "mysql: could not create database/user" "$MYSQL_LOG"; }
    out=$(timeout 30 mariadb --no-defaults -h 127.0.0.1 -P "$MYSQL_PORT" -u"$MYSQL_USER" \
        -p"$MYSQL_PASSWORD" "$MYSQL_DB" -e 'SELECT 1' 2>&1) ||
        { printf '%s\n' "$out" >&2; die_log "mysql: cannot log in as $MYSQL_USER over TCP" "$MYSQL_LOG"; }
}

mysql_stop() { stop_by_pidfile mysql "$MYSQL_PIDFILE" "${1:-}"; }

# ---------------------------------------------------------------- Kafka

kafka_write_config() {
    mkdir -p "$KAFKA_DIR" "$KAFKA_DATA"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# generated by scripts/services.sh -- rewritten at every start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# let tests use short consumer session timeouts (default minimum is 6 s)
group.min.session.timeout.ms=1000
# after a crash (SIGKILL) the restarted broker waits for its old registration
# to expire: keep that short (defaults 9 s / 2 s)
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

KAFKA_JAVA=(java -Xmx"$KAFKA_HEAP" -Xms128m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties"
    -cp "$KAFKA_LIBS/*")

kafka_format() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local cid
    if [[ -s $KAFKA_DIR/cluster.id ]]; then
        cid=$(cat "$KAFKA_DIR/cluster.id")
    else
        cid=$(timeout 60 java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1) ||
            die "kafka: could not generate a cluster id"
        [[ -n $cid ]] || die "kafka: empty cluster id"
        echo "$cid" >"$KAFKA_DIR/cluster.id"
    fi
    log "kafka: formatting $KAFKA_DATA (cluster id $cid)"
    timeout 120 "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cid" \
        -c "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1 ||
        die_log "kafka: storage format failed" "$KAFKA_LOG"
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

kafka_metadata_ok() {
    local py=$1
    timeout 20 "$py" - "127.0.0.1:$KAFKA_PORT" <<'EOF' >/dev/null 2>&1
import sys
from kafka import KafkaConsumer
c = KafkaConsumer(bootstrap_servers=sys.argv[1], request_timeout_ms=8000)
try:
    c.topics()
finally:
    c.close()
EOF
}

kafka_is_up() {
    local pid
    pid=$(our_pid "$KAFKA_PIDFILE")
    [[ -n $pid ]] && port_open "$KAFKA_PORT"
}

kafka_start() {
    local pid
    pid=$(our_pid "$KAFKA_PIDFILE")
    if [[ -n $pid ]]; then
        if port_open "$KAFKA_PORT"; then
            log "kafka: already up (pid $pid, 127.0.0.1:$KAFKA_PORT)"
            return 0
        fi
        log "kafka: pid $pid alive but port $KAFKA_PORT not answering yet, waiting"
    else
        rm -f "$KAFKA_PIDFILE"
        port_open "$KAFKA_PORT" && die "kafka: port $KAFKA_PORT is taken by another process (set EVNET_KAFKA_PORT)"
        port_open "$KAFKA_CONTROLLER_PORT" && die "kafka: controller port $KAFKA_CONTROLLER_PORT is taken (set EVNET_KAFKA_CONTROLLER_PORT)"
        command -v java >/dev/null 2>&1 || die "java not found"
        ensure_kafka_libs
        kafka_write_config
        [[ -f $KAFKA_LOG ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.prev"
        kafka_format
        log "kafka: starting broker on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)"
        echo "$KAFKA_PORT" >"$STATE/kafka.port"
        spawn "$KAFKA_PIDFILE" "$KAFKA_LOG" "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties"
        pid=$(tr -dc '0-9' <"$KAFKA_PIDFILE")
    fi
    local py deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    py=$(kafka_python || true)
    while ((SECONDS < deadline)); do
        alive "$pid" || { rm -f "$KAFKA_PIDFILE"; die_log "kafka: broker exited during start-up" "$KAFKA_LOG"; }
        if port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$KAFKA_LOG" 2>/dev/null; then
            if [[ -z $py ]] || kafka_metadata_ok "$py"; then
                log "kafka: up (pid $pid) $(kafka_addr)${py:+ (metadata checked with kafka-python)}"
                return 0
            fi
        fi
        sleep 0.5
    done
    die_log "kafka: not ready after ${KAFKA_START_TIMEOUT}s (pid $pid left running; 'down' stops it)" "$KAFKA_LOG"
}

kafka_stop() { stop_by_pidfile kafka "$KAFKA_PIDFILE" "${1:-}"; }

# ---------------------------------------------------------------- env / status

print_env() {
    if mysql_is_up; then echo "export EVNET_TEST_MYSQL=$(mysql_url)"; fi
    if kafka_is_up; then echo "export EVNET_TEST_KAFKA=$(kafka_addr)"; fi
    return 0
}

write_env_file() {
    [[ -d $STATE ]] || return 0
    print_env >"$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_status() {
    local ok=0 pid
    pid=$(our_pid "$MYSQL_PIDFILE")
    if mysql_is_up; then
        echo "mysql: up   pid $pid  $(mysql_url)  (log $MYSQL_LOG)"
    else
        echo "mysql: down${pid:+ (pid $pid alive, port $MYSQL_PORT not answering)}"
        ok=3
    fi
    pid=$(our_pid "$KAFKA_PIDFILE")
    if kafka_is_up; then
        echo "kafka: up   pid $pid  $(kafka_addr)  (log $KAFKA_LOG)"
    else
        echo "kafka: down${pid:+ (pid $pid alive, port $KAFKA_PORT not answering)}"
        ok=3
    fi
    echo "state dir: $STATE"
    return $ok
}

# which services: args among mysql/kafka, default both
parse_services() {
    WANT_MYSQL=0 WANT_KAFKA=0 HARD=
    local a
    for a in "$@"; do
        case $a in
        mysql | mariadb) WANT_MYSQL=1 ;;
        kafka) WANT_KAFKA=1 ;;
        --kill) HARD=--kill ;;
        *) die "unknown argument: $a" ;;
        esac
    done
    if ((WANT_MYSQL == 0 && WANT_KAFKA == 0)); then WANT_MYSQL=1 WANT_KAFKA=1; fi
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
        if ((WANT_KAFKA)); then ensure_kafka_libs; fi
        if ((WANT_MYSQL)); then mysql_start; fi
        if ((WANT_KAFKA)); then kafka_start; fi
        write_env_file
        log "ready in $((SECONDS - t0))s; state dir $STATE; env file $ENV_FILE"
        ((WANT_MYSQL)) && log "  MySQL: $(mysql_url)   (log $MYSQL_LOG)"
        ((WANT_KAFKA)) && log "  Kafka: $(kafka_addr)   (log $KAFKA_LOG)"
        print_env
        ;;
    down)
        parse_services "$@"
        [[ -d $STATE ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
        with_lock
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
