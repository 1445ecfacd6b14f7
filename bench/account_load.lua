--- bench/account_load.lua: the load both client rows share. C tasks call
-- api.account.get() N times in all through one client and report in the
-- raw client's line format: rps= p50_us= p99_us= cpu_us= n= errors=.
-- Loaded with dofile by bench/client.lua (row 1) and bench/sandbox.lua
-- (row 5); call it inside pivday.run.
local pivday = require "pivday"

local now, clock = pivday.now, os.clock

return function(api, n, c)
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
  local function pct(p) return lat[math.min(#lat, math.floor(#lat * p) + 1)] end
  return ("rps=%.1f p50_us=%.1f p99_us=%.1f cpu_us=%.2f n=%d errors=%d"):format(
    #lat / wall, pct(0.5) * 1e6, pct(0.99) * 1e6, cpu / #lat * 1e6, #lat, errors)
end
