# bench/run.sh's `store` scenario, sourced by it (its settings, helpers and
# bench/lib.sh's, certificates, upstream and $BIN): the same gateway twice,
# once on sled and once on PostgreSQL, measured alternately in one run.
# Login and refresh (each a store transaction) compare throughput and p99;
# proxied requests must not differ at all, as the proxied path never waits
# on the database.
#
# PostgreSQL: AUTHGATE_BENCH_DATABASE_URL when set; otherwise a throwaway
# cluster started here as .ci/run starts one (initdb as an unprivileged
# user, fsync=off as in CI), on CPU $UPSTREAM_CPUS, stopped on exit.

PG_PORT=${BENCH_PG_PORT:-18432}
STORE_SLED_PORT=${BENCH_STORE_SLED_PORT:-18446}
STORE_PG_PORT=${BENCH_STORE_PG_PORT:-18447}
STORE_CONNS=${BENCH_STORE_CONNS:-8}
PG_CTL=()
PG_DIR=""

store_cleanup() { # called at exit by run.sh (after_cleanup)
    if ((${#PG_CTL[@]})); then
        "${PG_CTL[@]}" -m immediate stop >/dev/null 2>&1
        rm -rf "$PG_DIR"
    fi
}

pg_bindir() { # initdb/pg_ctl on PATH, or Debian's newest versioned directory
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $dir/initdb ]] && { echo "$dir"; return; }
    done
    return 1
}

start_bench_postgres() { # sets DB_URL
    local bindir runas=()
    if ! bindir=$(pg_bindir); then
        [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || die "initdb not found (Debian: apt-get install -y postgresql), or set AUTHGATE_BENCH_DATABASE_URL"
        say "installing: postgresql"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bindir=$(pg_bindir) || die "initdb still not found"
    fi
    # Outside $TMP, which only root may enter: the server runs as postgres.
    PG_DIR=$(mktemp -d /tmp/authgate-bench-pg.XXXXXX)
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$PG_DIR"
        runas=(runuser -u postgres --)
    fi
    show_cmd "${runas[@]}" "$bindir/initdb" -D "$PG_DIR/data" -U authgate --auth=trust --encoding=UTF8 --no-locale
    "${runas[@]}" "$bindir/initdb" -D "$PG_DIR/data" -U authgate --auth=trust --encoding=UTF8 --no-locale \
        >"$OUT/postgres-initdb.log" 2>&1 || die "initdb failed; see $OUT/postgres-initdb.log"
    PG_CTL=("${runas[@]}" "$bindir/pg_ctl" -D "$PG_DIR/data")
    local options="-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=100 -c fsync=off"
    show_cmd taskset -c "$UPSTREAM_CPUS" "${PG_CTL[@]}" -w -l "$PG_DIR/server.log" -o "$options" start
    taskset -c "$UPSTREAM_CPUS" "${PG_CTL[@]}" -w -t 60 -l "$PG_DIR/server.log" -o "$options" start >/dev/null \
        || { cat "$PG_DIR/server.log" >&2; die "PostgreSQL did not start"; }
    DB_URL="postgres://authgate@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
    say "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}'): throwaway cluster at 127.0.0.1:$PG_PORT (fsync=off), CPU $UPSTREAM_CPUS"
}

start_store_gateway() { # name port store-section -> sets STORE_PID
    local name=$1 port=$2 store=$3 dir=$TMP/store-$1
    mkdir -p "$dir"
    cat >"$dir/authgate.toml" <<CFG
[server]
listen = "127.0.0.1:$port"
tls_cert = "$TMP/chain.pem"
tls_key = "$TMP/leaf-key.pem"
dev = false
access_log = false

[tokens]
issuer = "authgate"
audience = "authgate"
access_ttl = "4h"

[auth]
# Rotations as fast as the store allows: the per-session and per-address
# refresh limits would otherwise answer 429 within the first second.
refresh_per_session_per_minute = 1000000
refresh_per_address_per_minute = 1000000

[store]
$store

[[route]]
name = "bench"
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
CFG
    cp "$dir/authgate.toml" "$OUT/authgate-store-$name.toml"
    (
        cd "$dir"
        export AUTHGATE_ACCESS_SECRET=$SECRET AUTHGATE_LOG=warn
        [[ $name == postgres ]] && export AUTHGATE_DATABASE_URL=$DB_URL
        exec setsid taskset -c "$FRONT_CPUS" "$BIN" --config "$dir/authgate.toml" serve
    ) 2>"$OUT/authgate-store-$name.log" &
    STORE_PID=$!
    PIDS+=("$STORE_PID")
    show_cmd "(cd $dir && AUTHGATE_ACCESS_SECRET=... $([[ $name == postgres ]] && echo 'AUTHGATE_DATABASE_URL=$DB_URL ')setsid taskset -c $FRONT_CPUS $BIN --config $dir/authgate.toml serve)"
    wait_listening "$port" "$STORE_PID" 300 "authgate ($name store) exited; see $OUT/authgate-store-$name.log" \
        "authgate ($name store) did not start listening"
}

store_post() { # port path json -> response body on stdout; dies unless 2xx
    local out=$TMP/store-post.json code
    code=$(curl -sk -o "$out" -w '%{http_code}' -H 'content-type: application/json' -d "$3" "https://127.0.0.1:$1$2" || true)
    [[ $code == 2?? ]] || die "POST $2 on :$1 answered $code: $(cat "$out")"
    cat "$out"
}

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

store_tokens() { # port -> one fresh refresh token per flood account, space-separated
    local port=$1 email tokens=""
    for email in $STORE_EMAILS; do
        tokens+="${tokens:+ }$(store_post "$port" /auth/login "{\"email\":\"$email\",\"password\":\"$PASSWORD\"}" | json_field refreshToken)"
    done
    echo "$tokens"
}

store_measure() { # kind backend port round -> one line in $OUT/store.txt
    local kind=$1 backend=$2 port=$3 round=$4 raw=$OUT/raw/store.$1.$2.r$4.txt pid before after cmd
    pid=$STORE_SLED_PID
    [[ $backend == postgres ]] && pid=$STORE_PG_PID
    case $kind in
        login) cmd=(wrk -t1 -c"$STORE_CONNS" -d"${DURATION}s" --latency -s "$BENCH/login.lua" "https://127.0.0.1:$port/auth/login") ;;
        refresh) cmd=(wrk -t1 -c"$STORE_CONNS" -d"${DURATION}s" --latency -s "$BENCH/refresh.lua" "https://127.0.0.1:$port/auth/refresh") ;;
        proxied) cmd=(wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer ${STORE_ACCESS[$backend]}" "https://127.0.0.1:$port/") ;;
    esac
    local tokens=""
    [[ $kind == refresh ]] && tokens=$(store_tokens "$port")
    [[ $kind == login ]] && show_cmd BENCH_LOGIN_EMAILS=... BENCH_LOGIN_PASSWORD=... taskset -c "$LOAD_CPUS" "${cmd[@]}"
    [[ $kind == refresh ]] && show_cmd BENCH_REFRESH_TOKENS=... taskset -c "$LOAD_CPUS" "${cmd[@]}"
    [[ $kind == proxied ]] && show_cmd taskset -c "$LOAD_CPUS" "${cmd[@]//${STORE_ACCESS[$backend]}/\$ACCESS}"
    before=$(cpu_ticks "$pid")
    BENCH_LOGIN_EMAILS=$STORE_EMAILS BENCH_LOGIN_PASSWORD=$PASSWORD BENCH_REFRESH_TOKENS=$tokens BENCH_REFRESH_THREADS=1 \
        taskset -c "$LOAD_CPUS" "${cmd[@]}" >"$raw" 2>&1 || say "warning: wrk exited non-zero ($raw)"
    after=$(cpu_ticks "$pid")
    python3 -c '
import re, sys
sys.path.insert(0, sys.argv[1])
import report
r = report.parse_wrk(sys.argv[2])
text = open(sys.argv[2]).read()
statuses = dict(re.findall(r"^status (\d+): (\d+)$", text, re.M))
secs = float(re.search(r"requests in ([\d.]+)s", text).group(1))
ok = sum(int(n) for s, n in statuses.items() if s.startswith("2")) if statuses else r["requests"] - r["non2xx"]
cpu_us = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5]) * 1e6 / max(1, r["requests"])
codes = ",".join(s + ":" + n for s, n in sorted(statuses.items())) or "non2xx:%d" % r["non2xx"]
print(sys.argv[6], sys.argv[7], sys.argv[8], "%.1f %.2f %.1f %s" % (ok / secs, r["p99_ms"] or 0, cpu_us, codes))' \
        "$BENCH" "$raw" "$before" "$after" "$CLK_TCK" "$kind" "$backend" "$round" | tee -a "$OUT/store.txt"
    sleep 1
}

section "store: PostgreSQL against sled"
if [[ -n ${AUTHGATE_BENCH_DATABASE_URL:-} ]]; then
    DB_URL=$AUTHGATE_BENCH_DATABASE_URL
    say "PostgreSQL: AUTHGATE_BENCH_DATABASE_URL (not printed)"
else
    start_bench_postgres
fi
start_store_gateway sled "$STORE_SLED_PORT" "path = \"$TMP/store-sled/store.sled\""
STORE_SLED_PID=$STORE_PID
start_store_gateway postgres "$STORE_PG_PORT" 'backend = "postgres"'
STORE_PG_PID=$STORE_PID
say "sled on :$STORE_SLED_PORT (pid $STORE_SLED_PID), PostgreSQL on :$STORE_PG_PORT (pid $STORE_PG_PID): same config but [store], CPU $FRONT_CPUS, default workers"
# Twice as many accounts as connections (see bench/login.lua), on each store.
STORE_EMAILS=""
for i in $(seq $((STORE_CONNS * 2))); do STORE_EMAILS+="${STORE_EMAILS:+ }store-$STAMP-$i@example.com"; done
declare -A STORE_ACCESS=()
for entry in "sled:$STORE_SLED_PORT" "postgres:$STORE_PG_PORT"; do
    for email in $STORE_EMAILS; do
        store_post "${entry#*:}" /auth/register "{\"email\":\"$email\",\"password\":\"$PASSWORD\"}" >/dev/null
    done
    # A session's access token, so the proxied path checks its revocation
    # state the same way on both; of an account of its own, which the login
    # runs never touch (past 32 sessions they would end this one).
    access_creds="{\"email\":\"store-$STAMP-proxied@example.com\",\"password\":\"$PASSWORD\"}"
    store_post "${entry#*:}" /auth/register "$access_creds" >/dev/null
    STORE_ACCESS[${entry%%:*}]=$(store_post "${entry#*:}" /auth/login "$access_creds" | json_field accessToken)
    check "https://127.0.0.1:${entry#*:}/" 200 -H "Authorization: Bearer ${STORE_ACCESS[${entry%%:*}]}"
done
say "registered $((STORE_CONNS * 2 + 1)) accounts on each; each session token -> 200 through its gateway"
: >"$OUT/store.txt"
say "kind backend round ok-req/s p99-ms gateway-CPU-µs/req statuses"
for round in $(seq "$ROUNDS"); do
    # Alternate which store goes first, so drift on a shared machine hits both.
    order=("sled:$STORE_SLED_PORT" "postgres:$STORE_PG_PORT")
    ((round % 2 == 0)) && order=("${order[1]}" "${order[0]}")
    for kind in login refresh proxied; do
        for entry in "${order[@]}"; do
            store_measure "$kind" "${entry%%:*}" "${entry#*:}" "$round"
        done
    done
done
# One row per measure in the final table: tab-separated measure, value, note.
while IFS=$'\t' read -r measure value note; do
    mem_row "store: $measure" "$value" "-" "$note"
done < <(python3 -c '
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
def med(kind, backend, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == kind and r[1] == backend)
note = "median of %s x %ss, order alternated" % (sys.argv[2], sys.argv[3])
for kind, label in (("login", "logins/s"), ("refresh", "refreshes/s"), ("proxied", "req/s")):
    s, p = med(kind, "sled", 3), med(kind, "postgres", 3)
    s99, p99 = med(kind, "sled", 4), med(kind, "postgres", 4)
    scpu, pcpu = med(kind, "sled", 5), med(kind, "postgres", 5)
    ratio = lambda a, b: "%.2f×" % (a / b) if b else "-"
    print("%s throughput, PostgreSQL/sled\t%s (%.0f vs %.0f %s)\t%s" % (kind, ratio(p, s), p, s, label, note))
    print("%s p99, PostgreSQL/sled\t%s (%.2f vs %.2f ms)\t%s" % (kind, ratio(p99, s99), p99, s99, note))
    print("%s gateway CPU/req, PostgreSQL/sled\t%s (%.1f vs %.1f µs)\tthe gateway process only" % (kind, ratio(pcpu, scpu), pcpu, scpu))
' "$OUT/store.txt" "$ROUNDS" "$DURATION" | tee "$OUT/store-summary.tsv")
kill "$STORE_SLED_PID" "$STORE_PG_PID" 2>/dev/null || true
