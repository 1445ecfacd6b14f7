--- bench/sandbox.lua: row 5, GET /account against the in-process sandbox.
--
--     pivday bench/sandbox.lua N C
--
-- The sandbox and the client share the process and its loop (as in our own
-- test suite). Prints the raw client's line format.
local pivday = require "pivday"

local n, c = math.tointeger(tonumber(arg[1])), math.tointeger(tonumber(arg[2]))
if not (n and c and n > 0 and c > 0) then
  io.stderr:write("usage: pivday bench/sandbox.lua N C\n")
  os.exit(2)
end

local now, clock = pivday.now, os.clock

local line = pivday.run(function()
  local sb = assert(pivday.sandbox{ port = 0 })
  local api = pivday.client{ base_url = sb.base_url, api_key = sb.api_key,
    concurrency = c, max_retries = 0, timeout = 30 }
  assert(api.account.get()) -- warm: the first call loads the handlers
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
  sb:close()
  table.sort(lat)
  local function pct(p) return lat[math.min(#lat, math.floor(#lat * p) + 1)] end
  return ("rps=%.1f p50_us=%.1f p99_us=%.1f cpu_us=%.2f n=%d errors=%d"):format(
    #lat / wall, pct(0.5) * 1e6, pct(0.99) * 1e6, cpu / #lat * 1e6, #lat, errors)
end)
print(line)
