--- bench/client.lua: row 1, GET /account through the full pivday client.
--
--     pivday bench/client.lua BASE_URL N C
--
-- C tasks share one client (concurrency = C, no retries) and send N calls
-- of api.account.get() in all; each call is the whole path: bearer header,
-- the transfer, JSON decode, envelope, payload. Prints one line in the raw
-- client's format: rps= p50_us= p99_us= cpu_us= n= errors=.
local pivday = require "pivday"

local base_url, n, c = arg[1], math.tointeger(tonumber(arg[2])), math.tointeger(tonumber(arg[3]))
if not (base_url and n and c and n > 0 and c > 0) then
  io.stderr:write("usage: pivday bench/client.lua BASE_URL N C\n")
  os.exit(2)
end

local load = dofile((arg[0]:match("^(.*)/") or ".") .. "/account_load.lua")

print(pivday.run(function()
  local api = pivday.client{ api_key = "bench-key", base_url = base_url,
    concurrency = c, max_retries = 0, timeout = 30 }
  return load(api, n, c)
end))
