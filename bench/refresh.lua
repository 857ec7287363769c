-- wrk script for bench/run.sh's store scenario: every request is a POST
-- /auth/refresh with a live refresh token (a rotation: one store
-- transaction each). The tokens in BENCH_REFRESH_TOKENS (space-separated,
-- one session each) are dealt out to the threads; each answer's new
-- refreshToken replaces the one spent, so every connection always presents
-- a token that is current. A refused refresh loses its token and the next
-- request reuses the last one seen (answered 401): the status counts show
-- it. Prints how many responses had each status.
local threads = {}
local created = 0

function setup(thread)
    thread:set("id", created)
    created = created + 1
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
    tokens = {}
    local all = {}
    for token in string.gmatch(os.getenv("BENCH_REFRESH_TOKENS") or "", "%S+") do
        table.insert(all, token)
    end
    for i, token in ipairs(all) do
        if (i - 1) % created_threads() == id then
            table.insert(tokens, token)
        end
    end
    last = tokens[1] or ""
end

-- How many threads share the tokens (wrk -t).
function created_threads()
    return tonumber(os.getenv("BENCH_REFRESH_THREADS") or "1")
end

function request()
    local token = table.remove(tokens) or last
    local body = string.format('{"refreshToken":"%s"}', token)
    return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status == 200 then
        local token = string.match(body, '"refreshToken":"([^"]+)"')
        if token then
            table.insert(tokens, token)
            last = token
        end
    end
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
