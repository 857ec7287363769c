#!/usr/bin/env bash
# The soak: account churn (bench/churn.py) plus proxied load (wrk) against
# one authgate for SOAK_MINUTES, sampling its RSS, open descriptors and
# threads every SOAK_SAMPLE seconds. Passes when RSS stays under 100 MiB, is
# flat over the last 10 minutes (or the last third of a shorter run), and
# the open descriptors come back to the idle count once the load stops.
# See bench/README.md. Quick check: SOAK_MINUTES=2 bench/soak.sh
set -euo pipefail

MINUTES=${SOAK_MINUTES:-30}
SAMPLE=${SOAK_SAMPLE:-10}               # seconds between samples
CHURN_THREADS=${SOAK_CHURN_THREADS:-4}  # concurrent account lives
WRK_CONNS=${SOAK_WRK_CONNS:-16}         # proxied keep-alive connections
RSS_LIMIT_MIB=${SOAK_RSS_LIMIT_MIB:-100}
# Flat: the last window's RSS may not grow by more than this.
FLAT_MIB=${SOAK_FLAT_MIB:-5}
UP_PORT=${SOAK_UP_PORT:-19080}
AG_PORT=${SOAK_AUTHGATE_PORT:-19444}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" soak
open_out soak-

make_tmp soak
before_cleanup() { touch "$TMP/stop"; } # lib.sh's cleanup: churn.py stops at this file
trap cleanup EXIT
trap 'exit 130' INT TERM

require_tools 'missing %s (Debian: apt-get install nginx wrk curl openssl python3)' nginx wrk curl openssl python3
check_ports "set SOAK_UP_PORT / SOAK_AUTHGATE_PORT" "$UP_PORT" "$AG_PORT"
build_release "$SKIP_BUILD" --locked
require_bin

say "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
say "authgate: $("$BIN" --version) at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "soak:     ${MINUTES} min, churn threads $CHURN_THREADS, wrk connections $WRK_CONNS, sample every ${SAMPLE}s"
say "machine:  $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- certificate
make_self_signed_cert "$TMP"

# ---------------------------------------------------------------- upstream
mkdir -p "$TMP/up"
{
    nginx_main "$TMP/up" 4096
    cat <<EOF
http {
    access_log off;
    keepalive_requests 100000000;
$(nginx_temp_paths "$TMP/up")
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { default_type text/plain; return 200 "soak upstream body"; }
    }
}
EOF
} >"$TMP/up/nginx.conf"
start_nginx "$TMP/up" "" "upstream nginx did not start"

# ---------------------------------------------------------------- authgate
AG=$TMP/authgate
mkdir -p "$AG"
cat >"$AG/authgate.toml" <<EOF
[server]
listen = "127.0.0.1:$AG_PORT"
tls_cert = "$TMP/cert.pem"
tls_key = "$TMP/key.pem"
dev = false
access_log = false
# churn.py gives each account its own client address.
trusted_proxies = ["127.0.0.1/32"]

[tokens]
issuer = "authgate"
audience = "authgate"
access_ttl = "4h"

[store]
path = "$AG/store.sled"

[auth]
registration = "open"

[[route]]
name = "soak"
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
EOF
SECRET=$(openssl rand -base64 48)
ADMIN_EMAIL=soak-admin@example.com
ADMIN_PASSWORD="soak admin $(openssl rand -hex 8)"
(cd "$AG" && AUTHGATE_ACCESS_SECRET=$SECRET AUTHGATE_LOG=error \
    "$BIN" --config "$AG/authgate.toml" user add --email "$ADMIN_EMAIL" --role admin <<<"$ADMIN_PASSWORD") >/dev/null
(
    cd "$AG"
    export AUTHGATE_ACCESS_SECRET=$SECRET AUTHGATE_LOG=warn
    exec "$BIN" --config "$AG/authgate.toml" serve
) 2>"$OUT/authgate.log" &
AG_PID=$!
PIDS+=("$AG_PID")
wait_listening "$AG_PORT" "$AG_PID" 100 "authgate exited; see $OUT/authgate.log" \
    "authgate did not start; see $OUT/authgate.log"

fds() { find "/proc/$AG_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
threads() { awk '/^Threads/ {print $2}' "/proc/$AG_PID/status"; }

# One login, so the idle figures include what the first login allocates.
LOGIN=$(curl -sk -H 'content-type: application/json' -H 'x-forwarded-for: 10.255.255.253' \
    -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" "https://127.0.0.1:$AG_PORT/auth/login")
TOKEN=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["accessToken"])' "$LOGIN") \
    || die "admin login failed: $LOGIN"
IDLE_RSS=$(rss_kib "$AG_PID")
IDLE_FDS=$(fds)
say "idle after one login: RSS $((IDLE_RSS / 1024)) MiB, $IDLE_FDS descriptors, $(threads) threads"

# ---------------------------------------------------------------- load
echo "seconds,rss_kib,fds,threads" >"$OUT/samples.csv"
python3 "$BENCH/churn.py" "https://127.0.0.1:$AG_PORT" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" \
    "$CHURN_THREADS" "$TMP/stop" >"$OUT/churn.json" 2>"$OUT/churn.log" &
CHURN_PID=$!
PIDS+=("$CHURN_PID")
wrk -t1 -c "$WRK_CONNS" -d "${MINUTES}m" --latency -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$AG_PORT/" >"$OUT/wrk.txt" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")
START=$(date +%s)
END=$((START + MINUTES * 60))
while (($(date +%s) < END)); do
    kill -0 "$AG_PID" 2>/dev/null || die "authgate exited during the soak; see $OUT/authgate.log"
    echo "$(($(date +%s) - START)),$(rss_kib "$AG_PID"),$(fds),$(threads)" >>"$OUT/samples.csv"
    sleep "$SAMPLE"
done
touch "$TMP/stop"
wait "$WRK_PID" || true
wait "$CHURN_PID" || true

# Descriptors back to idle: the clients close their connections at once;
# idle upstream connections are closed 50 s after their last use (swept
# every 10 s), so allow up to 75 s.
AFTER_FDS=$(fds)
for _ in $(seq 750); do
    ((AFTER_FDS <= IDLE_FDS)) && break
    sleep 0.1
    AFTER_FDS=$(fds)
done
AFTER_RSS=$(rss_kib "$AG_PID")

# ---------------------------------------------------------------- verdict
say ""
say "wrk: $(grep -E 'Requests/sec|requests in' "$OUT/wrk.txt" | tr -s ' ' | tr '\n' ';')"
say "churn: $(cat "$OUT/churn.json" 2>/dev/null || echo '(no summary)')"
python3 - "$OUT/samples.csv" "$MINUTES" "$RSS_LIMIT_MIB" "$FLAT_MIB" "$IDLE_FDS" "$AFTER_FDS" \
    "$IDLE_RSS" "$AFTER_RSS" "$OUT/churn.json" <<'EOF' | tee "$OUT/verdict.txt"
import csv, json, sys
path, minutes, limit, flat, idle_fds, after_fds, idle_rss, after_rss, churn = sys.argv[1:10]
rows = [(int(r["seconds"]), int(r["rss_kib"]) / 1024) for r in csv.DictReader(open(path))]
if not rows:
    sys.exit("no samples")
total = int(minutes) * 60
window = min(600, total / 3)
last = [rss for t, rss in rows if t >= total - window]
peak = max(rss for _, rss in rows)
# Growth over the window: the peak of its last third against the peak of
# its first. Peaks, not medians: a sample taken while argon2 holds its
# ~19 MiB is that much above one taken between hashes; a leak lifts both.
third = max(1, len(last) // 3)
growth = max(last[-third:]) - max(last[:third])
try:
    unexpected = json.load(open(churn)).get("unexpected", 0)
except (OSError, ValueError):
    unexpected = "?"
checks = [
    (f"peak RSS {peak:.1f} MiB < {limit} MiB", peak < float(limit)),
    (f"RSS growth over the last {window / 60:.0f} min {growth:+.1f} MiB <= {flat} MiB", growth <= float(flat)),
    (f"descriptors after the load {after_fds} <= idle {idle_fds}", int(after_fds) <= int(idle_fds)),
    (f"churn answers other than expected: {unexpected}", unexpected == 0),
]
print(f"RSS: idle {int(idle_rss) / 1024:.1f} MiB, peak {peak:.1f} MiB, after {int(after_rss) / 1024:.1f} MiB")
for text, ok in checks:
    print(("PASS " if ok else "FAIL ") + text)
sys.exit(0 if all(ok for _, ok in checks) else 1)
EOF
