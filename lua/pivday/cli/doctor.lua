--- pivday doctor: checks what a pivday setup depends on, one line each.
--
--   pivday doctor [--listener URL] [--contract] [--timeout S]
--   pivday --sandbox doctor [--contract]
--
-- Each check prints `ok`, `warn` or `fail` and one line of explanation; the
-- exit code is 0 when nothing failed, 1 otherwise, 2 on a usage error.
-- Checks: the API key (where it comes from, never its value), the base URL
-- (GET /account: status and latency), the key's acceptance, clock skew
-- (the server's Date header), the local webhook listener, the JSON
-- library's behaviour and library versions. `--contract` also compares
-- the shapes of read-only answers of the service with those of an
-- in-process sandbox, to catch drift of the real API.
local cli = require "pivday.cli"
local json = require "pivday.json"

local M = {}

M.EXIT = { ok = 0, fail = 1, usage = 2 }

local HELP = [[
usage: pivday doctor [--listener URL] [--contract] [--timeout S]
       pivday --sandbox doctor [--contract]

Checks a pivday setup; each line reads ok, warn or fail and says why.
  key        where the API key comes from (PIVDAY_API_KEY or
             ~/.config/pivday/key and its mode); the key is never printed
  base_url   GET /account on PIVDAY_BASE_URL (or the default): status, ms
  auth       whether the service accepts the key
  clock      skew between this machine and the server's Date header
  listener   what answers on the webhook listener's address
  json       integers decode as integers, [] survives a round trip
  versions   pivday, Lua, lua-cjson, libcurl and libuv

  --listener URL   the listener to probe (default http://127.0.0.1:8787)
  --contract       also call the read-only methods (account.get,
                   numbers.countries, numbers.list, proxy.servers,
                   proxy.orders, domains.search, domains.list, whites.tiers,
                   whites.list) and compare the shapes of the answers (keys
                   and JSON types) with an in-process sandbox's
  --timeout S      seconds per request (default 10)

exit codes: 0 no check failed, 1 a check failed, 2 usage
]]

M.DEFAULT_LISTENER = "http://127.0.0.1:8787"

-- The read-only calls --contract makes, with their arguments.
M.CONTRACT_CALLS = {
  { "account.get" },
  { "numbers.countries" },
  { "numbers.list", { limit = 5 } },
  { "proxy.servers" },
  { "proxy.orders", { limit = 5 } },
  { "domains.search", { q = "example.com" } },
  { "domains.list", { limit = 5 } },
  { "whites.tiers" },
  { "whites.list", { limit = 5 } },
}

local SLOW_MS = 2000      -- latency above which base_url warns
local SKEW_OK = 5         -- seconds of clock skew that are fine
local SKEW_FAIL = 300     -- seconds of clock skew that fail

---------------------------------------------------------------------------
-- Output
---------------------------------------------------------------------------

local Report = {}
Report.__index = Report

local function new_report(out)
  return setmetatable({ out = out, counts = { ok = 0, warn = 0, fail = 0 } }, Report)
end

--- Prints one check: status (ok|warn|fail), its name and one line.
function Report:add(status, name, msg)
  self.counts[status] = self.counts[status] + 1
  msg = tostring(msg):gsub("[\r\n]+", " ")
  self.out:write(("%-4s  %-9s %s\n"):format(status, name, msg))
  self.out:flush()
end

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

-- The same lookup as the client's, so doctor checks the file it would use.
local key_file_path = require("pivday.client").key_file_path

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Epoch seconds of an HTTP-date ("Sun, 06 Nov 1994 08:49:37 GMT"), or nil.
function M.parse_http_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, hms = s:match("^%a+,%s*(%d%d?)%s+(%a%a%a)%s+(%d%d%d%d)%s+(%d%d:%d%d:%d%d)%s+GMT")
  if not d or not MONTHS[mon] then return nil end
  return (require("pivday.time").parse(("%s-%02d-%02dT%sZ"):format(y, MONTHS[mon], tonumber(d), hms)))
end

-- "http://127.0.0.1:8787/hooks/x" -> scheme, host, port, path (or nil).
local function split_url(url)
  local scheme, hostport, path = url:match("^(%a[%w+.-]*)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  scheme = scheme:lower()
  local host, port = hostport:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = hostport:match("^%[(.+)%]$"), nil end
  if not host then host, port = hostport:match("^([^:]+):(%d+)$") end
  if not host then host = hostport end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  return scheme, host, port, path
end

local function ms(seconds) return math.floor(seconds * 1000 + 0.5) end

---------------------------------------------------------------------------
-- Checks. Each takes the context and adds lines to ctx.report.
---------------------------------------------------------------------------

--- The key: its source and, for the file, its mode. Sets ctx.have_key.
function M.check_key(ctx)
  local r = ctx.report
  if ctx.sandbox then
    ctx.have_key = true
    r:add("ok", "key", "the in-process sandbox's key (--sandbox ignores PIVDAY_API_KEY and the key file)")
    return
  end
  local path = key_file_path()
  local env = os.getenv("PIVDAY_API_KEY")
  if env and env ~= "" then
    ctx.have_key = true
    local f = path and io.open(path, "r")
    if f then f:close() end
    r:add("ok", "key", "from PIVDAY_API_KEY (not shown)"
      .. (f and ("; it takes precedence over " .. path) or ""))
    return
  end
  local f = path and io.open(path, "r")
  if not f then
    r:add("fail", "key", ("no key: set PIVDAY_API_KEY or write it to %s (chmod 600)")
      :format(path or "~/.config/pivday/key"))
    return
  end
  local key = f:read("a") or ""
  f:close()
  local mode = require("pivday.core").stat_mode(path)
  if not mode then
    r:add("fail", "key", ("%s: cannot read its permissions, so the client refuses it"):format(path))
  elseif mode & 0x3F ~= 0 then -- any group/other bit (077)
    r:add("fail", "key", ("%s has mode %o: readable by others, the client refuses it; run chmod 600 %s")
      :format(path, mode, path))
  elseif not key:find("%S") then
    r:add("fail", "key", path .. " is empty")
  else
    ctx.have_key = true
    r:add("ok", "key", ("from %s (mode %o; not shown)"):format(path, mode))
  end
end

--- GET /account with the client: reachability, latency, then the key.
-- Leaves the HTTP answer (if any) in ctx.res for the clock check.
function M.check_base_url(ctx)
  local pivday = require "pivday"
  local r = ctx.report
  local function capture(req)
    local t0 = pivday.now()
    local res, err = pivday.http.request(req)
    ctx.elapsed = pivday.now() - t0
    ctx.res = res
    ctx.local_time = os.time()
    return res, err
  end
  local api = pivday.client{ timeout = ctx.timeout, connect_timeout = ctx.timeout,
    max_retries = 0, transport = capture }
  ctx.api = api
  local base = api.base_url
  local mode = ctx.sandbox and "SANDBOX" or "LIVE"
  local result, err
  if ctx.have_key then
    result, err = api.account.get()
  else
    -- No key: still find out whether the service answers.
    local res, terr = capture { method = "GET", url = base .. "/account",
      timeout = ctx.timeout, connect_timeout = ctx.timeout }
    if not res then err = terr end
  end
  local res = ctx.res
  if not res then
    r:add("fail", "base_url", ("%s %s: no answer: %s"):format(mode, base, tostring(err)))
    r:add("warn", "auth", "not checked: the service did not answer")
    return
  end
  local what = ("%s %s: GET /account answered %d in %d ms"):format(mode, base, res.status, ms(ctx.elapsed))
  if res.status >= 500 then
    r:add("warn", "base_url", what .. " (a server error)")
  elseif ms(ctx.elapsed) > SLOW_MS then
    r:add("warn", "base_url", what .. " (slow)")
  else
    r:add("ok", "base_url", what)
  end
  if not ctx.have_key then
    r:add("warn", "auth", "not checked: no key")
  elseif result then
    r:add("ok", "auth", "the key is accepted (account.get succeeded)")
  elseif err.kind == "api" and (err.status == 401 or err.status == 403) then
    r:add("fail", "auth", "the key is refused: " .. tostring(err))
  else
    r:add("fail", "auth", "account.get failed: " .. tostring(err))
  end
end

--- Clock skew: the Date header of the /account answer against os.time().
function M.check_clock(ctx)
  local r = ctx.report
  local res = ctx.res
  if not res then
    r:add("warn", "clock", "not checked: the service did not answer")
    return
  end
  local date = res.headers and res.headers["date"]
  local server = M.parse_http_date(date)
  if not server then
    r:add("warn", "clock", date and ("cannot read the server's Date header %q"):format(date)
      or "not checked: the server sent no Date header")
    return
  end
  -- Date has whole seconds, so a skew of a second or two is only rounding.
  local skew = os.difftime(ctx.local_time, server)
  local text = ("this machine is %d s %s the server (Date: %s)"):format(
    math.abs(skew), skew >= 0 and "ahead of" or "behind", date)
  if math.abs(skew) <= SKEW_OK then
    r:add("ok", "clock", text)
  elseif math.abs(skew) < SKEW_FAIL then
    r:add("warn", "clock", text .. "; event times and --since filters will be off")
  else
    r:add("fail", "clock", text .. "; fix the system clock (NTP)")
  end
end

-- What an HTTP answer says: "HTTP/1.1 404 Not Found (not found)".
local function describe_answer(raw)
  local status_line = raw:match("^(HTTP/%S+ %d%d%d[^\r\n]*)")
  if not status_line then return nil end
  local body = raw:match("\r\n\r\n(.*)$") or ""
  body = body:match("^%s*([^\r\n]*)") or ""
  if #body > 60 then body = body:sub(1, 60) .. "..." end
  local server = raw:match("\r\n[Ss]erver:%s*([^\r\n]+)")
  local s = status_line
  if server then s = s .. ", server " .. server end
  if body ~= "" then s = s .. (" (%s)"):format(body) end
  return s, tonumber(status_line:match("^HTTP/%S+ (%d%d%d)"))
end

--- The webhook listener: connects to its address and says what answers.
-- Nothing listening is a warning: a listener runs only while a script or
-- `pivday listen` does.
function M.check_listener(ctx)
  local pivday = require "pivday"
  local r = ctx.report
  local url = ctx.listener
  local scheme, host, port, path = split_url(url)
  if not scheme or (scheme ~= "http" and scheme ~= "https") then
    r:add("fail", "listener", ("%q is not an http:// or https:// URL"):format(url))
    return
  end
  local ip = host == "localhost" and "127.0.0.1" or host
  local is_ip = ip:match("^%d+%.%d+%.%d+%.%d+$") or ip:find(":", 1, true)
  local where = ("%s:%d"):format(host, port)
  local hint = "start `pivday listen` or a script with --port to receive webhooks"
  if not is_ip or scheme == "https" then
    -- A name or TLS: let libcurl resolve and speak it.
    local res, err = pivday.http.request { method = "GET", url = url,
      timeout = ctx.timeout, connect_timeout = ctx.timeout }
    if res then
      r:add("ok", "listener", ("%s answers HTTP %d"):format(url, res.status))
    else
      r:add("warn", "listener", ("%s: %s; %s"):format(url, tostring(err), hint))
    end
    return
  end
  local conn, err = require("pivday.tcp").connect(ip, port, math.min(ctx.timeout, 3))
  if not conn then
    r:add("warn", "listener", ("nothing accepts connections on %s (%s); %s")
      :format(where, err and err.code or "refused", hint))
    return
  end
  conn:send(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pivday-doctor\r\nConnection: close\r\n\r\n")
    :format(path, where))
  local raw = conn:read_all(math.min(ctx.timeout, 3))
  conn:close()
  local answer, status = describe_answer(raw)
  if not answer then
    r:add("warn", "listener", ("%s accepts connections but does not answer HTTP"):format(where))
  elseif status == 405 and raw:find("webhooks are POSTed", 1, true) then
    r:add("ok", "listener", ("%s is a pivday listener and this is its webhook path (%s)"):format(where, answer))
  elseif status == 404 and raw:find("\r\n\r\nnot found", 1, true) then
    r:add("ok", "listener", ("%s answers %s: a pivday listener answers so outside its secret path"
      .. " (give --listener the URL it printed to check the path)"):format(where, answer))
  else
    r:add("ok", "listener", ("%s answers %s"):format(where, answer))
  end
end

--- The JSON layer: integers, floats, [] and null.
function M.check_json(ctx)
  local r = ctx.report
  local problems = {}
  local ok, err = pcall(function()
    local v = json.decode('{"n":12,"f":2.5,"l":[],"z":null,"b":9007199254740993}')
    if math.type(v.n) ~= "integer" then problems[#problems + 1] = "12 decodes as a float" end
    if math.type(v.f) ~= "float" or v.f ~= 2.5 then problems[#problems + 1] = "2.5 does not decode as 2.5" end
    if v.z ~= json.null then problems[#problems + 1] = "null does not decode as pivday.json.null" end
    if json.encode(json.array{}) ~= "[]" then problems[#problems + 1] = "json.array{} does not encode as []" end
    if type(v.l) ~= "table" or next(v.l) ~= nil or json.encode(json.array(v.l)) ~= "[]" then
      problems[#problems + 1] = "[] does not round-trip through json.array"
    end
    if json.encode({ 9007199254740993 }) ~= "[9007199254740993]" then
      problems[#problems + 1] = "large integers are not encoded exactly"
    end
  end)
  if not ok then problems[#problems + 1] = "raised: " .. tostring(err) end
  if #problems > 0 then
    r:add("fail", "json", table.concat(problems, "; "))
  else
    r:add("ok", "json", "integers decode as integers, [] round-trips through json.array, null is json.null")
  end
end

-- First line of a command's output, or nil.
local function first_line(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local s = p:read("a") or ""
  p:close()
  s = s:gsub("%s+$", "")
  return s ~= "" and s or nil
end

--- Versions: pivday, Lua, lua-cjson; libcurl and libuv from pkg-config.
function M.check_versions(ctx)
  local r = ctx.report
  local pivday = require "pivday"
  local cjson_ok, cjson = pcall(require, "cjson")
  local parts = {
    "pivday " .. tostring(pivday.version),
    _VERSION,
    "lua-cjson " .. (cjson_ok and tostring(cjson._VERSION) or "missing"),
  }
  local curl = first_line("pkg-config --modversion libcurl")
  local uv = first_line("pkg-config --modversion libuv")
  parts[#parts + 1] = "libcurl " .. (curl or "?")
  parts[#parts + 1] = "libuv " .. (uv or "?")
  local note = (curl and uv) and " (libcurl/libuv: installed development files)"
    or " (libcurl/libuv unknown: pkg-config has no answer)"
  r:add(cjson_ok and "ok" or "fail", "versions", table.concat(parts, ", ") .. note)
end

---------------------------------------------------------------------------
-- Contract: shapes of live answers vs the sandbox's
---------------------------------------------------------------------------

local function is_sequence(t)
  local n = #t
  if n == 0 then return false end
  for k in next, t do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local merge

--- The shape of a decoded JSON value: "string", "number", "boolean",
-- "null", "empty" (an empty table: [] or {}), {array = item shape} or
-- {object = {key = shape}}. Integers and floats are both "number"; the
-- items of a list are merged (the union of their keys).
function M.shape(v)
  local t = type(v)
  if v == nil or v == json.null then return "null" end
  if t == "number" or t == "string" or t == "boolean" then return t end
  if t ~= "table" then return t end
  if next(v) == nil then return "empty" end
  if is_sequence(v) then
    local item
    for _, x in ipairs(v) do item = merge(item, M.shape(x)) end
    return { array = item }
  end
  local fields = {}
  for k, x in pairs(v) do fields[tostring(k)] = M.shape(x) end
  return { object = fields }
end

local function kind(s)
  if type(s) == "string" then return s end
  if s.array then return "array" end
  if s.object then return "object" end
  return "mixed"
end

-- Union of two shapes (for the items of one list).
function merge(a, b)
  if a == nil then return b end
  if b == nil then return a end
  local ka, kb = kind(a), kind(b)
  if ka == "empty" and (kb == "array" or kb == "object") then return b end
  if kb == "empty" and (ka == "array" or ka == "object") then return a end
  if ka == "null" then return b end  -- an optional value
  if kb == "null" then return a end
  if ka ~= kb then return { mixed = { [ka] = true, [kb] = true } } end
  if ka == "array" then return { array = merge(a.array, b.array) } end
  if ka == "object" then
    local fields = {}
    for k, s in pairs(a.object) do fields[k] = s end
    for k, s in pairs(b.object) do fields[k] = merge(fields[k], s) end
    return { object = fields }
  end
  return a
end

local function kind_text(s)
  local k = kind(s)
  if k == "mixed" then
    local ks = {}
    for x in pairs(s.mixed) do ks[#ks + 1] = x end
    table.sort(ks)
    return table.concat(ks, "|")
  end
  return k
end

--- Differences between a live shape and the sandbox's, as strings such as
-- "numbers[].status: live string, sandbox number", "data.x: only live".
function M.diff(live, ref, path, out)
  out = out or {}
  path = path or "$"
  local kl, kr = kind(live), kind(ref)
  -- A null, or an empty table against a list or an object, says nothing
  -- about the other side.
  if kl == "null" or kr == "null" then return out end
  local composite = { array = true, object = true, empty = true }
  if (kl == "empty" and composite[kr]) or (kr == "empty" and composite[kl]) then return out end
  if kl ~= kr then
    out[#out + 1] = ("%s: live %s, sandbox %s"):format(path, kind_text(live), kind_text(ref))
    return out
  end
  if kl == "array" then
    if live.array and ref.array then M.diff(live.array, ref.array, path .. "[]", out) end
  elseif kl == "object" then
    local keys = {}
    for k in pairs(live.object) do keys[k] = true end
    for k in pairs(ref.object) do keys[k] = true end
    local sorted = {}
    for k in pairs(keys) do sorted[#sorted + 1] = k end
    table.sort(sorted)
    for _, k in ipairs(sorted) do
      local p = path == "$" and k or (path .. "." .. k)
      local a, b = live.object[k], ref.object[k]
      if a == nil then
        out[#out + 1] = p .. ": only in the sandbox"
      elseif b == nil then
        out[#out + 1] = p .. ": only live"
      else
        M.diff(a, b, p, out)
      end
    end
  end
  return out
end

local function call(api, id, args)
  local section, name = id:match("^([^.]+)%.(.+)$")
  return api[section][name](args)
end

--- Calls each read-only method on both clients and reports drift.
function M.check_contract(ctx)
  local pivday = require "pivday"
  local r = ctx.report
  local live = ctx.api
  local ref_sb, ref
  if ctx.sandbox then
    -- `pivday --sandbox doctor`: the sandbox against itself.
    ref = live
  else
    local err
    ref_sb, err = require("pivday.sandbox").new {}
    if not ref_sb then
      r:add("fail", "contract", "cannot start the reference sandbox: " .. tostring(err))
      return
    end
    ref = pivday.client { base_url = ref_sb.base_url, api_key = ref_sb.api_key,
      timeout = ctx.timeout, max_retries = 0 }
  end
  local drifted = 0
  for _, c in ipairs(M.CONTRACT_CALLS) do
    local id, args = c[1], c[2]
    local a, aerr = call(live, id, args)
    local b, berr = call(ref, id, args)
    if a == nil then
      r:add("fail", "contract", ("%s: live call failed: %s"):format(id, tostring(aerr)))
    elseif b == nil then
      r:add("warn", "contract", ("%s: sandbox call failed: %s"):format(id, tostring(berr)))
    else
      local d = M.diff(M.shape(a), M.shape(b))
      if #d == 0 then
        r:add("ok", "contract", id .. ": same shape as the sandbox")
      else
        drifted = drifted + 1
        local shown = {}
        for i = 1, math.min(#d, 5) do shown[i] = d[i] end
        r:add("fail", "contract", ("%s: drift (%d): %s%s"):format(id, #d, table.concat(shown, "; "),
          #d > 5 and "; ..." or ""))
      end
    end
  end
  if ref_sb then ref_sb:close() end
  ctx.drifted = drifted
end

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------

--- Runs the checks; returns the exit code.
function M.run(opts)
  opts = opts or {}
  local out = opts.out or io.stdout
  local ctx = {
    report = new_report(out),
    sandbox = opts.sandbox,
    listener = opts.listener or M.DEFAULT_LISTENER,
    timeout = opts.timeout or 10,
  }
  M.check_key(ctx)
  M.check_base_url(ctx)
  M.check_clock(ctx)
  M.check_listener(ctx)
  M.check_json(ctx)
  M.check_versions(ctx)
  if opts.contract then M.check_contract(ctx) end
  local n = ctx.report.counts
  out:write(("%d ok, %d warn, %d fail\n"):format(n.ok, n.warn, n.fail))
  return n.fail > 0 and M.EXIT.fail or M.EXIT.ok
end

function M.main(argv)
  local opts, rest = cli.parse(argv, { listener = "value", contract = "flag",
    timeout = "value", help = "flag" })
  if not opts then
    io.stderr:write("pivday doctor: ", rest, "\n")
    return M.EXIT.usage
  end
  if opts.help then
    io.stdout:write(HELP)
    return 0
  end
  if #rest > 0 then
    io.stderr:write("pivday doctor: unexpected argument ", rest[1], " (pivday doctor --help)\n")
    return M.EXIT.usage
  end
  local timeout = 10
  if opts.timeout then
    timeout = tonumber(opts.timeout)
    if not timeout or timeout <= 0 then
      io.stderr:write("pivday doctor: --timeout takes a positive number of seconds\n")
      return M.EXIT.usage
    end
  end
  return M.run { listener = opts.listener, contract = opts.contract, timeout = timeout,
    sandbox = cli.sandbox_instance ~= nil }
end

return M
