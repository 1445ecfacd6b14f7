--- bench/memory.lua: row 3, many requests in flight through pivday.http.
--
--     pivday bench/memory.lua URL N
--
-- Starts N tasks, each sending one GET with pivday.http.request, all at
-- once (the server holds every answer), and waits for all. Prints the
-- raw client's --inflight line: resident memory before the requests and
-- at its peak (VmRSS, VmHWM), bytes per in-flight request, completions.
local pivday = require "pivday"

local url, n = arg[1], math.tointeger(tonumber(arg[2]))
if not (url and n and n > 0) then
  io.stderr:write("usage: pivday bench/memory.lua URL N\n")
  os.exit(2)
end

local function status_kb(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local request = pivday.http.request
local ok, failed = 0, 0
local function one()
  local res = request{ url = url, timeout = 600 }
  if res and res.status == 200 and #res.body > 0 then ok = ok + 1 else failed = failed + 1 end
end

collectgarbage()
collectgarbage()
local base = status_kb("VmRSS")
local t0, cpu0 = pivday.now(), os.clock()
pivday.run(function()
  for _ = 1, n do pivday.spawn(one) end
end)
local wall, cpu = pivday.now() - t0, os.clock() - cpu0
local peak = status_kb("VmHWM")
print(("rps=%.1f cpu_us=%.2f n=%d errors=%d rss_base_kb=%d rss_peak_kb=%d per_req_bytes=%.0f completed=%d"):format(
  (ok + failed) / wall, cpu / n * 1e6, ok + failed, failed, base, peak,
  (peak - base) * 1024 / n, ok))
