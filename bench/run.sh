#!/usr/bin/env bash
# authgate against nginx (TLS reverse proxy, no auth) and the direct path.
# See bench/README.md. Quick check: BENCH_DURATION=3 BENCH_ROUNDS=1 bench/run.sh
set -euo pipefail

# ---------------------------------------------------------------- settings
DURATION=${BENCH_DURATION:-10}        # seconds per load run
ROUNDS=${BENCH_ROUNDS:-3}             # rounds per scenario, fronts alternated
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000} # idle keep-alive TLS connections held
FRONT_CPUS=${BENCH_FRONT_CPUS:-0}     # nginx front worker / authgate
UPSTREAM_CPUS=${BENCH_UPSTREAM_CPUS:-1}
LOAD_CPUS=${BENCH_LOAD_CPUS:-1}       # wrk, h2load, curl, python
WRK_THREADS=${BENCH_WRK_THREADS:-2}
LOGIN_CONNS=${BENCH_LOGIN_CONNS:-8}
UP_PORT=${BENCH_UP_PORT:-18080}       # upstream, HTTP/1.1
UP_H2C_PORT=${BENCH_UP_H2C_PORT:-18081} # upstream, h2c prior knowledge (direct h2)
UP_PORT2=${BENCH_UP_PORT2:-18082}     # upstream's second port: the second target of "two"
NGINX_PORT=${BENCH_NGINX_PORT:-18443}
AG_PORT=${BENCH_AUTHGATE_PORT:-18444}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
SCENARIOS=${BENCH_SCENARIOS:-h1 h2 two newconn body1m badtoken c8 rate8 store}
# "store": login, refresh and proxied requests, PostgreSQL store against sled (bench/store.sh).
# "two": HTTP/1.1 like h1, through a route with two targets (round robin).
RPS_PER_CONN=${BENCH_RATE:-500}       # rate8: requests/s per connection (x 8)
# "rate1" (not in the default list): rate8's total rate over one connection,
# so no two requests arrive together; tells a front's own added latency from
# the queueing of the bursts 8 connections make.
SKIP_MEMORY=${BENCH_SKIP_MEMORY:-0}   # 1: skip streaming, idle-connection and login-flood parts
COMPARE_ALG=${BENCH_COMPARE_ALG-EdDSA} # token algorithm compared with HS256 ("" to skip)
ALG_PORT=${BENCH_ALG_PORT:-18445}     # the second authgate, signing with $COMPARE_ALG

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench
# Optional route key for authgate's upstream pool cap (default: authgate's own).
MAX_UPSTREAM=${BENCH_MAX_UPSTREAM_CONNECTIONS:-}
WORKERS=${BENCH_WORKERS:-}           # authgate's [server] workers (default: one per CPU it may use)
open_out ""
mkdir -p "$OUT/raw"
ln -sfn "$STAMP" "$BENCH/out/latest"

make_tmp bench
HOLDER_PID=""
TOKEN="" FORGED="" # elided from printed commands once known

section() { printf '\n== %s ==\n' "$*"; }
declare -A SHOWN=()
show_cmd() { # print each distinct command once, quoted, token elided
    local text="" arg
    for arg in "$@"; do
        [[ $arg == *[\ \"\;\(\)\{\}\<\>\*]* && $arg != \(* ]] && arg="'$arg'"
        text+="${text:+ }$arg"
    done
    text=${text//$TOKEN/\$TOKEN}
    text=${text//$FORGED/\$FORGED}
    if [[ -z ${SHOWN[$text]:-} ]]; then
        SHOWN[$text]=1
        say "\$ $text" | tee -a "$OUT/commands.txt"
    fi
}

machine_ticks() { # "busy total" ticks over all CPUs since boot
    awk '/^cpu / {busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat
}

# lib.sh's cleanup calls these around stopping $PIDS and the nginx instances.
before_cleanup() { [[ -n $HOLDER_PID ]] && kill "$HOLDER_PID" 2>/dev/null; }
after_cleanup() { declare -F store_cleanup >/dev/null && store_cleanup; } # bench/store.sh's PostgreSQL
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
section "tools"
install_tools nginx:nginx wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl python3:python3 taskset:util-linux
command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"
NCPU=$(nproc)
for set in "$FRONT_CPUS" "$UPSTREAM_CPUS" "$LOAD_CPUS"; do
    taskset -c "$set" true 2>/dev/null || die "cannot pin to CPUs '$set' (this machine has $NCPU)"
done
# The nginx front runs as many workers as authgate: BENCH_WORKERS, or one per
# CPU in $FRONT_CPUS (authgate's default; nginx's `worker_processes auto`).
# BENCH_NGINX_WORKERS sets it apart.
NGINX_WORKERS=${BENCH_NGINX_WORKERS:-${WORKERS:-$(taskset -c "$FRONT_CPUS" nproc)}}

check_ports "pick others with BENCH_UP_PORT, BENCH_UP_H2C_PORT, BENCH_NGINX_PORT, BENCH_AUTHGATE_PORT" \
    "$UP_PORT" "$UP_H2C_PORT" "$UP_PORT2" "$NGINX_PORT" "$AG_PORT" "$ALG_PORT"

# Idle connections need descriptors in the holder and in each server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
if ((FD_LIMIT < IDLE_CONNS + 500)); then
    say "note: open-file limit is $FD_LIMIT; holding $((FD_LIMIT - 500)) idle connections instead of $IDLE_CONNS"
    IDLE_CONNS=$((FD_LIMIT - 500))
fi

# ---------------------------------------------------------------- build
section "build"
build_release "$SKIP_BUILD"
require_bin

# ---------------------------------------------------------------- versions
section "machine and versions"
{
    say "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    say "host:      $(uname -srm)"
    say "cpus:      $NCPU x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    say "memory:    $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    if [[ -n ${BENCH_BIN:-} ]]; then
        say "authgate:  $("$BIN" --version), BENCH_BIN=$BIN (not built from this tree)"
    else
        say "authgate:  $("$BIN" --version) at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (+ uncommitted changes)')"
    fi
    say "rustc:     $(rustc --version)"
    say "nginx:     $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    say "wrk:       $(wrk -v 2>&1 | head -1)"
    say "h2load:    $(h2load --version 2>&1 | head -1)"
    say "openssl:   $(openssl version)"
    say "curl:      $(curl --version | head -1)"
    say "python3:   $(python3 --version 2>&1)"
    say "pinning:   front (nginx worker / authgate) CPU $FRONT_CPUS; upstream nginx CPU $UPSTREAM_CPUS; load generators CPU $LOAD_CPUS"
    say "authgate:  [server] workers ${WORKERS:-left at its default: one per CPU in $FRONT_CPUS}; nginx front: worker_processes $NGINX_WORKERS; upstream nginx: 1"
    say "runs:      $ROUNDS round(s) x ${DURATION}s per scenario and front"
} | tee "$OUT/environment.txt"
quiet_check() { # warns when other processes are using the CPUs
    local a b busy
    a=$(machine_ticks); sleep 2; b=$(machine_ticks)
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", (y[1] - x[1]) / (y[2] - x[2]) * 100 }')
    say "machine busy before the run: $busy% of all CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    if ((busy > 10)); then
        say "WARNING: other processes are using the CPUs; numbers will be noisy. Top consumers:"
        ps -eo pid,pcpu,comm --sort=-pcpu | head -6 | sed 's/^/    /'
    fi
}
quiet_check | tee -a "$OUT/environment.txt"

# ---------------------------------------------------------------- certificates
section "certificates"
make_cert_chain "$TMP" "/CN=authgate bench CA"
say "CA + CA:FALSE leaf (ECDSA P-256, SAN localhost, 127.0.0.1) in $TMP; both TLS fronts serve the same chain"

# ---------------------------------------------------------------- upstream
section "upstream nginx"
mkdir -p "$TMP/www"
head -c $((1024 * 1024)) /dev/zero | tr '\0' 'a' >"$TMP/www/1m.bin"
truncate -s 1G "$TMP/www/1g.bin" # sparse: no disk or page-cache cost

nginx_common() { nginx_main "$1" $((FD_LIMIT - 100)) "$FD_LIMIT"; } # $1 = prefix dir

start_checked_nginx() { # $1 = name, $2 = cpus, $3 = workers (default 1)
    local dir=$TMP/$1
    nginx_args "$dir" "${3:-1}"
    nginx -t -q "${NGINX_ARGS[@]}" || die "nginx config $1 invalid; see $dir/nginx.conf"
    show_cmd taskset -c "$2" nginx "${NGINX_ARGS[@]}"
    start_nginx "$dir" "$2" "nginx $1 did not start; see $dir/error.log" "${3:-1}"
}

UP=$TMP/upstream
mkdir -p "$UP"
{
    nginx_common "$UP"
    cat <<EOF
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
$(nginx_temp_paths "$UP")
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        listen 127.0.0.1:$UP_H2C_PORT http2 backlog=4096;
        listen 127.0.0.1:$UP_PORT2 backlog=4096;
        root $TMP/www;
        location = / { default_type text/plain; return 200 "$BODY"; }
        location = /two/ { default_type text/plain; return 200 "$BODY"; }
    }
}
EOF
} >"$UP/nginx.conf"
start_checked_nginx upstream "$UPSTREAM_CPUS"
cp "$UP/nginx.conf" "$OUT/nginx-upstream.conf"
[[ $(curl -s "http://127.0.0.1:$UP_PORT/" | wc -c) -eq 100 ]] || die "upstream does not answer with 100 bytes"
say "upstream: http://127.0.0.1:$UP_PORT/ (100-byte body, /1m.bin, /1g.bin), h2c on :$UP_H2C_PORT; CPU $UPSTREAM_CPUS"

# ---------------------------------------------------------------- nginx front
section "nginx front (TLS reverse proxy, no auth)"
NG=$TMP/nginx-front
mkdir -p "$NG"
{
    nginx_common "$NG"
    nginx_front_http "$NG" "$NGINX_PORT" backlog=4096 "$UP_PORT" "$UP_PORT2"
} >"$NG/nginx.conf"
start_checked_nginx nginx-front "$FRONT_CPUS" "$NGINX_WORKERS"
cp "$NG/nginx.conf" "$OUT/nginx-front.conf"
say "config:"; sed 's/^/    /' "$NG/nginx.conf"
say "nginx front: https://127.0.0.1:$NGINX_PORT/ ; CPU $FRONT_CPUS"

# ---------------------------------------------------------------- helpers
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k/1024}'; }
nginx_pids() { local master; master=$(cat "$1/nginx.pid"); echo "$master $(pgrep -P "$master" | tr '\n' ' ')"; }
nginx_rss_kib() { local total=0 pid; for pid in $(nginx_pids "$1"); do total=$((total + $(rss_kib "$pid"))); done; echo "$total"; }
front_pids() {
    case $1 in
        authgate) echo "$AG_PID" ;;
        nginx) nginx_pids "$NG" ;;
        direct) nginx_pids "$UP" ;;
    esac
}
CLK_TCK=$(getconf CLK_TCK)
stat_ticks() { # awk-expr pids... -> the expression over /proc/PID/stat (fields after the name), summed
    local expr=$1 total=0 pid fields
    shift
    for pid in "$@"; do
        fields=$(sed 's/.*) //' "/proc/$pid/stat")
        total=$((total + $(awk "{print $expr}" <<<"$fields")))
    done
    echo "$total"
}
cpu_ticks() { stat_ticks '$12 + $13' "$@"; } # user + system ticks of the given pids
sys_ticks() { stat_ticks '$13' "$@"; }       # system (kernel) ticks of the given pids
child_ticks() { # CPU ticks of every child this shell has waited for (the load generators)
    # `times` must run in this shell: a $(...) subshell starts with zero child times.
    times >"$TMP/times"
    awk -v hz="$CLK_TCK" 'NR == 2 {
        n = split($0, t, " "); total = 0
        for (i = 1; i <= n; i++) { split(t[i], p, "m"); total += p[1] * 60 + p[2] }
        printf "%d", total * hz }' "$TMP/times"
}
mem_row() { # measure authgate nginx note
    python3 -c 'import json,sys; print(json.dumps(dict(zip(["measure","authgate","nginx","note"], sys.argv[1:]))))' \
        "$@" >>"$OUT/memory.jsonl"
}

# ---------------------------------------------------------------- authgate
section "authgate"
AG=$TMP/authgate
mkdir -p "$AG"
SECRET=$(openssl rand -base64 48)
cat >"$AG/authgate.toml" <<EOF
[server]
listen = "127.0.0.1:$AG_PORT"
tls_cert = "$TMP/chain.pem"
tls_key = "$TMP/leaf-key.pem"
dev = false
access_log = false
${WORKERS:+workers = $WORKERS}
# The idle-connection measurement holds $IDLE_CONNS connections for a while.
max_connections = 20000
header_read_timeout = "120s"
idle_timeout = "300s"

[tokens]
issuer = "authgate"
audience = "authgate"
# Outlives the whole run.
access_ttl = "4h"

[store]
path = "$AG/store.sled"

[[route]]
name = "bench"
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
${MAX_UPSTREAM:+max_upstream_connections = $MAX_UPSTREAM}
EOF
if [[ " $SCENARIOS " == *" two "* ]]; then
    authgate_route_two "$UP_PORT" "$UP_PORT2" "$MAX_UPSTREAM" >>"$AG/authgate.toml"
fi
(
    cd "$AG"
    export AUTHGATE_ACCESS_SECRET=$SECRET AUTHGATE_LOG=warn
    # Its own session, as the daemonized nginx processes have: with the
    # kernel's autogroup scheduling a process shares CPU with its session, so
    # left in ours authgate would compete with the load generators' share.
    exec setsid taskset -c "$FRONT_CPUS" "$BIN" --config "$AG/authgate.toml" serve
) 2>"$OUT/authgate.log" &
AG_PID=$!
show_cmd "(cd $AG && AUTHGATE_ACCESS_SECRET=<48 random bytes, base64> AUTHGATE_LOG=warn setsid taskset -c $FRONT_CPUS $BIN --config $AG/authgate.toml serve)"
PIDS+=("$AG_PID")
wait_listening "$AG_PORT" "$AG_PID" 100 "authgate exited; see $OUT/authgate.log" \
    "authgate did not start listening; see $OUT/authgate.log"
say "authgate: https://127.0.0.1:$AG_PORT/ (pid $AG_PID, release build, default workers, access_log = false); CPU $FRONT_CPUS"
cp "$AG/authgate.toml" "$OUT/authgate.toml"
say "config:"; sed 's/^/    /' "$AG/authgate.toml"
AG_FRESH=$(rss_kib "$AG_PID")

# ---------------------------------------------------------------- token
section "access token"
EMAIL="bench-$STAMP@example.com"
PASSWORD="bench-password-$(openssl rand -hex 8)"
CREDS="{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}"
LOGIN=0
TOKEN=""
reg=$(curl -sk -o "$OUT/register.json" -w '%{http_code}' -H 'content-type: application/json' \
    -d "$CREDS" "https://127.0.0.1:$AG_PORT/auth/register" || true)
if [[ $reg == 2?? ]]; then
    login=$(curl -sk -o "$OUT/login.json" -w '%{http_code}' -H 'content-type: application/json' \
        -d "$CREDS" "https://127.0.0.1:$AG_PORT/auth/login" || true)
    if [[ $login == 2?? ]]; then
        TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("accessToken",""))' "$OUT/login.json" 2>/dev/null || true)
    fi
    say "POST /auth/register -> $reg, POST /auth/login -> ${login:-not tried}"
else
    say "POST /auth/register -> $reg"
fi
if [[ -n $TOKEN ]]; then
    LOGIN=1
    say "token: from POST /auth/login (accessToken)"
else
    say "login endpoint not available; token from: authgate --config CFG token --sub bench-user --role bench"
    TOKEN=$(cd "$AG" && AUTHGATE_ACCESS_SECRET=$SECRET AUTHGATE_LOG=error "$BIN" --config "$AG/authgate.toml" token --sub bench-user --role bench)
fi
# A well-formed token with the right claims, signed with another key.
FORGED=$(cd "$AG" && AUTHGATE_ACCESS_SECRET=$(openssl rand -base64 48) AUTHGATE_LOG=error \
    "$BIN" --config "$AG/authgate.toml" token --sub bench-user --role bench)
AUTH="Authorization: Bearer $TOKEN"

check() { # url expected-status [curl args]
    local url=$1 want=$2 got
    shift 2
    got=$(curl -sk -o /dev/null -w '%{http_code}' "$@" "$url" || true)
    [[ $got == "$want" ]] || die "$url answered $got, expected $want"
}
check "https://127.0.0.1:$AG_PORT/" 200 -H "$AUTH"
check "https://127.0.0.1:$AG_PORT/" 401 -H "Authorization: Bearer $FORGED"
check "https://127.0.0.1:$AG_PORT/" 401
check "https://127.0.0.1:$NGINX_PORT/" 200 -H "$AUTH"
check "http://127.0.0.1:$UP_PORT/1m.bin" 200
say "valid token -> 200, forged token -> 401, no token -> 401 through authgate; nginx front -> 200"

section "negotiated TLS"
for front in nginx:$NGINX_PORT authgate:$AG_PORT; do
    for alpn in http/1.1 h2; do
        info=$(openssl s_client -connect "127.0.0.1:${front#*:}" -servername localhost -alpn "$alpn" </dev/null 2>/dev/null \
            | grep -E '^(New,|Server Temp Key|ALPN protocol)' | tr '\n' ';' | sed 's/;$//')
        say "${front%%:*} (ALPN $alpn): $info"
    done
done

section "idle memory"
AG_IDLE=$(rss_kib "$AG_PID")
NG_IDLE=$(nginx_rss_kib "$NG")
say "authgate idle VmRSS after start and a few requests: $(mib "$AG_IDLE"); nginx front (master + worker): $(mib "$NG_IDLE")"
mem_row "idle RSS at start (target ≤ 15 MiB)" "$(mib "$AG_FRESH")" "-" "before any authenticated request"
mem_row "idle RSS after the token step" "$(mib "$AG_IDLE")" "$(mib "$NG_IDLE")" \
    "$( ((LOGIN)) && echo 'after one register + login (argon2)' || echo 'token from the CLI')"

# ---------------------------------------------------------------- streaming peak
if [[ $SKIP_MEMORY != 1 ]]; then
section "streaming memory (VmHWM)"
stream_peak() { # port pids path -> sets PEAK (KiB, summed VmHWM) and RATE
    local port=$1 pids=$2 path=$3 pid rate
    for pid in $pids; do echo 5 >"/proc/$pid/clear_refs"; done # reset VmHWM to current RSS
    show_cmd taskset -c "$LOAD_CPUS" curl -sk --http1.1 -H "$AUTH" -o /dev/null -w '%{speed_download}' "https://127.0.0.1:$port$path"
    rate=$(taskset -c "$LOAD_CPUS" curl -sk --http1.1 -H "$AUTH" -o /dev/null -w '%{speed_download}' "https://127.0.0.1:$port$path")
    PEAK=0
    for pid in $pids; do PEAK=$((PEAK + $(hwm_kib "$pid"))); done
    RATE=$(awk -v r="$rate" 'BEGIN {printf "%.0f MiB/s", r/1048576}')
}
stream_peak "$AG_PORT" "$AG_PID" /1m.bin
AG_PEAK_1M=$PEAK
stream_peak "$AG_PORT" "$AG_PID" /1g.bin
AG_PEAK_1G=$PEAK AG_RATE_1G=$RATE
stream_peak "$NGINX_PORT" "$(nginx_pids "$NG")" /1g.bin
NG_PEAK_1G=$PEAK NG_RATE_1G=$RATE
say "authgate peak VmHWM: 1 MiB body $(mib "$AG_PEAK_1M"), 1 GiB body $(mib "$AG_PEAK_1G") ($AG_RATE_1G); nginx front (master + worker) 1 GiB: $(mib "$NG_PEAK_1G") ($NG_RATE_1G)"
mem_row "peak RSS streaming 1 MiB (VmHWM)" "$(mib "$AG_PEAK_1M")" "-" "HWM reset before each download"
mem_row "peak RSS streaming 1 GiB (VmHWM)" "$(mib "$AG_PEAK_1G") ($AG_RATE_1G)" "$(mib "$NG_PEAK_1G") ($NG_RATE_1G)" \
    "curl -k --http1.1 -o /dev/null; target: independent of body size"
fi

# ---------------------------------------------------------------- load scenarios
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
url_for() { # front scenario
    local path=/
    [[ $2 == body1m ]] && path=/1m.bin
    [[ $2 == two ]] && path=/two/
    case $1 in
        direct) [[ $2 == h2 ]] && echo "http://127.0.0.1:$UP_H2C_PORT$path" || echo "http://127.0.0.1:$UP_PORT$path" ;;
        nginx) echo "https://127.0.0.1:$NGINX_PORT$path" ;;
        authgate) echo "https://127.0.0.1:$AG_PORT$path" ;;
    esac
}

run_one() { # scenario front round
    local scenario=$1 front=$2 round=$3 url raw log cmd before after up_before up_after up_conns parsed
    local m_before m_after load_before load_after sys_before sys_after
    url=$(url_for "$front" "$scenario")
    raw=$OUT/raw/$scenario.$front.r$round.txt
    log=$TMP/h2load.log
    case $scenario in
        h1 | two) cmd=(wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" --latency -H "$AUTH" "$url") ;;
        h2) cmd=(h2load -t2 -c64 -m10 -D "$DURATION" --log-file="$log" -H "$AUTH" "$url") ;;
        newconn) cmd=(wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" --latency -H "Connection: close" -H "$AUTH" "$url") ;;
        body1m) cmd=(wrk -t"$WRK_THREADS" -c16 -d"${DURATION}s" --latency -H "$AUTH" "$url") ;;
        badtoken) cmd=(wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer $FORGED" "$url") ;;
        c8) cmd=(wrk -t1 -c8 -d"${DURATION}s" --latency -H "$AUTH" "$url") ;;
        rate8) cmd=(h2load --h1 -t1 -c8 --rps="$RPS_PER_CONN" -D "$DURATION" --log-file="$log" -H "$AUTH" "$url") ;;
        rate1) cmd=(h2load --h1 -t1 -c1 --rps="$((RPS_PER_CONN * 8))" -D "$DURATION" --log-file="$log" -H "$AUTH" "$url") ;;
    esac
    show_cmd taskset -c "$LOAD_CPUS" "${cmd[@]}"
    rm -f "$log"
    # shellcheck disable=SC2046
    before=$(cpu_ticks $(front_pids "$front"))
    # shellcheck disable=SC2046
    sys_before=$(sys_ticks $(front_pids "$front"))
    # shellcheck disable=SC2046
    up_before=$(cpu_ticks $(nginx_pids "$UP"))
    m_before=$(machine_ticks)
    child_ticks >"$TMP/load_before"
    # Connections this front holds open to the upstream, sampled halfway
    # through the run: at its end, requests cut short by the load generator
    # take their connections with them.
    (sleep "$(python3 -c "print($DURATION / 2)")"
        ss -Htnp state established "( dport = :$UP_PORT or dport = :$UP_PORT2 )" \
            | grep -cE "pid=($(front_pids "$front" | xargs | tr ' ' '|'))," >"$TMP/up_conns" || true) &
    local sampler=$!
    taskset -c "$LOAD_CPUS" "${cmd[@]}" >"$raw" 2>&1 || say "warning: ${cmd[0]} exited non-zero ($raw)"
    wait "$sampler" || true
    # shellcheck disable=SC2046
    child_ticks >"$TMP/load_after"
    load_before=$(cat "$TMP/load_before") load_after=$(cat "$TMP/load_after")
    m_after=$(machine_ticks)
    after=$(cpu_ticks $(front_pids "$front"))
    # shellcheck disable=SC2046
    sys_after=$(sys_ticks $(front_pids "$front"))
    # shellcheck disable=SC2046
    up_after=$(cpu_ticks $(nginx_pids "$UP"))
    up_conns=$(cat "$TMP/up_conns" 2>/dev/null || echo 0)
    if [[ ${cmd[0]} == h2load ]]; then
        parsed=$(python3 "$BENCH/report.py" h2load "$raw" "$log")
    else
        parsed=$(python3 "$BENCH/report.py" wrk "$raw")
    fi
    python3 -c '
import json, sys
row = json.loads(sys.argv[1])
row.update(scenario=sys.argv[2], front=sys.argv[3], round=int(sys.argv[4]),
           cpu_s=(int(sys.argv[6]) - int(sys.argv[5])) / int(sys.argv[7]), duration=float(sys.argv[8]),
           up_cpu_s=(int(sys.argv[10]) - int(sys.argv[9])) / int(sys.argv[7]), up_conns=int(sys.argv[11]))
hz = int(sys.argv[7])
busy0, total0 = map(int, sys.argv[12].split())
busy1, total1 = map(int, sys.argv[13].split())
row["load_cpu_s"] = (int(sys.argv[15]) - int(sys.argv[14])) / hz
row["sys_cpu_s"] = (int(sys.argv[17]) - int(sys.argv[16])) / hz
ours = row["cpu_s"] + row["load_cpu_s"] + (0 if row["front"] == "direct" else row["up_cpu_s"])
# CPU that neither the front, the upstream nor the load generator used: other
# processes on the machine. High values mean the run was disturbed.
row["foreign_cpu_pct"] = max(0.0, ((busy1 - busy0) / hz - ours) / row["duration"] * 100)
row["machine_busy_pct"] = (busy1 - busy0) / max(1, total1 - total0) * 100
print(json.dumps(row))' "$parsed" "$scenario" "$front" "$round" "$before" "$after" "$CLK_TCK" "$DURATION" \
        "$up_before" "$up_after" "$up_conns" "$m_before" "$m_after" "$load_before" "$load_after" \
        "$sys_before" "$sys_after" >>"$RESULTS"
    python3 "$BENCH/report.py" line "$(tail -1 "$RESULTS")" "$scenario" "$front" "$round"
    rm -f "$log"
    sleep 1
}

section "load scenarios"
say "each: ${DURATION}s, $ROUNDS round(s), fronts alternated (order rotates every round)"
for scenario in $SCENARIOS; do
    [[ $scenario == store ]] && continue # its own section below
    say "-- $scenario"
    fronts=(direct nginx authgate)
    [[ $scenario == badtoken ]] && fronts=(authgate)
    [[ $scenario == two ]] && fronts=(nginx authgate) # direct has one target only
    for round in $(seq "$ROUNDS"); do
        n=${#fronts[@]}
        for i in $(seq 0 $((n - 1))); do
            run_one "$scenario" "${fronts[$(((i + round - 1) % n))]}" "$round"
        done
    done
done

# Idle means idle: both fronts get the same 15 s without requests first
# (authgate gives memory back on its 10 s maintenance tick).
sleep 15
AG_AFTER=$(rss_kib "$AG_PID")
mem_row "idle RSS 15 s after the load scenarios" "$(mib "$AG_AFTER")" "$(mib "$(nginx_rss_kib "$NG")")" ""

# ---------------------------------------------------------------- idle connections
if [[ $SKIP_MEMORY != 1 ]]; then
section "idle keep-alive TLS connections"
hold() { # name port pids -> sets HOLD_BEFORE, HOLD_AFTER (KiB) and HOLD_OPEN
    local name=$1 port=$2 pids=$3 pid line ready=""
    HOLD_BEFORE=0 HOLD_AFTER=0 HOLD_OPEN=0
    for pid in $pids; do HOLD_BEFORE=$((HOLD_BEFORE + $(rss_kib "$pid"))); done
    show_cmd taskset -c "$LOAD_CPUS" python3 "$BENCH/hold_conns.py" 127.0.0.1 "$port" "$IDLE_CONNS" / "$TOKEN"
    local started=$SECONDS
    coproc HOLDER { exec taskset -c "$LOAD_CPUS" python3 "$BENCH/hold_conns.py" 127.0.0.1 "$port" "$IDLE_CONNS" / "$TOKEN" 2>>"$OUT/holder.$name.log"; }
    while read -r -t 600 line <&"${HOLDER[0]}"; do
        [[ $line == READY* ]] && { ready=$line; break; }
    done
    [[ -n $ready ]] || die "connection holder for $name did not get ready; see $OUT/holder.$name.log"
    sleep 2
    for pid in $pids; do HOLD_AFTER=$((HOLD_AFTER + $(rss_kib "$pid"))); done
    echo CHECK >&"${HOLDER[1]}"
    read -r -t 60 line <&"${HOLDER[0]}" || line="OPEN 0"
    HOLD_OPEN=${line#OPEN }
    eval "exec ${HOLDER[1]}>&-"
    wait "$HOLDER_PID" 2>/dev/null || true
    HOLDER_PID=""
    ready=${ready#READY }
    say "$name: opened ${ready% *}, failed ${ready#* } in $((SECONDS - started)) s; still open after the RSS reading: $HOLD_OPEN"
}
hold authgate "$AG_PORT" "$AG_PID"
AG_B=$HOLD_BEFORE AG_A=$HOLD_AFTER AG_OPEN=$HOLD_OPEN
sleep 2
hold nginx "$NGINX_PORT" "$(nginx_pids "$NG")"
NG_B=$HOLD_BEFORE NG_A=$HOLD_AFTER NG_OPEN=$HOLD_OPEN
per_conn() { awk -v b="$1" -v a="$2" -v n="$3" 'BEGIN { if (n > 0) printf "%.1f KiB", (a - b) / n; else printf "-" }'; }
say "authgate: $(mib "$AG_B") -> $(mib "$AG_A") with $AG_OPEN open = $(per_conn "$AG_B" "$AG_A" "$AG_OPEN")/conn"
say "nginx:    $(mib "$NG_B") -> $(mib "$NG_A") with $NG_OPEN open = $(per_conn "$NG_B" "$NG_A" "$NG_OPEN")/conn"
mem_row "RSS with $IDLE_CONNS idle keep-alive TLS conns" "$(mib "$AG_A") ($AG_OPEN open)" "$(mib "$NG_A") ($NG_OPEN open)" \
    "one GET each, then idle (bench/hold_conns.py)"
mem_row "per idle connection (target ≤ 50 KiB)" "$(per_conn "$AG_B" "$AG_A" "$AG_OPEN")" "$(per_conn "$NG_B" "$NG_A" "$NG_OPEN")" \
    "(RSS with − RSS before) / open"

# ---------------------------------------------------------------- login flood
section "login flood"
if ((LOGIN)); then
    proxied=(wrk -t1 -c8 -d"${DURATION}s" --latency -H "$AUTH" "https://127.0.0.1:$AG_PORT/")
    flood=(wrk -t1 -c"$LOGIN_CONNS" -d"$((DURATION + 2))s" --latency -s "$BENCH/login.lua" "https://127.0.0.1:$AG_PORT/auth/login")
    # Twice as many accounts as connections, so no account has several
    # logins in flight (authgate counts those against its failure limit).
    EMAILS=""
    for i in $(seq $((LOGIN_CONNS * 2))); do
        email="bench-$STAMP-$i@example.com"
        code=$(curl -sk -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
            -d "{\"email\":\"$email\",\"password\":\"$PASSWORD\"}" "https://127.0.0.1:$AG_PORT/auth/register" || true)
        [[ $code == 2?? ]] || die "registering login-flood account $i answered $code"
        EMAILS+="${EMAILS:+ }$email"
    done
    say "registered $((LOGIN_CONNS * 2)) accounts for the flood"
    show_cmd taskset -c "$LOAD_CPUS" "${proxied[@]}"
    show_cmd BENCH_LOGIN_EMAILS=... BENCH_LOGIN_PASSWORD=... taskset -c "$LOAD_CPUS" "${flood[@]}"
    taskset -c "$LOAD_CPUS" "${proxied[@]}" >"$OUT/raw/login.baseline.txt" 2>&1 || true
    sleep 1
    BENCH_LOGIN_EMAILS=$EMAILS BENCH_LOGIN_PASSWORD=$PASSWORD \
        taskset -c "$LOAD_CPUS" "${flood[@]}" >"$OUT/raw/login.flood.txt" 2>&1 &
    FLOOD_PID=$!
    PIDS+=("$FLOOD_PID")
    sleep 1
    taskset -c "$LOAD_CPUS" "${proxied[@]}" >"$OUT/raw/login.during.txt" 2>&1 || true
    wait "$FLOOD_PID" || true
    read -r BASE_P99 DURING_P99 LOGIN_OK_RPS LOGIN_STATUSES < <(python3 -c '
import re, sys
sys.path.insert(0, sys.argv[1])
import report
b, d = (report.parse_wrk(p) for p in sys.argv[2:4])
text = open(sys.argv[4]).read()
statuses = dict(re.findall(r"^status (\d+): (\d+)$", text, re.M))
ok = sum(int(n) for s, n in statuses.items() if s.startswith("2"))
secs = float(re.search(r"requests in ([\d.]+)s", text).group(1))
base, during = b["p99_ms"], d["p99_ms"]
codes = ",".join(s + ":" + n for s, n in sorted(statuses.items())) or "none"
print(f"{base:.2f} {during:.2f} {ok / secs:.1f} {codes}")' \
        "$BENCH" "$OUT/raw/login.baseline.txt" "$OUT/raw/login.during.txt" "$OUT/raw/login.flood.txt")
    RATIO=$(awk -v a="$DURING_P99" -v b="$BASE_P99" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }')
    say "login: $LOGIN_OK_RPS successful logins/s (statuses $LOGIN_STATUSES); proxied p99 $BASE_P99 ms alone, $DURING_P99 ms during the flood ($RATIO)"
    mem_row "successful logins/s (argon2), $LOGIN_CONNS conns" "$LOGIN_OK_RPS (statuses $LOGIN_STATUSES)" "-" "$((LOGIN_CONNS * 2)) accounts, cycled"
    mem_row "proxied p99 during login flood (target < 2×)" "$DURING_P99 ms vs $BASE_P99 ms alone = $RATIO" "-" "wrk -t1 -c8, same command just before"
else
    say "login endpoint not available"
    mem_row "login throughput" "login endpoint not available" "-" ""
    mem_row "proxied p99 during login flood" "login endpoint not available" "-" ""
fi
fi # SKIP_MEMORY

# ---------------------------------------------------------------- store backends
if [[ " $SCENARIOS " == *" store "* ]]; then
    if ((LOGIN)); then
        # shellcheck source=bench/store.sh
        source "$BENCH/store.sh"
    else
        say "store scenario skipped: login endpoint not available"
    fi
fi

# ---------------------------------------------------------------- token algorithms
# The same gateway, config and upstream, once with the HS256 secret (the
# authgate above) and once with an asymmetric key from keys_dir: the verified-
# token cache should make the signature algorithm invisible in throughput.
# Both get a CLI-minted token (no session), so the revocation work is equal.
if [[ -n $COMPARE_ALG ]]; then
section "token algorithm: $COMPARE_ALG against HS256"
ALG=$TMP/authgate-$COMPARE_ALG
mkdir -p "$ALG"
sed -e "s|^listen = .*|listen = \"127.0.0.1:$ALG_PORT\"|" \
    -e "s|^path = .*|path = \"$ALG/store.sled\"|" \
    -e "s|^\\[tokens\\]|[tokens]\nalgorithm = \"$COMPARE_ALG\"\nkeys_dir = \"$ALG/keys\"|" \
    "$AG/authgate.toml" >"$ALG/authgate.toml"
show_cmd "$BIN" --config "$ALG/authgate.toml" keys generate --algorithm "$COMPARE_ALG" --activate
(cd "$ALG" && AUTHGATE_LOG=error "$BIN" --config "$ALG/authgate.toml" keys generate --algorithm "$COMPARE_ALG" --activate >/dev/null)
(
    cd "$ALG"
    unset AUTHGATE_ACCESS_SECRET
    export AUTHGATE_LOG=warn
    exec setsid taskset -c "$FRONT_CPUS" "$BIN" --config "$ALG/authgate.toml" serve
) 2>"$OUT/authgate-$COMPARE_ALG.log" &
ALG_PID=$!
PIDS+=("$ALG_PID")
wait_listening "$ALG_PORT" "$ALG_PID" 100 "authgate ($COMPARE_ALG) exited; see $OUT/authgate-$COMPARE_ALG.log"
HS_TOKEN=$(cd "$AG" && AUTHGATE_ACCESS_SECRET=$SECRET AUTHGATE_LOG=error "$BIN" --config "$AG/authgate.toml" token --sub bench-user --role bench)
ALG_TOKEN=$(cd "$ALG" && AUTHGATE_LOG=error "$BIN" --config "$ALG/authgate.toml" token --sub bench-user --role bench)
check "https://127.0.0.1:$AG_PORT/" 200 -H "Authorization: Bearer $HS_TOKEN"
check "https://127.0.0.1:$ALG_PORT/" 200 -H "Authorization: Bearer $ALG_TOKEN"
check "https://127.0.0.1:$ALG_PORT/" 401 -H "Authorization: Bearer $HS_TOKEN"
say "HS256 on :$AG_PORT, $COMPARE_ALG on :$ALG_PORT (pid $ALG_PID, same config but [tokens] algorithm and keys_dir); each token -> 200 on its own gateway"
: >"$OUT/algorithms.txt"
for round in $(seq "$ROUNDS"); do
    # Alternate which goes first, so drift on a shared machine hits both.
    order=("HS256:$AG_PORT:$HS_TOKEN" "$COMPARE_ALG:$ALG_PORT:$ALG_TOKEN")
    ((round % 2 == 0)) && order=("${order[1]}" "${order[0]}")
    for entry in "${order[@]}"; do
        name=${entry%%:*} rest=${entry#*:}
        port=${rest%%:*} token=${rest#*:}
        raw=$OUT/raw/alg.$name.r$round.txt
        show_cmd taskset -c "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer \$${name}_TOKEN" "https://127.0.0.1:$port/"
        pid=$AG_PID
        [[ $name != HS256 ]] && pid=$ALG_PID
        before=$(cpu_ticks "$pid")
        taskset -c "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer $token" "https://127.0.0.1:$port/" >"$raw" 2>&1 \
            || say "warning: wrk exited non-zero ($raw)"
        after=$(cpu_ticks "$pid")
        # The gateway's own CPU per request: less disturbed by other
        # processes on a shared machine than the request rate.
        read -r rps non2xx cpu_us < <(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import report; r = report.parse_wrk(sys.argv[2]); n = r["requests"] or 1; print("%.0f %d %.1f" % (r["rps"] or 0, r["non2xx"], (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5]) * 1e6 / n))' "$BENCH" "$raw" "$before" "$after" "$CLK_TCK")
        say "round $round: $name $rps req/s, $cpu_us µs CPU/req (non-2xx $non2xx)"
        echo "$name $round $rps $cpu_us" >>"$OUT/algorithms.txt"
        sleep 1
    done
done
read -r HS_MEDIAN ALG_MEDIAN ALG_RATIO HS_CPU ALG_CPU CPU_RATIO < <(python3 -c '
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
med = lambda name, col: statistics.median(float(r[col]) for r in rows if r[0] == name)
hs, alg = med("HS256", 2), med(sys.argv[2], 2)
hs_cpu, alg_cpu = med("HS256", 3), med(sys.argv[2], 3)
print(f"{hs:.0f} {alg:.0f} {alg / hs if hs else 0:.3f} {hs_cpu:.1f} {alg_cpu:.1f} {alg_cpu / hs_cpu if hs_cpu else 0:.3f}")' "$OUT/algorithms.txt" "$COMPARE_ALG")
say "HTTP/1.1 keep-alive, 64 conns, median of $ROUNDS: HS256 $HS_MEDIAN req/s ($HS_CPU µs CPU/req), $COMPARE_ALG $ALG_MEDIAN req/s ($ALG_CPU µs CPU/req); $COMPARE_ALG/HS256 req/s = ${ALG_RATIO}× (target ≥ 0.95×), CPU per request = ${CPU_RATIO}×"
mem_row "$COMPARE_ALG/HS256 req/s, h1 64 conns (target ≥ 0.95×)" "${ALG_RATIO}× ($ALG_MEDIAN vs $HS_MEDIAN req/s)" "-" "median of $ROUNDS × ${DURATION}s, order alternated; verified-token cache"
mem_row "$COMPARE_ALG/HS256 gateway CPU per request" "${CPU_RATIO}× ($ALG_CPU vs $HS_CPU µs)" "-" "same runs; less disturbed by other processes than req/s"
kill "$ALG_PID" 2>/dev/null || true
fi

# ---------------------------------------------------------------- table
section "results"
python3 "$BENCH/report.py" table "$RESULTS" "$OUT/memory.jsonl" | tee "$OUT/results.md"
say ""
say "raw outputs, commands and logs: $OUT"
