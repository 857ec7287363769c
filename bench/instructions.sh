#!/usr/bin/env bash
# Instructions per proxied request, authgate against nginx, under valgrind's
# callgrind: a count that is the same for the same binary and input whatever
# else the machine does, so a change of a few percent shows where the
# throughput runs (bench/run.sh) cannot resolve it. User space only: the
# kernel's share (system calls, loopback TCP) is not counted.
#
#   bench/instructions.sh                  # HTTP/1.1, 4,000 requests
#   INSTR_PROTO=h2 bench/instructions.sh   # HTTP/2, 10 streams per connection
#   BENCH_BIN=path bench/instructions.sh   # another build, no cargo build
#
# Each front runs twice under callgrind, once serving 1,000 requests and
# once 1,000 + N; the difference divided by N is the cost of a request, free
# of start-up, TLS handshakes and shutdown. authgate starts both times from
# a copy of the same database, so sled's recovery costs the same.
#
# Valgrind's virtual CPU hides the SHA extensions: under it SHA-256 runs
# aws-lc's AVX code, about 13,000 instructions for the verified-token cache's
# digest of a login token, a few hundred natively. The report gives that
# function's share separately.
set -euo pipefail

N=${INSTR_REQUESTS:-4000}
PROTO=${INSTR_PROTO:-h1}
UP_PORT=${INSTR_UP_PORT:-29080}
NGINX_PORT=${INSTR_NGINX_PORT:-29443}
AG_PORT=${INSTR_AUTHGATE_PORT:-29444}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BENCH_BIN:-$ROOT/target/release/authgate}

die() { printf 'instructions: %s\n' "$*" >&2; exit 1; }
for tool in valgrind callgrind_annotate nginx h2load curl openssl python3; do
    command -v "$tool" >/dev/null || die "$tool missing (apt-get install -y valgrind nginx nghttp2-client curl openssl python3)"
done
if [[ -z ${BENCH_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --locked)
fi

T=$(mktemp -d /tmp/authgate-instructions.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -s $T/up/nginx.pid ]] && kill -QUIT "$(cat "$T/up/nginx.pid")" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/up" "$T/ng" "$T/ag"
cd "$T"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=ca" \
    -keyout ca-key.pem -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout leaf-key.pem -out leaf.csr 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile leaf.ext -out leaf.pem 2>/dev/null
cat leaf.pem ca.pem >chain.pem

USER_LINE=""
[[ $EUID -eq 0 ]] && USER_LINE="user root;"
temp_paths() { echo "client_body_temp_path $1/c; proxy_temp_path $1/p; fastcgi_temp_path $1/f; uwsgi_temp_path $1/u; scgi_temp_path $1/s;"; }
BODY=$(printf '%.100s' "$(printf 'authgate-bench-body-%02d.' {1..10})")
cat >up/nginx.conf <<EOF
$USER_LINE pid $T/up/nginx.pid; error_log $T/up/error.log warn;
events { worker_connections 4000; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s; $(temp_paths "$T/up")
  server { listen 127.0.0.1:$UP_PORT; location = / { default_type text/plain; return 200 "$BODY"; } } }
EOF
nginx -p "$T/up/" -c "$T/up/nginx.conf" -g "worker_processes 1;"
# The same front as bench/run.sh's nginx: TLS, upstream keep-alive, no auth.
cat >ng/nginx.conf <<EOF
$USER_LINE error_log $T/ng/error.log warn; pid $T/ng/nginx.pid;
events { worker_connections 4000; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s; $(temp_paths "$T/ng")
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 128; keepalive_requests 100000000; keepalive_timeout 300s; }
  server { listen 127.0.0.1:$NGINX_PORT ssl http2; ssl_certificate $T/chain.pem; ssl_certificate_key $T/leaf-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_max_temp_file_size 0; } } }
EOF
cat >ag/authgate.toml <<EOF
[server]
listen = "127.0.0.1:$AG_PORT"
tls_cert = "$T/chain.pem"
tls_key = "$T/leaf-key.pem"
dev = false
access_log = false
workers = 1

[tokens]
issuer = "authgate"
audience = "authgate"
access_ttl = "4h"

[store]
path = "$T/ag/store.sled"

[[route]]
name = "bench"
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
EOF
export AUTHGATE_ACCESS_SECRET=$(openssl rand -base64 48) AUTHGATE_LOG=warn

wait_port() {
    for _ in $(seq 600); do
        curl -sk -o /dev/null "https://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    die "nothing answered on port $1"
}

# A token from a real login, as bench/run.sh uses, on a run outside valgrind.
(cd ag && exec "$BIN" --config "$T/ag/authgate.toml" serve) 2>ag/first.log &
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
    h2load "${mode[@]}" -n "$2" -c 4 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$1/" >"$T/load.txt"
    grep -q "$2 succeeded" "$T/load.txt" || die "not every request succeeded: $(grep succeeded "$T/load.txt")"
}

run_once() { # name port requests command...
    local name=$1 port=$2 n=$3
    shift 3
    rm -rf "$T/ag/store.sled" && cp -a "$T/ag/store.pristine" "$T/ag/store.sled"
    valgrind --tool=callgrind --callgrind-out-file="$T/$name-$n.cg" "$@" 2>"$T/$name-$n.log" &
    local pid=$!
    wait_port "$port"
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
    run_once "$name" "$port" 1000 "$@"
    run_once "$name" "$port" $((1000 + N)) "$@"
    local a b sa sb
    a=$(total "$T/$name-1000.cg")
    b=$(total "$T/$name-$((1000 + N)).cg")
    sa=$(sha_share "$T/$name-1000.cg")
    sb=$(sha_share "$T/$name-$((1000 + N)).cg")
    printf '| %s | %d | %d | %d |\n' "$name" $(((b - a) / N)) $(((sb - sa) / N)) $(((b - a - sb + sa) / N))
}

printf '%s, %d requests measured (h2load -c 4%s), %s\n\n' "$PROTO" "$N" \
    "$([[ $PROTO == h2 ]] && echo ' -m 10')" "$("$BIN" --version 2>/dev/null || echo authgate)"
echo "| front | instructions per request | of which SHA-256 | without SHA-256 |"
echo "|---|---:|---:|---:|"
(cd ag && measure authgate "$AG_PORT" "$BIN" --config "$T/ag/authgate.toml" serve)
measure nginx "$NGINX_PORT" nginx -p "$T/ng/" -c "$T/ng/nginx.conf" \
    -g "daemon off; master_process off; worker_processes 1;"
