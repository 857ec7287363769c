# bench/lib.sh: the setup that bench/run.sh, bench/soak.sh and
# bench/instructions.sh share (bench/store.sh gets it through run.sh). It owns
# the paths ($ROOT, $BENCH, $BIN) and the release build; the tool and port
# checks; the output directory and its run.log; the temporary directory and
# the cleanup that stops every process a script started ($PIDS, $NGINX_DIRS);
# the test certificates (openssl); the nginx configuration pieces, the nginx
# TLS front and starting nginx; waiting for a gateway to answer; the
# upstream's 100-byte body; reading a process's RSS. Settings, scenarios and
# reports stay in the scripts. Sourced, not run, as the first thing after a
# script's settings:
#
#   # shellcheck source=bench/lib.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" NAME   # NAME prefixes die's messages
# shellcheck shell=bash

PROG=${1:?source bench/lib.sh with the name of the script}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# Another build (an older commit, for a before/after comparison): BENCH_BIN=path, no build.
BIN=${BENCH_BIN:-$ROOT/target/release/authgate}
PIDS=()       # processes the script started; cleanup stops them
NGINX_DIRS=() # nginx prefixes cleanup stops with QUIT
NGINX_USER="" # nginx.conf's user line
if [[ $EUID -eq 0 ]]; then
    NGINX_USER="user root;" # workers must read files in our 0700 temp dir
fi
# shellcheck disable=SC2034 # used by run.sh and instructions.sh
BODY=$(printf '%.100s' "$(printf 'authgate-bench-body-%02d.' {1..10})") # the upstream's answer: exactly 100 bytes

say() { printf '%s\n' "$*"; }
die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools, ports, build
install_tools() { # tool:package... -> installs the packages of missing tools (root, apt-get), else dies naming them
    local entry missing=()
    for entry in "$@"; do
        command -v "${entry%%:*}" >/dev/null || missing+=("${entry#*:}")
    done
    if ((${#missing[@]})); then
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
            say "installing: ${missing[*]}"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            die "missing tools: ${missing[*]} (Debian: sudo apt-get install -y ${missing[*]})"
        fi
    fi
}

require_tools() { # message-format tool... -> dies with the format (printf, %s = the tool) at the first missing tool
    local format=$1 tool
    shift
    for tool in "$@"; do
        # shellcheck disable=SC2059 # the format is the caller's message
        command -v "$tool" >/dev/null || die "$(printf "$format" "$tool")"
    done
}

check_ports() { # hint port... -> dies at the first port something listens on, with the hint
    local hint=$1 port
    shift
    for port in "$@"; do
        if ss -Hltn "( sport = :$port )" | grep -q .; then
            die "port $port is in use; $hint"
        fi
    done
}

build_release() { # skip cargo-args... -> cargo build --release in $ROOT, unless skip is 1 or BENCH_BIN is set
    local skip=$1
    shift
    [[ -n ${BENCH_BIN:-} ]] && skip=1
    if [[ $skip != 1 ]]; then
        (cd "$ROOT" && cargo build --release "$@")
    fi
}

require_bin() { [[ -x $BIN ]] || die "no release binary at $BIN"; }

# ---------------------------------------------------------------- output, temporary directory, cleanup
open_out() { # prefix -> STAMP, OUT=bench/out/<prefix><STAMP>; stdout and stderr from now on also in $OUT/run.log
    STAMP=$(date -u +%Y%m%dT%H%M%SZ)
    OUT=$BENCH/out/$1$STAMP
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/run.log") 2>&1
}

make_tmp() { TMP=$(mktemp -d "/tmp/authgate-$1.XXXXXX"); } # name -> TMP

# The scripts' EXIT trap: before_cleanup (if the script defines it), stop
# $PIDS and the nginx of each $NGINX_DIRS, wait for $PIDS, after_cleanup (if
# defined), remove $TMP, exit with the script's status.
cleanup() {
    local status=$? pid dir
    set +e
    declare -F before_cleanup >/dev/null && before_cleanup
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for dir in "${NGINX_DIRS[@]}"; do
        [[ -s $dir/nginx.pid ]] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    declare -F after_cleanup >/dev/null && after_cleanup
    rm -rf "$TMP"
    exit "$status"
}

# ---------------------------------------------------------------- certificates
make_cert_chain() { # dir ca-subject -> dir/chain.pem (leaf + CA) and dir/leaf-key.pem
    # A fresh CA and a CA:FALSE leaf for localhost and 127.0.0.1, ECDSA P-256
    # (rustls clients refuse a CA:TRUE leaf).
    local dir=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "$2" -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout "$dir/leaf-key.pem" -out "$dir/leaf.csr" 2>/dev/null
    cat >"$dir/leaf.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EOF
    openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
        -CAcreateserial -days 2 -extfile "$dir/leaf.ext" -out "$dir/leaf.pem" 2>/dev/null
    cat "$dir/leaf.pem" "$dir/ca.pem" >"$dir/chain.pem"
}

make_self_signed_cert() { # dir -> dir/cert.pem (self-signed, ECDSA P-256, localhost and 127.0.0.1) and dir/key.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}

# ---------------------------------------------------------------- nginx
nginx_main() { # prefix-dir worker-connections [worker-rlimit-nofile] -> nginx.conf's main context
    say "$NGINX_USER"
    say "pid $1/nginx.pid;"
    say "error_log $1/error.log warn;"
    if [[ -n ${3:-} ]]; then
        say "worker_rlimit_nofile $3;"
    fi
    say "events { worker_connections $2; }"
}

nginx_temp_paths() { # prefix-dir
    cat <<EOF
    client_body_temp_path $1/client_temp;
    proxy_temp_path $1/proxy_temp;
    fastcgi_temp_path $1/fastcgi_temp;
    uwsgi_temp_path $1/uwsgi_temp;
    scgi_temp_path $1/scgi_temp;
EOF
}

# authgate's route "two" (bench/run.sh's scenario of that name): /two/ round
# robin over two upstream ports, the counterpart of nginx_front_http's /two/.
authgate_route_two() { # upstream-port second-upstream-port [max-upstream-connections]
    cat <<EOF

[[route]]
name = "two"
path_prefix = "/two/"
upstreams = ["http://127.0.0.1:$1", "http://127.0.0.1:$2"]
balance = "round_robin"
auth = "required"
${3:+max_upstream_connections = $3}
EOF
}

# The http block of the nginx front that authgate is compared with: TLS with
# $TMP/chain.pem, reverse proxy to the upstream with upstream keep-alive, no
# auth. With a second upstream port, /two/ goes round robin to both.
nginx_front_http() { # prefix-dir port listen-options upstream-port [second-upstream-port]
    local dir=$1 port=$2 listen=$3 up=$4 up2=${5:-} up2_block="" two_location=""
    if [[ -n $up2 ]]; then
        up2_block="
    upstream up2 {
        server 127.0.0.1:$up;
        server 127.0.0.1:$up2;
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }"
        two_location="
        location /two/ {
            proxy_pass http://up2;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_max_temp_file_size 0;
        }"
    fi
    cat <<EOF
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
$(nginx_temp_paths "$dir")
    upstream up {
        server 127.0.0.1:$up;
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }$up2_block
    server {
        listen 127.0.0.1:$port ssl http2${listen:+ $listen};
        ssl_certificate $TMP/chain.pem;
        ssl_certificate_key $TMP/leaf-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Buffer in memory, never spool large responses to disk.
            proxy_max_temp_file_size 0;
        }$two_location
    }
}
EOF
}

nginx_args() { # prefix-dir [workers] -> NGINX_ARGS: nginx's arguments for prefix-dir/nginx.conf (one worker unless given)
    NGINX_ARGS=(-e "$1/error.log" -p "$1/" -c "$1/nginx.conf" -g "worker_processes ${2:-1};")
}

# Starts the (daemonizing) nginx of prefix-dir/nginx.conf, pinned to cpus
# unless that is "", and leaves it to cleanup; dies with the message when it
# has written no pid file within 5 s.
start_nginx() { # prefix-dir cpus not-started-message [workers]
    local dir=$1 pin=()
    [[ -n $2 ]] && pin=(taskset -c "$2")
    nginx_args "$dir" "${4:-1}"
    "${pin[@]}" nginx "${NGINX_ARGS[@]}"
    NGINX_DIRS+=("$dir")
    for _ in $(seq 50); do [[ -s $dir/nginx.pid ]] && break; sleep 0.1; done
    [[ -s $dir/nginx.pid ]] || die "$3"
}

# ---------------------------------------------------------------- processes
# Polls https://127.0.0.1:port/ every 0.1 s, at most `tries` times, until
# anything answers. Dies with exited-message when pid (unless "") is gone
# first, and with timeout-message (when given) if nothing answered.
wait_listening() { # port pid tries exited-message [timeout-message]
    local port=$1 pid=$2 tries=$3 code=000
    for _ in $(seq "$tries"); do
        code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/" || true)
        [[ $code != 000 ]] && break
        [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || die "$4"
        sleep 0.1
    done
    [[ $code != 000 || -z ${5:-} ]] || die "$5"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; } # pid -> resident set size, KiB
