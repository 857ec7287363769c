#!/usr/bin/env bash
# Instructions per proxied request, authgate against nginx, under valgrind's
# callgrind: a count that is the same for the same binary and input whatever
# else the machine does, so a change of a few percent shows where the
# throughput runs (bench/run.sh) cannot resolve it. User space only: the
# kernel's share (system calls, loopback TCP) is not counted.
#
#   bench/instructions.sh                  # HTTP/1.1, 4,000 requests
#   INSTR_PROTO=h2 bench/instructions.sh   # HTTP/2, 10 streams per connection
#   INSTR_TARGETS=2 bench/instructions.sh  # through a route with two targets (round robin), as run.sh's "two"
#   BENCH_BIN=path bench/instructions.sh   # another build, no cargo build
#   INSTR_KEEP=dir bench/instructions.sh   # keep the callgrind profiles in dir
#   INSTR_CONNS=64 bench/instructions.sh   # client connections (default 4; run.sh's load uses 64)
#   INSTR_CALLGRIND_ARGS=--dump-instr=yes  # extra callgrind options (bench/atomics.py needs this one)
#   INSTR_CACHE=1 bench/instructions.sh    # also simulate caches and branches: misses per request
#   INSTR_PATH=/1m.bin INSTR_BASE=100 INSTR_REQUESTS=200 bench/instructions.sh
#                                          # 1 MiB answers (fewer requests: each costs ~2 s under valgrind)
#
# Each front runs twice under callgrind, once serving 1,000 requests and
# once 1,000 + N, counted only from the moment it answers (start-up is not
# counted at all); the difference divided by N is the cost of a request,
# free of TLS handshakes and shutdown. authgate starts both times from a
# copy of the same database.
#
# Valgrind's virtual CPU hides the SHA extensions: under it SHA-256 runs
# aws-lc's AVX code, about 13,000 instructions for the verified-token cache's
# digest of a login token, a few hundred natively. The report gives that
# function's share separately.
set -euo pipefail

N=${INSTR_REQUESTS:-4000}
BASE=${INSTR_BASE:-1000} # requests in the profile that is subtracted
PROTO=${INSTR_PROTO:-h1}
UP_PORT=${INSTR_UP_PORT:-29080}
UP_PORT2=${INSTR_UP_PORT2:-29081} # the second target with INSTR_TARGETS=2
TARGETS=${INSTR_TARGETS:-1}
CONNS=${INSTR_CONNS:-4}
CACHE_ARGS=""
[[ ${INSTR_CACHE:-0} == 1 ]] && CACHE_ARGS="--cache-sim=yes --branch-sim=yes"
SECOND=""       # the second target's port, only with INSTR_TARGETS=2
LOAD_PATH=${INSTR_PATH:-/}
if [[ $TARGETS == 2 ]]; then
    SECOND=$UP_PORT2
    LOAD_PATH=/two/
fi
NGINX_PORT=${INSTR_NGINX_PORT:-29443}
AG_PORT=${INSTR_AUTHGATE_PORT:-29444}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" instructions

require_tools '%s missing (apt-get install -y valgrind nginx nghttp2-client curl openssl python3)' \
    valgrind callgrind_annotate nginx h2load curl openssl python3
build_release 0 --locked

make_tmp instructions
trap cleanup EXIT
mkdir -p "$TMP/up" "$TMP/ng" "$TMP/ag"
head -c $((1024 * 1024)) /dev/zero | tr '\0' a >"$TMP/up/1m.bin"
cd "$TMP"

make_cert_chain "$TMP" "/CN=ca"

{
    nginx_main "$TMP/up" 4000
    cat <<EOF
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
$(nginx_temp_paths "$TMP/up")
  server { listen 127.0.0.1:$UP_PORT; listen 127.0.0.1:$UP_PORT2;
    location = / { default_type text/plain; return 200 "$BODY"; }
    location = /two/ { default_type text/plain; return 200 "$BODY"; }
    location = /1m.bin { root $TMP/up; } } }
EOF
} >up/nginx.conf
start_nginx "$TMP/up" "" "upstream nginx did not start"
# The same front as bench/run.sh's nginx (lib.sh's): TLS, upstream keep-alive, no auth.
{
    nginx_main "$TMP/ng" 4000
    nginx_front_http "$TMP/ng" "$NGINX_PORT" "" "$UP_PORT" "$SECOND"
} >ng/nginx.conf
cat >ag/authgate.toml <<EOF
[server]
listen = "127.0.0.1:$AG_PORT"
tls_cert = "$TMP/chain.pem"
tls_key = "$TMP/leaf-key.pem"
dev = false
access_log = false
workers = 1

[tokens]
issuer = "authgate"
audience = "authgate"
access_ttl = "4h"

[store]
path = "$TMP/ag/store.sled"

[[route]]
name = "bench"
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
EOF
if [[ -n $SECOND ]]; then
    authgate_route_two "$UP_PORT" "$SECOND" >>ag/authgate.toml
fi
export AUTHGATE_ACCESS_SECRET=$(openssl rand -base64 48) AUTHGATE_LOG=warn

wait_port() { wait_listening "$1" "" 600 "" "nothing answered on port $1"; }

# A token from a real login, as bench/run.sh uses, on a run outside valgrind.
(cd ag && exec "$BIN" --config "$TMP/ag/authgate.toml" serve) 2>ag/first.log &
PIDS+=($!)
wait_port "$AG_PORT"
CREDS='{"email":"instructions@example.com","password":"instructions-password-1"}'
curl -sk -o /dev/null -H 'content-type: application/json' -d "$CREDS" "https://127.0.0.1:$AG_PORT/auth/register"
TOKEN=$(curl -sk -H 'content-type: application/json' -d "$CREDS" "https://127.0.0.1:$AG_PORT/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
kill -TERM "${PIDS[-1]}"
wait "${PIDS[-1]}" || true
cp -a ag/store.sled ag/store.pristine

load() { # port requests
    local mode=(--h1)
    [[ $PROTO == h2 ]] && mode=(-m 10)
    h2load "${mode[@]}" -n "$2" -c "$CONNS" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$1$LOAD_PATH" >"$TMP/load.txt"
    grep -q "$2 succeeded" "$TMP/load.txt" || die "not every request succeeded: $(grep succeeded "$TMP/load.txt")"
}

run_once() { # name port requests command...
    local name=$1 port=$2 n=$3
    shift 3
    rm -rf "$TMP/ag/store.sled" && cp -a "$TMP/ag/store.pristine" "$TMP/ag/store.sled"
    # shellcheck disable=SC2086 # extra options are words
    valgrind --tool=callgrind --instr-atstart=no $CACHE_ARGS ${INSTR_CALLGRIND_ARGS:-} --callgrind-out-file="$TMP/$name-$n.cg" "$@" 2>"$TMP/$name-$n.log" &
    local pid=$!
    wait_port "$port"
    # Counted from here: start-up is left out (sled's start-up threads spin
    # on a lazily built global under valgrind for a varying ~100 million
    # instructions, which once swung a run's result by half).
    callgrind_control -i on "$pid" >/dev/null 2>&1
    load "$port" "$n"
    kill -TERM "$pid"
    wait "$pid" || true
}

total() { awk '/^summary:/ {s += $2} END {print s}' "$1"; }
sha_share() { # instructions in SHA-256 block functions
    callgrind_annotate --inclusive=no --threshold=100 --auto=no "$1" 2>/dev/null |
        awk '/sha256_block|sha256::compress/ {gsub(",", "", $1); s += $1} END {print s + 0}'
}

measure() { # name port command...
    local name=$1 port=$2
    shift 2
    run_once "$name" "$port" "$BASE" "$@"
    run_once "$name" "$port" $((BASE + N)) "$@"
    local a b sa sb
    a=$(total "$TMP/$name-$BASE.cg")
    b=$(total "$TMP/$name-$((BASE + N)).cg")
    sa=$(sha_share "$TMP/$name-$BASE.cg")
    sb=$(sha_share "$TMP/$name-$((BASE + N)).cg")
    printf '| %s | %d | %d | %d |\n' "$name" $(((b - a) / N)) $(((sb - sa) / N)) $(((b - a - sb + sa) / N))
}

printf '%s, %d requests measured (h2load -c %d%s) on %s, %s\n\n' "$PROTO" "$N" "$CONNS" \
    "$([[ $PROTO == h2 ]] && echo ' -m 10')" "$LOAD_PATH ($TARGETS target(s))" "$("$BIN" --version 2>/dev/null || echo authgate)"
echo "| front | instructions per request | of which SHA-256 | without SHA-256 |"
echo "|---|---:|---:|---:|"
(cd ag && measure authgate "$AG_PORT" "$BIN" --config "$TMP/ag/authgate.toml" serve)
measure nginx "$NGINX_PORT" nginx -p "$TMP/ng/" -c "$TMP/ng/nginx.conf" \
    -g "daemon off; master_process off; worker_processes 1;"
if [[ -n $CACHE_ARGS ]]; then
    # Valgrind's model: first-level caches of 32 KiB each, no prefetching,
    # no kernel code between requests. A direction, not the machine's count.
    echo
    echo "Simulated per request (callgrind's model of this host's caches):"
    python3 - "$TMP" "$N" "$BASE" <<'PY'
import sys
tmp, n, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def summary(path):
    events = totals = None
    for line in open(path):
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("summary:"):
            totals = [int(x) for x in line.split()[1:]]
    return dict(zip(events, totals))
shown = [("I1mr", "instruction-cache misses"), ("D1mr", "data-cache read misses"),
         ("D1mw", "data-cache write misses"), ("Dw", "data writes"), ("Bcm", "mispredicted branches"),
         ("Bim", "mispredicted indirect jumps")]
print("| front | " + " | ".join(label for _, label in shown) + " |")
print("|---|" + "---:|" * len(shown))
for front in ("authgate", "nginx"):
    a, b = summary(f"{tmp}/{front}-{base}.cg"), summary(f"{tmp}/{front}-{base + n}.cg")
    print(f"| {front} | " + " | ".join(f"{(b[e] - a[e]) / n:,.0f}" for e, _ in shown) + " |")
PY
fi
if [[ -n ${INSTR_KEEP:-} ]]; then
    mkdir -p "$INSTR_KEEP"
    cp "$TMP"/*.cg "$INSTR_KEEP"/
    say "profiles kept in $INSTR_KEEP (callgrind_annotate; per request: the $BASE + N profile less the $BASE one)"
fi
