--- pivday.client: the piv.day API as Lua calls.
--
--     local api = pivday.client{ api_key = "...", debug = true }
--     local n = assert(api.numbers.purchase{country_code = "SE", duration_months = 1, auto_renew = false})
--     for msg in api.numbers.each_sms(n.numbers[1].piv_num_id) do print(msg.message_body) end
--
-- One method per endpoint of pivday.catalogue, named by its id: path
-- parameters come first, positional, then one table (the JSON body, or the
-- query for GET). A method returns the payload, or nil and a pivday.Error.
--
-- What this module owns: the API key, the envelope (QUIRKS 1-3), the mapping
-- of answers to errors, retries that never re-send a charge, the client's
-- concurrency limit, the host-wide 429 pause, pagination and debug logging.
-- The HTTP transport is a function (default pivday.http.request), so tests
-- and the sandbox can put anything behind it.
local catalogue = require "pivday.catalogue"
local json = require "pivday.json"
local Error = require "pivday.error"
local paginate = require "pivday.paginate"

local M = {}

--- Defaults the host may set before clients are made (`pivday --sandbox`
-- points them at its in-process sandbox): `base_url` and `api_key` take
-- precedence over the environment, and with `locked = true` over the
-- options too, so a sandbox run can never reach the live service.
M.defaults = {}

local VERSION = "0.1"
local USER_AGENT = "pivday-lua/" .. VERSION

local DEFAULTS = {
  timeout = 30,          -- seconds, one attempt
  connect_timeout = 10,  -- seconds, one connection set-up
  deadline = nil,        -- seconds, the whole call (nil: only max_retries bounds it)
  max_retries = 3,       -- retries after the first attempt
  concurrency = 16,      -- requests in flight per client; the rest queue
  retry_after_cap = 60,  -- longest Retry-After we honour, in seconds
  backoff_base = 0.25,   -- first backoff delay, doubled per retry
  backoff_max = 8,       -- longest backoff delay
}

local null = json.null
local mtype, tointeger, floor = math.type, math.tointeger, math.floor

-- Transport codes that mean no connection was made, so nothing was sent.
-- Used only when the transport does not say (err.sent == nil).
local NOT_SENT = {
  COULDNT_RESOLVE_HOST = true, COULDNT_RESOLVE_PROXY = true,
  COULDNT_CONNECT = true, UNSUPPORTED_PROTOCOL = true, URL_MALFORMAT = true,
}

-- Methods whose repetition has the same effect as one call.
local IDEMPOTENT = { GET = true, PUT = true, DELETE = true, PATCH = true, HEAD = true }

-- API codes that mean "the same call may succeed later" without being
-- worth an automatic retry (a white page takes minutes to generate).
local RETRY_LATER = { NOT_READY = true }

-- Per-host pause after a 429, shared by every client in the process: one
-- 429 must not turn into a burst of them (key: "scheme://host[:port]").
local holds = {}

-- Request facts of the latest returned payloads, for M.meta: a ring of
-- META_KEEP (payload, facts) pairs, strong and bounded. A weak-keyed table
-- (facts for as long as the payload lives) made the collector treat every
-- payload as an ephemeron: ~7,000 instructions per call, as much as
-- libcurl's own work on a keep-alive GET. The ring holds at most
-- META_KEEP payloads alive; M.meta of an older one is nil.
local META_KEEP = 256
local meta_keys, meta_vals, meta_at = {}, {}, 0

local function remember_meta(payload, m)
  local i = meta_at + 1
  if i > META_KEEP then i = 1 end
  meta_at = i
  meta_keys[i], meta_vals[i] = payload, m
end

-- The ring slot of payload, newest first, or nil.
local function meta_slot(payload)
  local i = meta_at
  for _ = 1, META_KEEP do
    if meta_keys[i] == payload then return i end
    i = i - 1
    if i < 1 then i = META_KEEP end
  end
  return nil
end

-- Private state of each client (the key lives here, not in the object, so
-- no printer or traceback of the object can show it).
local private = setmetatable({}, { __mode = "k" })

---------------------------------------------------------------------------
-- Small helpers
---------------------------------------------------------------------------

local function is_sequence(t)
  local n = #t
  for k in next, t do
    if mtype(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

-- JSON null -> missing field, recursively. A null inside a list stays
-- json.null: removing it would leave a hole and break `#` and ipairs, and
-- the position may matter (the API documents no such list anyway).
local function lua_strip_nulls(v)
  if type(v) ~= "table" then return v end
  local k1 = next(v)
  local is_list = mtype(k1) == "integer" -- cjson gives objects string keys only
  for k, x in next, v do
    if x == null then
      if not is_list then v[k] = nil end
    elseif type(x) == "table" then
      lua_strip_nulls(x)
    end
  end
  return v
end

-- The same walk in C when pivday.core is there (cheaper than `next` from Lua).
local strip_nulls = lua_strip_nulls
do
  local ok, core = pcall(require, "pivday.core")
  local c_strip = ok and type(core) == "table" and core.json_strip_nulls
  if c_strip then strip_nulls = function(v) return c_strip(v, null) end end
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- Seconds from a Retry-After value: delta-seconds or an HTTP-date.
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
local function parse_retry_after(v)
  if v == nil then return nil end
  v = tostring(v)
  local secs = tonumber(v:match("^%s*(%d+%.?%d*)%s*$"))
  if secs then return secs end
  local d, mon, y, hms = v:match("^%a+,%s*(%d%d?)%s+(%a%a%a)%s+(%d%d%d%d)%s+(%d%d:%d%d:%d%d)%s+GMT")
  if d and MONTHS[mon] then
    local at = require("pivday.time").parse(("%s-%02d-%02dT%sZ"):format(y, MONTHS[mon], tonumber(d), hms))
    if at then return math.max(0, at - os.time()) end
  end
  return nil
end

local function host_of(url)
  return url:match("^(%a[%w+.-]*://[^/?#]+)") or url
end

---------------------------------------------------------------------------
-- Local validation (from the catalogue's field descriptions)
---------------------------------------------------------------------------

local function json_type(v)
  local t = type(v)
  if v == null then return "null" end
  if t == "number" then
    return (mtype(v) == "integer" or v == floor(v)) and "integer" or "number"
  end
  if t == "table" then
    if next(v) == nil then return json.is_array(v) and "array" or "empty" end
    return is_sequence(v) and "array" or "object"
  end
  return t
end

local function type_ok(want, got)
  if want == got then return true end
  if got == "empty" then return want == "array" or want == "object" end
  if want == "number" then return got == "integer" end
  return false
end

local function a_an(word)
  return (word:match("^[aeiou]") and "an " or "a ") .. word
end

local function describe(v)
  if type(v) == "string" then return ("%q"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
  return tostring(v)
end

-- Checks one value against a field description; returns a message or nil.
local function check_value(f, v)
  local got = json_type(v)
  if not type_ok(f.type, got) then
    return ("%s must be %s, got %s"):format(f.name, a_an(f.type), got == "empty" and "table" or got)
  end
  if f.type == "array" then
    if f.min_items and #v < f.min_items then
      return ("%s needs at least %d items, got %d"):format(f.name, f.min_items, #v)
    end
    if f.items then
      for i, x in ipairs(v) do
        local gi = json_type(x)
        if not type_ok(f.items, gi) then
          return ("%s[%d] must be %s, got %s"):format(f.name, i, a_an(f.items),
            gi == "empty" and "table" or gi)
        end
      end
    end
  end
  if f.min and v < f.min then return ("%s must be at least %s, got %s"):format(f.name, f.min, v) end
  if f.max and type(v) == "number" and v > f.max then
    return ("%s must be at most %s, got %s"):format(f.name, f.max, v)
  end
  if type(v) == "string" and (f.min_length or f.max_length) then
    local len = utf8.len(v) or #v
    if f.min_length and len < f.min_length then
      return ("%s must be at least %d characters, got %d"):format(f.name, f.min_length, len)
    end
    if f.max_length and len > f.max_length then
      return ("%s must be at most %d characters, got %d"):format(f.name, f.max_length, len)
    end
  end
  if f.enum then
    for _, e in ipairs(f.enum) do
      if e == v then return nil end
    end
    return ("%s must be one of %s, got %s"):format(f.name, table.concat(f.enum, ", "), describe(v))
  end
  return nil
end

-- True when every `{field = value}` of cond holds in t.
local function holds_in(t, cond)
  for k, want in pairs(cond) do
    if t[k] ~= want then return false end
  end
  return true
end

local function cond_text(cond)
  local parts = {}
  for k, v in pairs(cond) do parts[#parts + 1] = ("%s = %s"):format(k, tostring(v)) end
  table.sort(parts)
  return table.concat(parts, " and ")
end

-- Validates `t` against a list of field descriptions. Returns nil, or a
-- message and the offending field name. `strict` also refuses fields the
-- catalogue does not list.
local function validate(fields, t, strict)
  local known = {}
  for _, f in ipairs(fields) do
    known[f.name] = true
    local v = t[f.name]
    if v == nil then
      if f.required == true then
        return ("%s is required"):format(f.name), f.name
      elseif f.required_when and holds_in(t, f.required_when) then
        return ("%s is required when %s"):format(f.name, cond_text(f.required_when)), f.name
      end
    else
      if f.forbidden_when and holds_in(t, f.forbidden_when) then
        return ("%s must not be sent when %s"):format(f.name, cond_text(f.forbidden_when)), f.name
      end
      if f.only_when and not holds_in(t, f.only_when) then
        return ("%s is only allowed when %s"):format(f.name, cond_text(f.only_when)), f.name
      end
      local msg = check_value(f, v)
      if msg then return msg, f.name end
    end
  end
  if strict then
    for k in pairs(t) do
      if not known[k] then
        local names = {}
        for _, f in ipairs(fields) do names[#names + 1] = f.name end
        return ("unknown field %s (known: %s)"):format(describe(k),
          #names > 0 and table.concat(names, ", ") or "none"), k
      end
    end
  end
  return nil
end

-- The JSON body to send: a copy, with documented lists marked so that an
-- empty one encodes as [] (the caller's tables are left untouched).
local function build_body(ep, args)
  local body = {}
  local arrays = {}
  for _, f in ipairs(ep.body) do
    if f.type == "array" then arrays[f.name] = true end
  end
  for k, v in pairs(args) do
    if arrays[k] and type(v) == "table" and not json.is_array(v) then
      local copy = json.array()
      for i = 1, #v do copy[i] = v[i] end
      v = copy
    end
    body[k] = v
  end
  return body
end

-- The query string, names sorted so requests are reproducible; booleans go
-- as "true"/"false" (QUIRKS 10: the domain filters are strings).
local function build_query(args)
  local names = {}
  for k in pairs(args) do names[#names + 1] = k end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do
    local v = args[k]
    if mtype(v) == "float" and v == floor(v) then v = tointeger(v) end
    parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(tostring(v))
  end
  return table.concat(parts, "&")
end

-- Validates query parameters; returns nil, or a message and the field.
-- Values travel as text in the URL: a boolean given for a "true"/"false"
-- string filter (QUIRKS 10) counts as that string.
local function check_query(ep, args, strict)
  local view = {}
  for k, v in pairs(args) do
    local t = type(v)
    if t == "boolean" then
      v = tostring(v)
    elseif t ~= "string" and t ~= "number" then
      return ("query parameter %s must be a string or number, got %s"):format(
        describe(k), v == null and "null" or t), k
    end
    view[k] = v
  end
  return validate(ep.query, view, strict)
end

---------------------------------------------------------------------------
-- Runtime (transport, clock, sleep, condition variables)
---------------------------------------------------------------------------

-- pivday.http and its prepared requests, loaded with the first default
-- runtime (custom transports do without).
local http, send_prepared, meta_of

-- The runtime is looked up on first use: pivday's init.lua requires this
-- module while it is itself loading.
local function runtime(st)
  local rt = st.rt
  if rt.ready then return rt end
  local need = not (rt.request and rt.now and rt.sleep and rt.cond)
  -- Without a transport of its own, the client sends through pivday.http's
  -- prepared requests (see prepare).
  rt.default = rt.request == nil
  if rt.default and not http then
    http = require "pivday.http"
    send_prepared, meta_of = http.send_prepared, http.meta_of
    http.set_envelope { flag = "success", member = "data", list_mt = getmetatable(json.array()) }
  end
  if need then
    local pivday = require "pivday"
    rt.now = rt.now or pivday.now
    rt.sleep = rt.sleep or pivday.sleep
    rt.cond = rt.cond or require("pivday.async").cond
  end
  rt.ready = true
  return rt
end

-- A counting semaphore with a FIFO queue of waiters. A released slot is
-- handed straight to the oldest waiter (no barging, so a queued call cannot
-- starve); each waiter sleeps on its own condition variable, so a waiter
-- that times out or is cancelled leaves no stale signal behind. acquire()
-- returns the semaphore itself as the to-be-closed slot (its __close
-- releases one slot), so the slot comes back even when the call raises or
-- its task is cancelled, and taking a free slot allocates nothing. Each
-- acquire is closed (or released) exactly once.
local Semaphore = {}
Semaphore.__index = Semaphore

local function new_semaphore(limit)
  return setmetatable({ limit = limit, used = 0, queue = {} }, Semaphore)
end

local function release(sem)
  local waiter = sem.queue[1] and table.remove(sem.queue, 1)
  if waiter then
    waiter.granted = true -- the slot changes hands; `used` stays the same
    waiter.cond:signal()
  else
    sem.used = sem.used - 1
  end
end

local function unqueue(sem, waiter)
  for i, w in ipairs(sem.queue) do
    if w == waiter then table.remove(sem.queue, i) return end
  end
end

Semaphore.__close = release

-- Waits for a free slot until `deadline` (monotonic, nil: forever).
-- Returns the slot, or nil when the deadline passed first.
function Semaphore:acquire(rt, deadline)
  if self.used < self.limit and self.queue[1] == nil then
    self.used = self.used + 1
    return self
  end
  local waiter = { cond = rt.cond() }
  self.queue[#self.queue + 1] = waiter
  while not waiter.granted do
    local left = deadline and deadline - rt.now()
    if left and left <= 0 then break end
    local ok, err = pcall(waiter.cond.wait, waiter.cond, left)
    if not ok then -- cancelled while queued
      if waiter.granted then release(self) else unqueue(self, waiter) end
      error(err, 0)
    end
  end
  if waiter.granted then return self end
  unqueue(self, waiter)
  return nil
end

---------------------------------------------------------------------------
-- API key
---------------------------------------------------------------------------

--- Where the key file is looked for: $XDG_CONFIG_HOME/pivday/key, else
-- ~/.config/pivday/key (nil without a home).
local function key_file_path()
  local base = os.getenv("XDG_CONFIG_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.config"
  end
  return base .. "/pivday/key"
end

-- Permission bits of a file (an integer such as 384 = 0600), or nil.
local function file_mode(path)
  return (require("pivday.core").stat_mode(path))
end

-- Returns the key, or nil and an Error.
local function resolve_key(st)
  if st.key then return st.key end
  if st.opt_key then st.key = st.opt_key; return st.key end
  local env = os.getenv("PIVDAY_API_KEY")
  if env and env ~= "" then st.key = env; return st.key end
  local path = key_file_path()
  local f = path and io.open(path, "r")
  if not f then
    return nil, Error.new {
      kind = "local", code = "MISSING_API_KEY", retryable = false,
      message = ("no API key: pass api_key to pivday.client{}, set PIVDAY_API_KEY, or write the key to %s (mode 600)")
        :format(path or "~/.config/pivday/key"),
    }
  end
  local mode = file_mode(path)
  if not mode or mode & 0x3F ~= 0 then -- any group/other bit (077)
    f:close()
    return nil, Error.new {
      kind = "local", code = "INSECURE_KEY_FILE", retryable = false,
      message = mode and ("refusing %s: it is readable by others (mode %o); run chmod 600 %s")
        :format(path, mode, path)
        or ("refusing %s: cannot check its permissions"):format(path),
    }
  end
  local key = f:read("a"):match("^%s*(.-)%s*$")
  f:close()
  if key == "" then
    return nil, Error.new { kind = "local", code = "MISSING_API_KEY", retryable = false, message = path .. " is empty" }
  end
  st.key = key
  return key
end

---------------------------------------------------------------------------
-- Answers -> payload or Error
---------------------------------------------------------------------------

-- Removes the key from a text that will be shown (an error message the
-- server or a proxy echoed, for instance).
local function redact(st, s)
  if type(s) ~= "string" or not st.key or #st.key < 4 then return s end
  local out = s:gsub(st.key:gsub("%W", "%%%0"), "<redacted>")
  return out
end

local function body_start(body)
  body = (body or ""):gsub("%s+", " ")
  if #body > 120 then body = body:sub(1, 120) .. "..." end
  return body
end

-- Classifies one HTTP answer. Returns either
--   "ok", payload
-- or
--   "error", err, how  (how: "rate" | "backoff" | nil = final)
local function classify(st, ep, req_method, res)
  local status = res.status
  local body = res.body or ""
  local decoded
  if body:find("%S") then decoded = json.decode(body) end
  local envelope = type(decoded) == "table" and type(decoded.success) == "boolean" and decoded or nil

  if status >= 200 and status < 300 then
    if envelope and envelope.success then
      local data = envelope.data
      if data ~= nil and data ~= null then return "ok", strip_nulls(data) end
      -- No data wrapper (purchase, restore, verify): the top-level fields.
      local rest = {}
      for k, v in pairs(envelope) do
        if k ~= "success" then rest[k] = v end
      end
      if next(rest) == nil then return "ok", true end
      return "ok", strip_nulls(rest)
    end
    if ep.wrapped == nil and not envelope then
      return "ok", true -- QUIRKS 3: no response documented, any 2xx is success
    end
    if not envelope then
      return "error", Error.new {
        kind = "protocol", code = "BAD_RESPONSE", status = status,
        message = ("HTTP %d without the API envelope: %s"):format(status, body_start(body)),
        outcome_unknown = not IDEMPOTENT[req_method] or nil,
      }, IDEMPOTENT[req_method] and "backoff" or nil
    end
    -- success = false on a 2xx: an error all the same, handled below.
  end

  -- Only errors read the headers: on success, res.headers (made when first
  -- read) is never built unless pivday.meta asks for it.
  local headers = res.headers or {}
  local retry_after = parse_retry_after(headers["retry-after"])

  local apierr = envelope and envelope.success == false and type(envelope.error) == "table"
    and type(envelope.error.code) == "string" and envelope.error
  local err, how
  if apierr then
    local msg = apierr.message
    err = Error.new {
      kind = "api", code = apierr.code, status = status,
      message = redact(st, type(msg) == "string" and msg or ("HTTP " .. status)),
      retry_after = retry_after,
    }
    local extra = false
    for k in pairs(apierr) do
      if k ~= "code" and k ~= "message" then extra = true end
    end
    if extra then err.details = strip_nulls(apierr) end
  else
    err = Error.new {
      kind = "protocol", code = "BAD_RESPONSE", status = status, retry_after = retry_after,
      message = redact(st, ("HTTP %d without the API envelope: %s"):format(status, body_start(body))),
    }
  end

  if status == 429 or err.code == "RATE_LIMITED" then
    -- Rejected before doing anything, whatever the method.
    err.retryable = true
    how = "rate"
  elseif apierr and catalogue.refunded_codes[err.code] then
    -- A definite "not done, refunded": sending it again is safe, POST too.
    err.retryable = true
    how = "backoff"
  elseif status >= 500 then
    if IDEMPOTENT[req_method] then
      err.retryable = true
      how = "backoff"
    else
      -- A POST that failed on the server side may still have been charged.
      err.retryable = false
      err.outcome_unknown = true
    end
  else
    err.retryable = RETRY_LATER[err.code] or false
  end
  return "error", err, how
end

-- Wraps a transport error (no HTTP answer). Returns err, how.
local TRANSPORT_KINDS = { transport = true, timeout = true, cancelled = true }

local function transport_failure(terr, req_method)
  local e = type(terr) == "table" and terr or { message = tostring(terr) }
  local err = Error.new {
    kind = TRANSPORT_KINDS[e.kind] and e.kind or "transport",
    code = e.code or "TRANSPORT",
    message = e.message or tostring(terr),
    sent = e.sent,
  }
  if err.kind == "cancelled" then
    err.retryable = false
    return err, nil
  end
  local sent = e.sent
  if sent == nil then sent = not NOT_SENT[err.code] end
  if not sent then
    err.retryable = true
    return err, "backoff"
  end
  if IDEMPOTENT[req_method] then
    err.retryable = true
    return err, "backoff"
  end
  err.retryable = false
  err.outcome_unknown = true
  return err, nil
end

local OUTCOME_HINT = " (the request may have reached the server and taken effect: check the result"
  .. " and the account balance before calling again; it was not retried)"

---------------------------------------------------------------------------
-- One call: attempts, waits, retries
---------------------------------------------------------------------------

local function log_attempt(st, ep, method, path, status_or_code, started, rt, attempt)
  if not st.debug then return end
  local ms = floor((rt.now() - started) * 1000 + 0.5)
  st.log(("pivday: %s %s %s -> %s %dms attempt %d/%d"):format(
    ep.id, method, path, tostring(status_or_code), ms, attempt, st.max_retries + 1))
end

-- Waits out a 429 pause on the client's host (set by any client), then
-- takes a concurrency slot; if a pause began while we queued, gives the
-- slot back and waits again. Returns the slot, or nil and what the deadline
-- cut short ("pause" | "slot").
local function take_slot(st, rt, deadline)
  while true do
    local hold = holds[st.host]
    local now = hold and rt.now()
    if hold and hold > now then
      if deadline and hold > deadline then return nil, "pause" end
      rt.sleep(hold - now)
    else
      local slot = st.sem:acquire(rt, deadline)
      if not slot then return nil, "slot" end
      hold = holds[st.host]
      if not (hold and hold > rt.now()) then return slot end
      release(slot)
    end
  end
end

-- Completes a failed call's error with what was attempted.
local function finish(err, ep, path, attempts)
  err.method, err.path, err.endpoint, err.attempts = ep.method, path, ep.id, attempts
  if err.outcome_unknown and not err.message:find(OUTCOME_HINT, 1, true) then
    err.message = err.message .. OUTCOME_HINT
  end
  return nil, err
end

local function deadline_error(st, ep, path, attempts, last_err, what)
  local err = Error.new {
    kind = "timeout", code = "TIMEOUT",
    message = ("deadline of %gs passed %s"):format(st.deadline, what),
    cause = last_err,
    retryable = last_err == nil or last_err.retryable,
    outcome_unknown = last_err and last_err.outcome_unknown or nil,
  }
  return finish(err, ep, path, attempts)
end

-- The request headers.
local function request_headers(key, has_body)
  local headers = {
    ["Authorization"] = "Bearer " .. key,
    ["Accept"] = "application/json",
    ["User-Agent"] = USER_AGENT,
  }
  if has_body then headers["Content-Type"] = "application/json" end
  return headers
end

-- The default transport's handle for calls with or without a body: the
-- headers and options every call sends, read by C once per client.
local function prepare(st, key, has_body)
  local p = http.prepare { headers = request_headers(key, has_body),
    connect_timeout = st.connect_timeout }
  if has_body then st.prepared_body = p else st.prepared_plain = p end
  return p
end

-- The general attempt loop (see perform). `first` is the outcome of a first
-- attempt perform already made ({res} or {nil, terr}), or nil.
local function attempts_loop(st, rt, ep, path, method, url, payload, prepared, headers, first)
  local started = rt.now()
  -- A quick first attempt's own time counts too (a transport failure has
  -- none: the call's elapsed then starts after it).
  if first and first[1] then started = started - (first[1].elapsed or 0) end
  local deadline = st.deadline and started + st.deadline
  local host = st.host
  local debug = st.debug
  local attempts = 0
  local last_err

  while true do
    local res, terr, t0
    if first then
      attempts = 1
      res, terr = first[1], first[2]
      first = nil
      goto answered
    end
    do
    local slot, waiting_for = take_slot(st, rt, deadline)
    if not slot then
      if waiting_for == "pause" and last_err then return finish(last_err, ep, path, attempts) end
      return deadline_error(st, ep, path, attempts, last_err, waiting_for == "pause"
        and ("waiting for the rate limit pause on %s"):format(host)
        or "waiting for a free connection slot")
    end
    local attempt_timeout = st.timeout
    if deadline then
      local left = deadline - rt.now()
      if left <= 0 then
        release(slot)
        return deadline_error(st, ep, path, attempts, last_err,
          ("after %d attempt%s"):format(attempts, attempts == 1 and "" or "s"))
      end
      attempt_timeout = math.min(attempt_timeout, left)
    end

    attempts = attempts + 1
    t0 = debug and rt.now() -- only the debug log shows an attempt's time
    do
      local _ <close> = slot
      if prepared then
        -- The default transport: headers and options read once per client,
        -- and a success envelope decoded straight to its data in C.
        local data, r = send_prepared(prepared, method, url, payload, attempt_timeout)
        if data then
          if debug then log_attempt(st, ep, method, path, (meta_of(r)), t0, rt, attempts) end
          -- M.meta reads the string when asked; after retries the call's
          -- own figures go with it.
          remember_meta(data, attempts == 1 and r or { false, false, attempts, rt.now() - started, r })
          return data
        end
        if data == false then res = r else terr = r end
      else
        -- A custom transport gets its own request table: it may keep it.
        res, terr = rt.request {
          method = method, url = url, headers = headers, body = payload,
          timeout = attempt_timeout, connect_timeout = st.connect_timeout,
          -- libcurl re-sends a request on a dead keep-alive connection by
          -- itself; a POST must reach the server at most once.
          no_resend = method == "POST",
        }
      end
    end
    end

    ::answered::
    local err, how
    if res then
      if debug then log_attempt(st, ep, method, path, res.status, t0, rt, attempts) end
      local kind, value, h = classify(st, ep, method, res)
      if kind == "ok" then
        if type(value) == "table" then
          -- M.meta builds the record when asked: most callers never do.
          -- The default transport's res keeps its headers unbuilt until
          -- then (its body is not kept); a custom transport's headers are
          -- taken as they are now.
          if prepared then
            res.body = nil
            remember_meta(value, { res.status, false, attempts, rt.now() - started, res })
          else
            remember_meta(value, { res.status, res.headers, attempts, rt.now() - started })
          end
        end
        return value
      end
      err, how = value, h
    else
      err, how = transport_failure(terr, method)
      err.message = redact(st, err.message)
      if debug then log_attempt(st, ep, method, path, err.code, t0, rt, attempts) end
    end
    last_err = err

    local wait
    if how == "rate" then
      -- Pause the whole host even if this call gives up: the server asked.
      wait = math.min(err.retry_after or st.backoff(attempts), st.retry_after_cap)
      local until_ = rt.now() + wait
      if not holds[host] or holds[host] < until_ then holds[host] = until_ end
    elseif how then
      -- A 503 may say when to come back; otherwise back off.
      wait = err.retry_after and math.min(err.retry_after, st.retry_after_cap) or st.backoff(attempts)
    end
    if not how or attempts > st.max_retries then return finish(err, ep, path, attempts) end
    if deadline and rt.now() + wait >= deadline then return finish(err, ep, path, attempts) end
    if how ~= "rate" then rt.sleep(wait) end -- a rate pause is waited at the loop top
  end
end

-- Sends the request for endpoint `ep`; returns payload or nil, err.
--
-- Most calls are one attempt through the default transport with a slot
-- free: that attempt is made here with nothing else around it (this is
-- the path every api.x.y() takes, hence kept short); anything else, and
-- every answer but a success envelope, goes on in attempts_loop.
local function perform(st, ep, path, query, body, url)
  local rt = st.rt
  if not rt.ready then rt = runtime(st) end
  local key = st.key
  if not key then
    local kerr
    key, kerr = resolve_key(st)
    if not key then
      kerr.method, kerr.path, kerr.endpoint, kerr.attempts = ep.method, path, ep.id, 0
      return nil, kerr
    end
  end

  local method = ep.method
  if not url then
    url = st.base_url .. path
    if query and query ~= "" then url = url .. "?" .. query end
  end
  local payload
  if body then
    local ok, text = pcall(json.encode, body)
    if not ok then
      return nil, Error.new {
        kind = "local", code = "VALIDATION_ERROR", retryable = false,
        message = ("%s: the body cannot be sent as JSON: %s"):format(ep.id, tostring(text)),
        method = method, path = path, endpoint = ep.id, attempts = 0,
      }
    end
    payload = text
  end
  if not rt.default then
    return attempts_loop(st, rt, ep, path, method, url, payload, nil, request_headers(key, body ~= nil))
  end
  local prepared
  if body then
    prepared = st.prepared_body or prepare(st, key, true)
  else
    prepared = st.prepared_plain or prepare(st, key, false)
  end

  local sem = st.sem
  if st.debug or st.deadline or sem.used >= sem.limit or sem.queue[1] ~= nil or holds[st.host] then
    return attempts_loop(st, rt, ep, path, method, url, payload, prepared)
  end
  sem.used = sem.used + 1
  local data, r
  do
    local _ <close> = sem -- released however the attempt ends (a cancel raises)
    data, r = send_prepared(prepared, method, url, payload, st.timeout)
  end
  if data then
    remember_meta(data, r) -- a meta string: M.meta reads it when asked
    return data
  end
  if data == false then
    return attempts_loop(st, rt, ep, path, method, url, payload, prepared, nil, { r })
  end
  return attempts_loop(st, rt, ep, path, method, url, payload, prepared, nil, { nil, r })
end

---------------------------------------------------------------------------
-- Methods made from the catalogue
---------------------------------------------------------------------------

local function check_id(name, argn, pname, v)
  local t = type(v)
  if t == "string" then
    if v == "" then
      error(("bad argument #%d to '%s' (%s must not be empty)"):format(argn, name, pname), 4)
    end
    return v
  end
  if mtype(v) == "integer" then return tostring(v) end
  error(("bad argument #%d to '%s' (%s: string expected, got %s)"):format(argn, name, pname,
    v == null and "null" or t), 4)
end

-- Splits a method's arguments into ids and the table; raises (at the
-- user's line) on wrong Lua types.
local function split_args(ep, ...)
  local n = #ep.params
  local ids = {}
  for i = 1, n do ids[i] = check_id(ep.id, i, ep.params[i], (select(i, ...))) end
  local args = select(n + 1, ...)
  if args ~= nil and type(args) ~= "table" then
    error(("bad argument #%d to '%s' (table expected, got %s)"):format(n + 1, ep.id, type(args)), 3)
  end
  if select("#", ...) > n + 1 then
    error(("bad argument #%d to '%s' (%d argument%s expected)"):format(n + 2, ep.id, n + 1,
      n == 0 and "" or "s"), 3)
  end
  return ids, args or {}
end

local function local_error(ep, path, msg, field)
  return nil, Error.new {
    kind = "local", code = "VALIDATION_ERROR",
    message = ("%s: %s"):format(ep.id, msg), field = field,
    method = ep.method, path = path, endpoint = ep.id, attempts = 0,
    retryable = false,
  }
end

-- Validates and sends one call of `ep` to `path`.
local function call_unguarded(st, ep, path, args)
  if ep.method == "GET" or ep.method == "DELETE" then
    if st.validate then
      local msg, field = check_query(ep, args, st.validate == "strict")
      if msg then return local_error(ep, path, msg, field) end
    end
    return perform(st, ep, path, build_query(args), nil)
  end
  if st.validate then
    local msg, field = validate(ep.body, args, st.validate == "strict" and ep.body_source ~= "curl")
    if msg then return local_error(ep, path, msg, field) end
  end
  -- No documented body and nothing given (proxy.restore): send none, as
  -- the source's curl example does.
  if #ep.body == 0 and next(args) == nil then return perform(st, ep, path, nil, nil) end
  return perform(st, ep, path, nil, build_body(ep, args))
end

-- The amount a charging call's answer reports (purchase `cost`, restore
-- `total_charged`, proxy orders' `total_cost`, ...), in cents, or 0.
local function reported_cents(res)
  if type(res) ~= "table" then return 0 end
  for _, t in ipairs { res, res.order, res.domain, res.white } do
    if type(t) == "table" then
      for _, k in ipairs { "cost", "total_cost", "total_charged", "price_total" } do
        if type(t[k]) == "number" then return floor(t[k] * 100 + 0.5) end
      end
    end
  end
  return 0
end

-- The spend guard and dry run, before a charging call: nil to go ahead,
-- else the local error to return.
local function guard_charge(st, ep, path, args)
  if st.dry_run then
    st.log(("dry-run: %s %s %s"):format(ep.method, st.base_url .. path,
      args and next(args) and json.encode(args) or ""))
    return Error.new{ kind = "local", code = "DRY_RUN", retryable = false,
      message = ("%s was not sent (dry run)"):format(ep.id),
      method = ep.method, path = path, endpoint = ep.id, attempts = 0 }
  end
  if st.max_spend and st.spent >= st.max_spend then
    return Error.new{ kind = "local", code = "SPEND_LIMIT", retryable = false,
      message = ("%s refused: this client has spent %.2f of its max_spend %.2f")
        :format(ep.id, st.spent / 100, st.max_spend / 100),
      method = ep.method, path = path, endpoint = ep.id, attempts = 0 }
  end
end

-- Validates and sends one call of `ep`.
local function call(st, ep, ids, args)
  local path = catalogue.expand(ep, ids)
  if ep.charges and (st.dry_run or st.max_spend) then
    local gerr = guard_charge(st, ep, path, args)
    if gerr then return nil, gerr end
    local res, err = call_unguarded(st, ep, path, args)
    if res then st.spent = st.spent + reported_cents(res) end
    return res, err
  end
  return call_unguarded(st, ep, path, args)
end

-- A GET or DELETE without path parameters called without arguments (such
-- as api.account.get()): its path, query ("") and validation outcome are
-- the same every time, so they are worked out once.
local function call_noargs(st, ep, path, url)
  if ep.charges then return call(st, ep, {}, {}) end
  if st.validate then
    local chk = st.noarg_checks[ep]
    if chk == nil then
      local msg, field = check_query(ep, {}, st.validate == "strict")
      chk = msg and { msg, field } or false
      st.noarg_checks[ep] = chk
    end
    if chk then return local_error(ep, path, chk[1], chk[2]) end
  end
  return perform(st, ep, path, nil, nil, url)
end

local function make_method(st, ep)
  local path0 = #ep.params == 0 and (ep.method == "GET" or ep.method == "DELETE")
    and catalogue.expand(ep, {})
  local url0 = path0 and st.base_url .. path0
  -- Whether a call without arguments goes straight to perform: no charge
  -- guard, and the empty query passes validation (known after the first).
  local direct = false
  return function(...)
    if path0 and select("#", ...) == 0 then
      if direct then return perform(st, ep, path0, nil, nil, url0) end
      direct = not ep.charges and (not st.validate or st.noarg_checks[ep] == false)
      return call_noargs(st, ep, path0, url0)
    end
    local ids, args = split_args(ep, ...)
    return call(st, ep, ids, args)
  end
end

local function make_iterator(st, ep, name)
  return function(...)
    local ids, args = split_args(ep, ...)
    local filter = {}
    for k, v in pairs(args) do filter[k] = v end
    local limit = filter.limit or ep.page.max
    local offset = filter.offset or 0
    filter.limit, filter.offset = limit, offset
    if st.validate then
      local msg, field = check_query(ep, filter, st.validate == "strict")
      if msg then
        local _, err = local_error(ep, catalogue.expand(ep, ids), msg, field)
        err.message = err.message:gsub("^[^:]+", name)
        error(err, 2)
      end
    end
    return paginate.iterator(function(off, lim)
      filter.offset, filter.limit = off, lim
      return call(st, ep, ids, filter)
    end, { items = ep.page.items, limit = limit, offset = offset })
  end
end

-- The client object holds only its sections and base_url; its state is in
-- `private`.
local Client = { __name = "pivday.Client" }

function Client.__tostring(api)
  local st = private[api]
  return ("pivday.Client(%s)"):format(st and st.base_url or "?")
end

local function check_opt(opts, name, kind, min)
  local v = opts[name]
  if v == nil then return DEFAULTS[name] end
  if type(v) ~= "number" or v ~= v or (min and v < min) then
    error(("bad option '%s' to pivday.client (%s expected, got %s)"):format(name, kind, describe(v)), 3)
  end
  return v
end

local function backoff_fn(base, max)
  return function(retry)
    local d = math.min(max, base * 2 ^ (retry - 1))
    -- Equal jitter: at least half the delay, so clients that failed together
    -- spread out without retrying immediately.
    return d / 2 + math.random() * d / 2
  end
end

--- Makes an API client.
-- Options (all optional): `api_key` (else env PIVDAY_API_KEY, else the file
-- ~/.config/pivday/key, refused unless mode 600), `base_url` (else env
-- PIVDAY_BASE_URL, else the catalogue's), `timeout` (seconds per attempt,
-- 30), `connect_timeout` (10), `deadline` (seconds for a whole call across
-- retries and waits; default none), `max_retries` (3), `concurrency` (16
-- requests in flight; the rest queue), `retry_after_cap` (60 s),
-- `backoff_base` (0.25 s), `backoff_max` (8 s), `debug` (else env
-- PIVDAY_DEBUG=1: one stderr line per attempt), `log` (function(line),
-- replaces stderr), `validate` (true; false skips local checks; "strict"
-- also refuses undocumented fields), `transport` (function(request) ->
-- response | nil, err; default pivday.http.request), `runtime` ({now=,
-- sleep=, cond=}, for tests), `max_spend` (an amount: charging calls are
-- refused, SPEND_LIMIT, once the costs the API reported reach it) and
-- `dry_run` (charging calls are logged, not sent: DRY_RUN).
-- @return the client: `api.<section>.<name>(ids..., tbl)` per endpoint id,
-- plus the iterators `numbers.each`, `numbers.each_sms`, `proxy.each_order`,
-- `domains.each`, `whites.each`.
function M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("bad argument #1 to 'pivday.client' (table expected, got " .. type(opts) .. ")", 2)
  end
  if opts.api_key ~= nil and (type(opts.api_key) ~= "string" or opts.api_key == "") then
    error("bad option 'api_key' to pivday.client (non-empty string expected)", 2)
  end
  local defaults = M.defaults
  local api_key = opts.api_key
  local base_url = opts.base_url
  if defaults.locked then
    api_key, base_url = defaults.api_key or api_key, defaults.base_url or base_url
  end
  base_url = base_url or defaults.base_url
  if base_url == nil then
    base_url = os.getenv("PIVDAY_BASE_URL")
    if base_url == "" then base_url = nil end
  end
  base_url = base_url or catalogue.base_url
  if type(base_url) ~= "string" or not base_url:match("^https?://[^/]") then
    error("bad option 'base_url' to pivday.client (http:// or https:// URL expected, got "
      .. describe(base_url) .. ")", 2)
  end
  base_url = base_url:gsub("/+$", "")
  for _, f in ipairs { "transport", "log" } do
    if opts[f] ~= nil and type(opts[f]) ~= "function" then
      error(("bad option '%s' to pivday.client (function expected, got %s)"):format(f, type(opts[f])), 2)
    end
  end
  if opts.runtime ~= nil and type(opts.runtime) ~= "table" then
    error("bad option 'runtime' to pivday.client (table expected)", 2)
  end
  local debug = opts.debug
  if debug == nil then
    local env = os.getenv("PIVDAY_DEBUG")
    debug = env ~= nil and env ~= "" and env ~= "0"
  end
  local validate_opt = opts.validate
  if validate_opt == nil then validate_opt = true end
  if validate_opt ~= true and validate_opt ~= false and validate_opt ~= "strict" then
    error("bad option 'validate' to pivday.client (true, false or \"strict\" expected)", 2)
  end

  local concurrency = check_opt(opts, "concurrency", "positive integer", 1)
  if mtype(concurrency) ~= "integer" and concurrency ~= floor(concurrency) then
    error("bad option 'concurrency' to pivday.client (positive integer expected)", 2)
  end
  local max_retries = check_opt(opts, "max_retries", "integer >= 0", 0)
  local rt_opts = opts.runtime or {}
  local st = {
    opt_key = api_key or defaults.api_key,
    base_url = base_url,
    host = host_of(base_url),
    timeout = check_opt(opts, "timeout", "positive number", 0),
    connect_timeout = check_opt(opts, "connect_timeout", "positive number", 0),
    deadline = opts.deadline ~= nil and check_opt(opts, "deadline", "positive number", 0) or nil,
    max_retries = floor(max_retries),
    retry_after_cap = check_opt(opts, "retry_after_cap", "number >= 0", 0),
    backoff = backoff_fn(check_opt(opts, "backoff_base", "number >= 0", 0),
                         check_opt(opts, "backoff_max", "number >= 0", 0)),
    sem = new_semaphore(floor(concurrency)),
    debug = debug,
    log = opts.log or function(line) io.stderr:write(line, "\n") end,
    validate = validate_opt,
    -- spend guard, in cents of what the API reported as charged
    max_spend = opts.max_spend ~= nil
      and floor(check_opt(opts, "max_spend", "number >= 0", 0) * 100 + 0.5) or nil,
    spent = 0,
    dry_run = opts.dry_run and true or nil,
    rt = { request = opts.transport, now = rt_opts.now, sleep = rt_opts.sleep, cond = rt_opts.cond },
    noarg_checks = {}, -- endpoint -> false | { message, field } (call_noargs)
  }

  local api = setmetatable({ base_url = base_url }, Client)
  private[api] = st
  for _, ep in ipairs(catalogue.endpoints) do
    local section = api[ep.section]
    if not section then
      section = {}
      api[ep.section] = section
    end
    section[ep.name] = make_method(st, ep)
    if ep.page then
      local sec, name = ep.page.iterator:match("^([^.]+)%.(.+)$")
      api[sec][name] = make_iterator(st, ep, ep.page.iterator)
    end
  end
  return api
end

M.key_file_path = key_file_path

--- What this client's charging calls cost so far, as the API reported it
-- (an amount such as 12.5).
function M.spent(api)
  local st = private[api]
  if not st then error("bad argument #1 to 'spent' (a pivday client expected)", 2) end
  local v = st.spent / 100
  return math.tointeger(v) or v
end

--- What a call took, kept apart from its data: `{status=, attempts=,
-- elapsed= (seconds), request_id= (when the server sent one), headers=}`,
-- or nil for anything that is not a payload table returned by a client
-- among the latest META_KEEP (256).
function M.meta(result)
  if type(result) ~= "table" then return nil end
  local slot = meta_slot(result)
  if not slot then return nil end
  local m = meta_vals[slot]
  if m.attempts ~= nil then return m end
  -- Pending since the call: a send_prepared meta string (one attempt, its
  -- own time), or { status, headers, attempts, elapsed[, res or meta] }.
  local status, elapsed, h, attempts
  if type(m) == "string" then
    status, elapsed, h = meta_of(m)
    attempts = 1
  else
    status, h, attempts, elapsed = m[1], m[2], m[3], m[4]
    local r = m[5]
    if type(r) == "string" then
      local _
      status, _, h = meta_of(r)
    elseif r then
      h = r.headers
    end
  end
  m = {
    status = status, attempts = attempts, elapsed = elapsed,
    request_id = h and (h["x-request-id"] or h["request-id"]),
    headers = h,
  }
  meta_vals[slot] = m
  return m
end

--- Clears every host's 429 pause (for tests that simulate rate limits).
function M._reset_holds()
  for k in pairs(holds) do holds[k] = nil end
end

M._strip_nulls = strip_nulls
M._parse_retry_after = parse_retry_after

return M
