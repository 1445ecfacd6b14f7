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

local now, clock = pivday.now, os.clock

local function percentile(t, p)
  return t[math.min(#t, math.floor(#t * p) + 1)]
end

local line = pivday.run(function()
  local api = pivday.client{ api_key = "bench-key", base_url = base_url,
    concurrency = c, max_retries = 0, timeout = 30 }
  local lat, issued, errors = {}, 0, 0
  local function worker()
    while issued < n do
      issued = issued + 1
      local t = now()
      local acct = api.account.get()
      lat[#lat + 1] = now() - t
      if type(acct) ~= "table" or acct.balance == nil then errors = errors + 1 end
    end
  end
  local workers = {}
  for i = 1, c do workers[i] = worker end
  local cpu0, t0 = clock(), now()
  pivday.gather(table.unpack(workers))
  local wall, cpu = now() - t0, clock() - cpu0
  table.sort(lat)
  return ("rps=%.1f p50_us=%.1f p99_us=%.1f cpu_us=%.2f n=%d errors=%d"):format(
    #lat / wall, percentile(lat, 0.5) * 1e6, percentile(lat, 0.99) * 1e6,
    cpu / #lat * 1e6, #lat, errors)
end)
print(line)
