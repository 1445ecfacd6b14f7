--- bench/run.lua: runs `make bench` and prints one table.
--
--     BENCH_SHORT=1 PIVDAY_BIN=build/bin/pivday BENCH_BIN=build/bench lua5.4 bench/run.lua
--
-- Every pivday figure is divided by a baseline measured in the same run,
-- sample by sample, interleaved (this machine is shared and noisy: absolute
-- figures drift 10-40 % between runs, ratios taken together hold). A row
-- shows the median of its samples, the spread of the per-sample ratios
-- (min-max), whether it met its target, and the ratio last.
--
-- Rows: 1 client (C=1, 16, 64), 2 webhook listener (wrk), 3 memory with
-- many requests in flight, 4 start-up, 5 sandbox (report only).
-- Environment: BENCH_SHORT=1 (small N, one sample), BENCH_SAMPLES=n,
-- BENCH_ROWS=1,3 (a subset), BENCH_RESULTS=path (default bench/RESULTS.md;
-- the short mode writes build/bench/RESULTS-short.md instead).
--
-- It starts its own servers (nginx with a config in a temp dir, or
-- raw_server when nginx is missing; the pivday listener) on 127.0.0.1 and
-- stops exactly those, by PID. Every command runs under `timeout`.

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local SHORT = env("BENCH_SHORT", "0") ~= "0"
local PIVDAY = env("PIVDAY_BIN", "build/bin/pivday")
local BIN = env("BENCH_BIN", "build/bench")
local HERE = (arg[0]:match("^(.*)/[^/]*$") or ".")

local cfg = SHORT and {
  samples = 1, client_n = 2000, cs = { 1, 16, 64 }, wrk_d = 2, mem_n = 1000,
  mem_delay = 200, start_runs = 20, sandbox_n = 500,
} or {
  -- Five samples: on this shared machine one slow sample in three moved a
  -- median by up to 0.06; the median of five holds better.
  samples = 5, client_n = 20000, cs = { 1, 16, 64 }, wrk_d = 10, mem_n = 10000,
  mem_delay = 2000, start_runs = 100, sandbox_n = 5000,
}
cfg.samples = math.tointeger(tonumber(env("BENCH_SAMPLES", cfg.samples))) or cfg.samples
local ROWS = {}
for r in env("BENCH_ROWS", "1,2,3,4,5"):gmatch("%d") do ROWS[tonumber(r)] = true end
local RESULTS = env("BENCH_RESULTS", SHORT and (BIN .. "/RESULTS-short.md") or (HERE .. "/RESULTS.md"))

---------------------------------------------------------------------------
-- Processes
---------------------------------------------------------------------------

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function log(...)
  io.stderr:write("bench: ", string.format(...), "\n")
end

--- Runs cmd (at most `limit` seconds); returns its output and success.
local function capture(cmd, limit)
  local p = io.popen(("timeout -k 5 %d sh -c %s 2>&1"):format(limit or 120, q(cmd)))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local function sleep(s)
  os.execute("sleep " .. s)
end

local function kv(s)
  local t = {}
  for k, v in (s or ""):gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local tmp = assert(capture("mktemp -d /tmp/pivday-bench.XXXXXX", 5)):gsub("%s+$", "")
assert(tmp:match("^/tmp/pivday%-bench%."), "mktemp failed: " .. tmp)

local started = {} -- pid -> name, the processes this run started

--- Starts cmd in the background (output to a file); returns pid, outfile.
local function spawn(cmd, name)
  local out = ("%s/%s.out"):format(tmp, name)
  local p = io.popen(("%s >%s 2>&1 & echo $!"):format(cmd, q(out)))
  local pid = tonumber(p:read("a"):match("%d+"))
  p:close()
  assert(pid, "could not start " .. name)
  started[pid] = name
  return pid, out
end

--- Process state letter from /proc, nil when gone.
local function pstate(pid)
  local s = read_file(("/proc/%d/stat"):format(pid))
  return s and s:match("%)%s+(%a)")
end

local function alive(pid)
  local st = pstate(pid)
  return st ~= nil and st ~= "Z" and st ~= "X"
end

--- CPU seconds (user + system, all threads) of a process.
local TICK = tonumber((capture("getconf CLK_TCK", 5))) or 100
local function cpu_of(pid)
  local s = read_file(("/proc/%d/stat"):format(pid))
  if not s then return nil end
  local rest = s:match("%)%s+(.*)$")
  local f = {}
  for x in rest:gmatch("%S+") do f[#f + 1] = x end
  -- rest starts at field 3 (state): utime is field 14, stime 15.
  return (tonumber(f[12]) + tonumber(f[13])) / TICK
end

--- Stops a process this run started: SIGTERM, then SIGKILL after 10 s.
local function stop(pid)
  if not started[pid] then return end
  if alive(pid) then
    os.execute(("kill -TERM %d 2>/dev/null"):format(pid))
    for _ = 1, 200 do
      if not alive(pid) then break end
      sleep(0.05)
    end
    if alive(pid) then
      log("%s (pid %d) ignored SIGTERM; killing it", started[pid], pid)
      os.execute(("kill -KILL %d 2>/dev/null"):format(pid))
    end
  end
  started[pid] = nil
end

local function stop_all()
  for pid in pairs(started) do stop(pid) end
end

--- Waits (at most `limit` s) until file contains pattern; returns capture.
local function wait_for(pid, file, pattern, limit)
  for _ = 1, math.floor((limit or 10) / 0.05) do
    local s = read_file(file)
    local m = s and s:match(pattern)
    if m then return m end
    if not alive(pid) then return nil end
    sleep(0.05)
  end
  return nil
end

---------------------------------------------------------------------------
-- Statistics
---------------------------------------------------------------------------

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local function minmax(t)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(t) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return lo, hi
end

local function fmt_num(v)
  if v == nil then return "-" end
  if type(v) == "string" then return v end
  local a = math.abs(v)
  if a >= 1000 then
    local s = ("%.0f"):format(v)
    return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
  elseif a >= 100 then return ("%.0f"):format(v)
  elseif a >= 10 then return ("%.1f"):format(v)
  end
  return ("%.2f"):format(v)
end

---------------------------------------------------------------------------
-- Targets
---------------------------------------------------------------------------

local BODY = assert(capture(q(BIN .. "/raw_server") .. " --print-body", 5))
assert(#BODY == 154, "raw_server --print-body: expected 154 bytes")

--- Starts raw_server; returns pid and port.
local function start_raw_server(extra, name)
  local pid, out = spawn(q(BIN .. "/raw_server") .. " " .. (extra or ""), name or "raw_server")
  local port = tonumber(wait_for(pid, out, "port=(%d+)", 10))
  if not port then
    stop(pid)
    error("raw_server did not start: " .. (read_file(out) or ""))
  end
  return pid, port
end

local function http_ok(url)
  local out = capture(("curl -s -o /dev/null -w '%%{http_code}' --max-time 1 %s"):format(q(url)), 5)
  return out == "200"
end

--- Starts nginx with its own config (one worker, keep-alive, `return 200`
-- with BODY) on a free high port; returns pid, port, or nil when nginx is
-- missing or will not start.
local function start_nginx()
  local nginx = capture("command -v nginx || ls /usr/sbin/nginx", 5):match("(/%S+)")
  if not nginx then return nil, "nginx is not installed" end
  local dir = tmp .. "/nginx"
  os.execute("mkdir -p " .. q(dir .. "/tmp"))
  for _ = 1, 8 do
    local port = math.random(20000, 60000)
    local conf = ([[
worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s/tmp/body;
  proxy_temp_path %s/tmp/proxy;
  fastcgi_temp_path %s/tmp/fastcgi;
  uwsgi_temp_path %s/tmp/uwsgi;
  scgi_temp_path %s/tmp/scgi;
  keepalive_timeout 120s;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:%d;
    location / {
      default_type application/json;
      return 200 '%s';
    }
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, port, BODY)
    write_file(dir .. "/nginx.conf", conf)
    local pid = spawn(("%s -p %s -c %s -e %s"):format(q(nginx), q(dir .. "/"),
      q(dir .. "/nginx.conf"), q(dir .. "/error.log")), "nginx")
    for _ = 1, 100 do
      if not alive(pid) then break end
      if http_ok(("http://127.0.0.1:%d/api/v1/account"):format(port)) then return pid, port end
      sleep(0.05)
    end
    stop(pid)
  end
  return nil, "nginx would not start: " .. (read_file(dir .. "/error.log") or "")
end

---------------------------------------------------------------------------
-- The table
---------------------------------------------------------------------------

local rows = {}   -- {row=, what=, piv=, base=, spread=, target=, met=, ratio=}
local notes = {}  -- lines under the table
local details = {} -- per-sample figures, for RESULTS.md

local function note(...) notes[#notes + 1] = string.format(...) end
local function detail(...) details[#details + 1] = string.format(...) end

--- Adds a row from per-sample pivday and baseline figures. `dir` is ">="
-- (higher ratio is better) or "<=".
local function add_row(r)
  local ratios = {}
  for i = 1, #r.piv do
    if r.base and r.base[i] and r.base[i] ~= 0 then ratios[i] = r.piv[i] / r.base[i] end
  end
  local row = { row = r.row, what = r.what, piv = median(r.piv), base = r.base and median(r.base) }
  if #ratios > 0 then
    row.ratio = median(ratios)
    local lo, hi = minmax(ratios)
    row.spread = #ratios > 1 and ("%.2f-%.2f"):format(lo, hi) or "(1 sample)"
  else
    local lo, hi = minmax(r.piv)
    row.spread = #r.piv > 1 and ("%s-%s"):format(fmt_num(lo), fmt_num(hi)) or "(1 sample)"
  end
  if r.target then
    row.target = r.dir .. " " .. r.target
    local ok = row.ratio and (r.dir == ">=" and row.ratio >= r.target or r.dir == "<=" and row.ratio <= r.target)
    if r.check == false then ok = false end
    row.met = ok and "yes" or "NO"
  else
    row.target, row.met = "report", "-"
  end
  rows[#rows + 1] = row
end

local function skip_row(row, what, why)
  rows[#rows + 1] = { row = row, what = what, spread = "", target = "", met = "n/a", ratio = nil }
  note("row %s (%s) skipped: %s", row, what, why)
end

local COLS = { "row", "what", "pivday", "baseline", "spread", "target", "met", "ratio" }

local function cells(r)
  return { tostring(r.row), r.what, fmt_num(r.piv), fmt_num(r.base), r.spread or "",
    r.target or "", r.met or "", r.ratio and ("%.2f"):format(r.ratio) or "-" }
end

local function text_table()
  local w = {}
  local all = { COLS }
  for _, r in ipairs(rows) do all[#all + 1] = cells(r) end
  for _, line in ipairs(all) do
    for i, c in ipairs(line) do w[i] = math.max(w[i] or 0, #c) end
  end
  local out = {}
  for n, line in ipairs(all) do
    local parts = {}
    for i, c in ipairs(line) do
      parts[i] = (i <= 2) and (c .. (" "):rep(w[i] - #c)) or ((" "):rep(w[i] - #c) .. c)
    end
    out[#out + 1] = table.concat(parts, "  ")
    if n == 1 then
      local dash = {}
      for i = 1, #w do dash[i] = ("-"):rep(w[i]) end
      out[#out + 1] = table.concat(dash, "  ")
    end
  end
  return table.concat(out, "\n")
end

local function md_table()
  local out = { "| " .. table.concat(COLS, " | ") .. " |",
    "|" .. ("---|"):rep(2) .. ("---:|"):rep(#COLS - 2) }
  for _, r in ipairs(rows) do out[#out + 1] = "| " .. table.concat(cells(r), " | ") .. " |" end
  return table.concat(out, "\n")
end

---------------------------------------------------------------------------
-- Rows
---------------------------------------------------------------------------

local PIV = q(PIVDAY)
local function pivday_cmd(script, ...)
  local args = { PIV, q(HERE .. "/" .. script) }
  for _, a in ipairs { ... } do args[#args + 1] = q(a) end
  return table.concat(args, " ")
end

local function run_kv(cmd, limit, label)
  local out, ok = capture(cmd, limit)
  local t = kv(out:match("rps=[^\n]*") or "")
  if not ok or not t.rps then
    log("%s failed: %s", label, out)
    return nil, out
  end
  return t
end

local AUTH = { "Authorization: Bearer bench-key", "Accept: application/json",
  "User-Agent: pivday-lua/0.1" }

-- Row 1: the full client against nginx, ÷ the raw client, per C.
local function row_client()
  local pid, port = start_nginx()
  local target = "nginx"
  if not pid then
    note("row 1: %s; raw_server serves the same body instead", port)
    pid, port = start_raw_server(nil, "target")
    target = "raw_server"
  end
  local base = ("http://127.0.0.1:%d/api/v1"):format(port)
  local hdr = {}
  for i, h in ipairs(AUTH) do hdr[i] = "--header " .. q(h) end
  local piv, raw, pcpu, rcpu, p50 = {}, {}, {}, {}, {}
  for _, c in ipairs(cfg.cs) do piv[c], raw[c], pcpu[c], rcpu[c], p50[c] = {}, {}, {}, {}, {} end
  for s = 1, cfg.samples do
    for _, c in ipairs(cfg.cs) do
      local function one_raw()
        local t = run_kv(("%s --url %s --n %d --c %d %s"):format(q(BIN .. "/raw_client"),
          q(base .. "/account"), cfg.client_n, c, table.concat(hdr, " ")), 300, "raw_client")
        if t then
          raw[c][#raw[c] + 1], rcpu[c][#rcpu[c] + 1] = t.rps, t.cpu_us
          detail("row 1 C=%d sample %d raw:    rps=%s p50=%sus p99=%sus cpu=%sus/req", c, s,
            fmt_num(t.rps), fmt_num(t.p50_us), fmt_num(t.p99_us), fmt_num(t.cpu_us))
        end
      end
      local function one_piv()
        local t = run_kv(pivday_cmd("client.lua", base, cfg.client_n, c), 300, "pivday client")
        if t then
          if t.errors ~= 0 then note("row 1 C=%d: pivday client had %d errors", c, t.errors) end
          piv[c][#piv[c] + 1], pcpu[c][#pcpu[c] + 1] = t.rps, t.cpu_us
          detail("row 1 C=%d sample %d pivday: rps=%s p50=%sus p99=%sus cpu=%sus/req", c, s,
            fmt_num(t.rps), fmt_num(t.p50_us), fmt_num(t.p99_us), fmt_num(t.cpu_us))
        end
      end
      if s % 2 == 1 then one_raw() one_piv() else one_piv() one_raw() end
    end
  end
  stop(pid)
  for _, c in ipairs(cfg.cs) do
    if #piv[c] == 0 or #raw[c] == 0 or #piv[c] ~= #raw[c] then
      skip_row("1", ("client C=%d req/s"):format(c), "a run failed (see above)")
    else
      add_row { row = "1", what = ("client C=%d req/s"):format(c), piv = piv[c], base = raw[c],
        target = 0.85, dir = ">=" }
      note("row 1 C=%d: CPU per request %s us (pivday) vs %s us (raw client); server %s",
        c, fmt_num(median(pcpu[c])), fmt_num(median(rcpu[c])), target)
    end
  end
end

-- One wrk run against a server started by `start` (returns pid, url).
local function wrk_run(label, start, finish)
  local pid, url = start()
  if not pid then return nil, url end
  local cpu0 = cpu_of(pid)
  local out, ok = capture(("wrk -t1 -c64 -d%ds -s %s %s"):format(cfg.wrk_d,
    q(HERE .. "/wrk_webhook.lua"), q(url)), cfg.wrk_d + 30)
  local cpu1 = cpu_of(pid)
  local t = kv(out:match("wrk_requests=[^\n]*") or "")
  t.rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
  local fin = finish(pid)
  if not ok or not t.rps or not t.wrk_ok or t.wrk_ok == 0 then
    log("wrk against %s failed: %s", label, out)
    return nil, "wrk failed"
  end
  t.cpu_us = (cpu1 - cpu0) / t.wrk_ok * 1e6
  t.fin = fin
  return t
end

-- Row 2: the webhook listener under wrk, ÷ raw_server.
local function row_webhooks()
  local wrk = capture("command -v wrk", 5):match("(/%S+)")
  if not wrk then
    skip_row("2", "listener", "wrk is not installed")
    return
  end
  local probe = capture(PIV .. " -e 'assert(require \"pivday.webhooks\")'", 20)
  if probe:find("%S") then
    skip_row("2", "listener", "pivday.webhooks does not load: " .. probe:gsub("\n.*", ""))
    return
  end
  local function raw_start()
    local pid, port = start_raw_server(nil, "raw_hooks")
    return pid, ("http://127.0.0.1:%d/hooks"):format(port)
  end
  local function raw_finish(pid) stop(pid) return {} end
  local function piv_start(journal)
    return function()
      local pid, out = spawn(pivday_cmd("webhooks.lua", journal or ""), "pivday_hooks")
      local url = wait_for(pid, out, "url=(%S+)", 20)
      if not url then
        local why = read_file(out) or ""
        stop(pid)
        return nil, "the listener did not start: " .. why
      end
      return pid, url .. (url:match("/hooks$") and "" or "/hooks"), out
    end
  end
  local function piv_finish(pid)
    local out = tmp .. "/pivday_hooks.out"
    stop(pid)
    return kv((read_file(out) or ""):match("handled=[^\n]*") or "")
  end
  local R = { raw = { rps = {}, cpu = {} }, nj = { rps = {}, cpu = {} }, j = { rps = {}, cpu = {} } }
  local checks_ok, failed = true, nil
  local order = { "raw", "nj", "j" }
  for s = 1, cfg.samples do
    for k = 0, 2 do
      local which = order[(s - 1 + k) % 3 + 1]
      local t, err
      if which == "raw" then
        t, err = wrk_run("raw_server", raw_start, raw_finish)
      else
        local journal = which == "j" and ("%s/journal-%d"):format(tmp, s) or nil
        t, err = wrk_run("pivday.webhooks", piv_start(journal), piv_finish)
        if t then
          local h, acked = t.fin.handled, t.wrk_ok
          -- wrk stops with up to 64 requests on the wire: the listener
          -- handled those, wrk never counted their answers.
          local good = h and h >= acked and h <= acked + 64 and t.fin.distinct == h
            and t.wrk_non2xx == 0
          if not good then checks_ok = false end
          detail("row 2 %s sample %d: handled=%s distinct=%s acknowledged(wrk 2xx)=%d non2xx=%d errors=%d %s",
            which == "j" and "journal" or "no journal", s, tostring(h), tostring(t.fin.distinct),
            acked, t.wrk_non2xx, t.wrk_errors, good and "ok" or "MISMATCH")
        end
      end
      if not t then
        failed = err
      else
        local r = R[which]
        r.rps[#r.rps + 1], r.cpu[#r.cpu + 1] = t.rps, t.cpu_us
        detail("row 2 %-4s sample %d: rps=%s server cpu=%sus/event", which, s, fmt_num(t.rps),
          fmt_num(t.cpu_us))
      end
    end
  end
  if failed or #R.nj.rps ~= #R.raw.rps or #R.j.rps ~= #R.raw.rps then
    skip_row("2", "listener", failed or "a run failed")
    return
  end
  add_row { row = "2", what = "listener req/s, no journal", piv = R.nj.rps, base = R.raw.rps,
    target = 0.9, dir = ">=", check = checks_ok }
  add_row { row = "2", what = "listener CPU us/event, no journal", piv = R.nj.cpu, base = R.raw.cpu,
    target = 1.5, dir = "<=", check = checks_ok }
  add_row { row = "2", what = "listener req/s, journal", piv = R.j.rps, base = R.raw.rps,
    target = 0.5, dir = ">=", check = checks_ok }
  add_row { row = "2", what = "listener CPU us/event, journal", piv = R.j.cpu, base = R.raw.cpu }
  note("row 2: handled = acknowledged (wrk's 2xx, plus at most the 64 requests on the wire "
    .. "when wrk stops), each event handled once: %s", checks_ok and "yes" or "NO (see details)")
end

-- Row 3: many requests in flight, peak RSS per request ÷ the raw client's.
local function row_memory()
  local pid, port = start_raw_server(("--delay %d"):format(cfg.mem_delay), "slow_server")
  local url = ("http://127.0.0.1:%d/api/v1/account"):format(port)
  local rounds = math.ceil(cfg.mem_n / 256)
  local limit = math.ceil(rounds * cfg.mem_delay / 1000 * 3) + 60
  local piv, raw, complete = {}, {}, true
  for s = 1, cfg.samples do
    local function one_raw()
      local t = run_kv(("%s --url %s --inflight --n %d --max-conn 256"):format(q(BIN .. "/raw_client"),
        q(url), cfg.mem_n), limit, "raw_client --inflight")
      if t then
        raw[#raw + 1] = t.per_req_bytes
        if t.completed ~= cfg.mem_n then complete = false end
        detail("row 3 sample %d raw:    base=%skB peak=%skB per request=%s B completed=%d", s,
          fmt_num(t.rss_base_kb), fmt_num(t.rss_peak_kb), fmt_num(t.per_req_bytes), t.completed)
      end
    end
    local function one_piv()
      local t = run_kv(pivday_cmd("memory.lua", url, cfg.mem_n), limit, "pivday memory")
      if t then
        piv[#piv + 1] = t.per_req_bytes
        if t.completed ~= cfg.mem_n then complete = false end
        detail("row 3 sample %d pivday: base=%skB peak=%skB per request=%s B completed=%d", s,
          fmt_num(t.rss_base_kb), fmt_num(t.rss_peak_kb), fmt_num(t.per_req_bytes), t.completed)
      end
    end
    if s % 2 == 1 then one_raw() one_piv() else one_piv() one_raw() end
  end
  stop(pid)
  local what = ("peak RSS B/request, %d in flight"):format(cfg.mem_n)
  if #piv ~= cfg.samples or #raw ~= cfg.samples then
    skip_row("3", what, "a run failed")
    return
  end
  add_row { row = "3", what = what, piv = piv, base = raw, target = 1.5, dir = "<=", check = complete }
  note("row 3: %d requests held %d ms by raw_server --delay, 256 connections at most (pivday's "
    .. "cap, the raw client set the same); all completed: %s", cfg.mem_n, cfg.mem_delay,
    complete and "yes" or "NO")
end

-- Row 4: `pivday -e ''` ÷ a do-nothing C program with the same libraries.
local function row_startup()
  local piv, raw = {}, {}
  for s = 1, cfg.samples do
    local out = capture(("%s %d %s -- %s -e ''"):format(q(BIN .. "/spawntime"), cfg.start_runs,
      q(BIN .. "/startup"), PIV), 300)
    local a = kv(out:match("cmd=0[^\n]*"))
    local b = kv(out:match("cmd=1[^\n]*"))
    if a.median_us and b.median_us and a.failures == 0 and b.failures == 0 then
      raw[#raw + 1], piv[#piv + 1] = a.median_us, b.median_us
      detail("row 4 sample %d (%d runs each): startup median=%sus p90=%sus; pivday -e '' median=%sus p90=%sus",
        s, cfg.start_runs, fmt_num(a.median_us), fmt_num(a.p90_us), fmt_num(b.median_us), fmt_num(b.p90_us))
    else
      log("spawntime failed: %s", out)
    end
  end
  if #piv == 0 then
    skip_row("4", "start-up wall us", "spawntime failed")
    return
  end
  add_row { row = "4", what = "start-up wall us (pivday -e '')", piv = piv, base = raw,
    target = 1.5, dir = "<=" }
end

-- Row 5: the in-process sandbox, report only.
local function row_sandbox()
  local probe = capture(PIV .. " -e 'assert(require \"pivday.sandbox\")'", 20)
  if probe:find("%S") then
    skip_row("5", "sandbox", "pivday.sandbox does not load: " .. probe:gsub("\n.*", ""))
    return
  end
  local piv = {}
  for s = 1, cfg.samples do
    local t = run_kv(pivday_cmd("sandbox.lua", cfg.sandbox_n, 16), 300, "sandbox")
    if t then
      piv[#piv + 1] = t.rps
      detail("row 5 sample %d: rps=%s p50=%sus p99=%sus cpu=%sus/req errors=%d", s, fmt_num(t.rps),
        fmt_num(t.p50_us), fmt_num(t.p99_us), fmt_num(t.cpu_us), t.errors)
    end
  end
  if #piv == 0 then
    skip_row("5", "sandbox GET /account req/s, C=16", "the run failed")
    return
  end
  add_row { row = "5", what = "sandbox GET /account req/s, C=16", piv = piv }
end

---------------------------------------------------------------------------
-- Main
---------------------------------------------------------------------------

local function machine()
  local cpu = (read_file("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)") or "?"
  local nproc = capture("nproc", 5):gsub("%s+$", "")
  local kernel = capture("uname -r", 5):gsub("%s+$", "")
  local curl = capture("curl --version", 5):match("libcurl/(%S+)") or "?"
  local uv = capture("pkg-config --modversion libuv", 5):gsub("%s+$", "")
  local nginx = capture("nginx -v", 5):match("nginx/(%S+)") or "none"
  local wrk = capture("wrk -v", 5):match("wrk (%S+)") or "none"
  return ("%s, nproc %s, Linux %s; libcurl %s, libuv %s, nginx %s, wrk %s"):format(cpu, nproc,
    kernel, curl, uv, nginx, wrk)
end

local t_start = os.time()
log("%s mode, %d sample(s) per row; temp dir %s", SHORT and "short" or "full", cfg.samples, tmp)
local steps = {
  { 4, row_startup }, { 1, row_client }, { 2, row_webhooks }, { 3, row_memory }, { 5, row_sandbox },
}
local ok, err = pcall(function()
  for _, st in ipairs(steps) do
    if ROWS[st[1]] then
      log("row %d ...", st[1])
      st[2]()
    end
  end
end)
stop_all()
os.execute("rm -rf " .. q(tmp))
if not ok then
  io.stderr:write("bench: ", tostring(err), "\n")
  os.exit(1)
end
for i, r in ipairs(rows) do r.seq = i end
table.sort(rows, function(a, b)
  if a.row ~= b.row then return a.row < b.row end
  return a.seq < b.seq
end)

local when = os.date("!%Y-%m-%d %H:%M UTC")
local mach = machine()
local head = ("pivday bench, %s, %s mode (%d sample(s) per row, interleaved), %d s\n%s"):format(
  when, SHORT and "short" or "full", cfg.samples, os.time() - t_start, mach)
print(head)
print()
print(text_table())
print()
for _, n in ipairs(notes) do print("- " .. n) end

local md = { "# pivday bench results", "",
  ("Written by `make bench%s` on %s."):format(SHORT and " BENCH_SHORT=1" or "", when), "",
  "Machine: " .. mach, "",
  ("Each row: the median of %d interleaved sample(s); ratio = pivday ÷ baseline, per sample, "
    .. "median; spread = the lowest and highest per-sample ratio."):format(cfg.samples), "",
  md_table(), "" }
for _, n in ipairs(notes) do md[#md + 1] = "- " .. n end
md[#md + 1] = ""
md[#md + 1] = "## Samples"
md[#md + 1] = ""
md[#md + 1] = "```"
for _, d in ipairs(details) do md[#md + 1] = d end
md[#md + 1] = "```"
md[#md + 1] = ""
local f = io.open(RESULTS, "w")
if f then
  f:write(table.concat(md, "\n"))
  f:close()
  log("figures written to %s", RESULTS)
end
