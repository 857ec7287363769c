-- wrk script for bench/run.sh's login flood: every request is a correct
-- POST /auth/login for the bench account (argon2 verification each time).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}',
    os.getenv("BENCH_LOGIN_EMAIL") or "", os.getenv("BENCH_LOGIN_PASSWORD") or "")
