-- wrk script of tests/bench/scale-api: one route per run (ROUTE), random
-- existing ids from the files IDS (releases) and TENANTS; prints
-- "RESULT p50_ms p99_ms requests_per_s requests" when done.
local route = os.getenv("ROUTE")
local long_id = os.getenv("LONG_ID")
local long_revs = tonumber(os.getenv("LONG_REVS"))
local ids, tenants = {}, {}
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

local n = 0
function setup(thread)
    n = n + 1
    thread:set("tid", n)
end

function init(args)
    for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end
    for line in io.lines(os.getenv("TENANTS")) do tenants[#tenants + 1] = line end
    math.randomseed(os.time() * 100 + (tid or 0))
end

function request()
    local path
    if route == "get" then
        path = "/" .. ids[math.random(#ids)]
    elseif route == "history" then
        path = "/" .. ids[math.random(#ids)] .. "/history"
    elseif route == "history5000" then
        path = "/" .. long_id .. "/history?limit=100&after=" .. math.random(0, long_revs - 100)
    elseif route == "tenant" then
        path = "/tenant/" .. tenants[math.random(#tenants)]
    else
        path = "/summary"
    end
    return wrk.format("GET", wrk.path .. path)
end

function done(summary, latency, requests)
    io.write(string.format("RESULT %.2f %.2f %.1f %d\n", latency:percentile(50) / 1000,
        latency:percentile(99) / 1000, summary.requests / (summary.duration / 1e6), summary.requests))
end
