-- wrk script for bench/run.sh's login flood: every request is a correct
-- POST /auth/login (argon2 verification each time), cycling through the
-- accounts in BENCH_LOGIN_EMAILS (space-separated) with BENCH_LOGIN_PASSWORD.
-- Many accounts, because authgate counts a login still being checked
-- against its account's failure limit (5 by default): eight concurrent
-- logins to one account would mostly be answered 429.
-- Prints how many responses had each status, so refusals are visible.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
    requests_ = {}
    local password = os.getenv("BENCH_LOGIN_PASSWORD") or ""
    for email in string.gmatch(os.getenv("BENCH_LOGIN_EMAILS") or "", "%S+") do
        local body = string.format('{"email":"%s","password":"%s"}', email, password)
        table.insert(requests_, wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body))
    end
    next_ = 0
end

function request()
    next_ = next_ % #requests_ + 1
    return requests_[next_]
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            total[status] = (total[status] or 0) + count
        end
    end
    for status, count in pairs(total) do
        io.write(string.format("status %d: %d\n", status, count))
    end
end
