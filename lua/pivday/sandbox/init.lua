--- pivday.sandbox: a local emulator of the piv.day API over real HTTP.
--
--     local sb = assert(pivday.sandbox{ port = 0, speed = 60 })
--     local api = pivday.client{ base_url = sb.base_url, api_key = sb.api_key }
--     sb:advance(3600)           -- control API as methods (see control.lua)
--     sb:close()
--
-- This file is the network side only: it puts pivday.sandbox.app behind
-- pivday.http.server, gives it the loop's clock, sleep and HTTP client (for
-- webhooks), runs a background ticker for due jobs and lifecycles, and saves
-- the state file after every change. `main(arg)` is `pivday sandbox ...`.
local pivday = require "pivday"
local app_mod = require "pivday.sandbox.app"
local clock_mod = require "pivday.sandbox.clock"
local control = require "pivday.sandbox.control"
local json = require "pivday.json"
local reply = require "pivday.sandbox.reply"
local state_mod = require "pivday.sandbox.state"

local M = {}

local Sandbox = { __name = "pivday.Sandbox" }
Sandbox.__index = Sandbox

local TICK_MIN, TICK_MAX = 0.005, 0.25  -- ticker sleeps (real seconds)

function Sandbox:__tostring()
  return ("pivday.Sandbox (%s)"):format(self._closed and "closed" or self.base_url)
end

-- Saves the state file when something changed; a failure is reported and
-- retried on the next change, it never stops the service.
function Sandbox:_persist()
  local app = self.app
  if not self._state_path or not app.dirty then return true end
  local ok, err = app.st:save(self._state_path, app.clock:now())
  if not ok then
    io.stderr:write(err, "\n")
    return nil, err
  end
  app.dirty = false
  return true
end

-- The webhook transport: one POST, status or nil + error code.
local function send(url, body, headers, timeout)
  local res, err = pivday.http.request { method = "POST", url = url, headers = headers, body = body,
    timeout = timeout, connect_timeout = timeout, no_resend = true }
  if not res then return nil, err and err.code or "ERROR" end
  return res.status
end

--- Starts a sandbox. opts:
--   host ("127.0.0.1"), port (0 = any free port)
--   state        file to load and keep saved (created when missing)
--   webhook_url  webhook URL of the default key
--   speed        sandbox seconds per real second (default 1; 0 freezes)
--   api_key      token of the default key of a fresh state
--   webhook_timeout, webhook_backoff  (default 5 s, {1, 2, 4} s)
--   rate_limit   {limit =, window = seconds} for the default key (default none)
-- Returns the sandbox, or nil and a message (bad state file, port in use).
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'sandbox' (table expected)", 2) end
  local st
  if opts.state then
    local err
    st, err = state_mod.load(opts.state)
    if err then return nil, err end
  end
  local self = setmetatable({ _state_path = opts.state, _deliveries = {} }, Sandbox)
  local clock = clock_mod.new { start = st and st.data.now or os.time(), speed = opts.speed or 1,
    realtime = pivday.now }
  self.app = app_mod.new {
    state = st, clock = clock, realtime = pivday.now, api_key = opts.api_key,
    sleep = pivday.sleep, drop = pivday.http.DROP, webhook_url = opts.webhook_url,
    webhooks = {
      send = send,
      sleep = pivday.sleep,
      timeout = opts.webhook_timeout,
      backoff = opts.webhook_backoff,
      -- each delivery is a daemon task: the service's background work
      -- must not hold a user's pivday.run open (a script that wants the
      -- event waits on its listener); close() cancels those still running
      -- and they resume after the next load
      spawn = function(fn)
        local task
        task = pivday.daemon(function()
          local ok, err = pcall(fn)
          self._deliveries[task] = nil
          if not ok and not (pivday.Error.is(err) and err.kind == "cancelled") then
            io.stderr:write("pivday.sandbox: webhook delivery failed: ", tostring(err), "\n")
          end
        end)
        self._deliveries[task] = true
      end,
    },
  }
  self.app.save = function() return self:_persist() end
  if opts.rate_limit then
    control.ops.update_key(self.app, { rate_limit = opts.rate_limit })
  end
  local srv, err = pivday.http.server {
    host = opts.host or "127.0.0.1", port = opts.port or 0,
    handler = function(req)
      local status, headers, body = self.app:handle(req)
      self:_persist()
      return status, headers, body
    end,
  }
  if not srv then return nil, "pivday.sandbox: cannot listen: " .. tostring(err) end
  self._srv = srv
  self.url, self.host, self.port = srv.url, srv.host, srv.port
  self.app.origin = srv.url
  self.base_url = srv.url .. "/api/v1"
  self.api_key, self.user_id = self.app:default_key()
  self.app.dirty = true
  self:_persist()
  self._ticker = pivday.daemon(function()
    while not self._closed do
      local ok, terr = pcall(self.app.tick, self.app)
      if not ok then io.stderr:write("pivday.sandbox: tick failed: ", tostring(terr), "\n") end
      self:_persist()
      local due = self.app:next_due()
      local wait = due and self.app.clock:real_delay(due) or TICK_MAX
      pivday.sleep(math.max(TICK_MIN, math.min(wait, TICK_MAX)))
    end
  end)
  self.app.hooks:resume()
  return self
end

--- Stops serving, cancels webhook deliveries in flight, saves the state.
-- Idempotent.
function Sandbox:close()
  if self._closed then return end
  self._closed = true
  self._srv:close()
  if self._ticker then self._ticker:cancel() end
  for task in pairs(self._deliveries) do task:cancel() end
  for _, d in ipairs(self.app.st.data.deliveries) do
    if d.status == "delivering" then d.status = "pending" end
  end
  self.app.dirty = true
  return self:_persist()
end
Sandbox.__close = Sandbox.close

local function check_open(self)
  if self._closed then error("attempt to use a closed pivday.Sandbox", 3) end
end

-- Control operations as methods; API errors raise at the caller's line.
-- A few take a plain value instead of a table.
local POSITIONAL = { advance = "seconds", set_speed = "speed", resend = "id", requests = "limit",
  deliveries = "limit" }

for name, op in pairs(control.ops) do
  Sandbox[name] = function(self, args, ...)
    check_open(self)
    if POSITIONAL[name] and type(args) ~= "table" and args ~= nil then
      args = { [POSITIONAL[name]] = args }
    end
    local ok, res = pcall(op, self.app, args or {}, ...)
    if not ok then
      if reply.is_error(res) then error("pivday.sandbox: " .. res.message, 2) end
      error(res, 0)
    end
    self:_persist()
    return res
  end
end

--- Emits an event: sb:emit("sms.received", {…}) or sb:emit{event_type=, data=}.
function Sandbox:emit(event_type, data, opts)
  local args = event_type
  if type(event_type) == "string" then
    args = { event_type = event_type, data = data }
    for k, v in pairs(opts or {}) do args[k] = v end
  end
  check_open(self)
  local ok, res = pcall(control.ops.emit, self.app, args)
  if not ok then
    if reply.is_error(res) then error("pivday.sandbox: " .. res.message, 2) end
    error(res, 0)
  end
  return res
end

--- Sets (or, with nil, clears) the webhook URL of the default key.
function Sandbox:set_webhook_url(url)
  return self:update_key { webhook_url = url or json.null }
end

--- Runs what is due now (the ticker does this by itself).
function Sandbox:tick()
  check_open(self)
  return self.app:tick()
end

--- Sandbox seconds now.
function Sandbox:now()
  return self.app:now()
end

local USAGE = [[
usage: pivday sandbox [--host HOST] [--port PORT] [--state FILE]
                      [--webhook-url URL] [--speed X]
                      [--webhook-timeout S] [--rate-limit N/S]
Runs a local emulator of the piv.day API until SIGINT/SIGTERM.
  --host HOST         address to listen on (default 127.0.0.1)
  --port PORT         port (default 8790; 0 = any free port)
  --state FILE        keep everything in FILE across restarts
  --webhook-url URL   webhook URL of the default API key
  --speed X           sandbox seconds per real second (default 1)
  --webhook-timeout S webhook answer deadline in seconds (default 5)
  --rate-limit N/S    allow the default key N requests per S seconds
                      (default: no limit)
]]

-- Parses `pivday sandbox` arguments; returns opts, or nil and a message
-- (nil, nil for --help).
local function parse_args(args)
  local o, rest = require("pivday.cli").parse(args, { host = "value", port = "value", state = "value",
    webhook_url = "value", speed = "value", webhook_timeout = "value", rate_limit = "value", help = "flag" })
  if not o then return nil, rest end
  if o.help then return nil, nil end
  if #rest > 0 then return nil, "unexpected argument '" .. rest[1] .. "'" end
  local opts = { host = o.host, state = o.state, webhook_url = o.webhook_url, port = 8790 }
  if o.port then
    opts.port = math.tointeger(tonumber(o.port))
    if not opts.port or opts.port < 0 or opts.port > 65535 then return nil, "--port needs a number 0-65535" end
  end
  if o.speed then
    opts.speed = tonumber(o.speed)
    if not opts.speed or opts.speed < 0 then return nil, "--speed needs a number >= 0" end
  end
  if o.webhook_url and not o.webhook_url:match("^https?://") then
    return nil, "--webhook-url needs an http(s) URL"
  end
  if o.webhook_timeout then
    opts.webhook_timeout = tonumber(o.webhook_timeout)
    if not opts.webhook_timeout or opts.webhook_timeout <= 0 then return nil, "--webhook-timeout needs seconds > 0" end
  end
  if o.rate_limit then
    local n, w = o.rate_limit:match("^(%d+)/(%d+%.?%d*)$")
    n, w = math.tointeger(tonumber(n)), tonumber(w)
    if not n or n < 1 or not w or w <= 0 then return nil, "--rate-limit needs N/SECONDS, such as 60/60" end
    opts.rate_limit = { limit = n, window = w }
  end
  return opts
end

--- `pivday sandbox [...]`: serves until SIGINT/SIGTERM, then saves.
-- `out`/`err` default to io.stdout/io.stderr. Returns the process exit
-- status (0 ok, 1 failure, 2 usage).
function M.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local opts, perr = parse_args(args or {})
  if not opts then
    if perr then
      err:write("pivday sandbox: ", perr, "\n", USAGE)
      return 2
    end
    out:write(USAGE)
    return 0
  end
  local status = 0
  pivday.run(function()
    local sb, serr = M.new(opts)
    if not sb then
      err:write(serr, "\n")
      status = 1
      return
    end
    out:write("base_url: ", sb.base_url, "\n", "api_key: ", sb.api_key, "\n")
    if out.flush then out:flush() end
    err:write("pivday sandbox: serving (speed ", tostring(sb.app.clock.speed),
      opts.state and (", state " .. opts.state) or "", "); SIGINT or SIGTERM stops it\n")
    local sig = pivday.wait_signal()
    local ok = sb:close()
    if not ok then status = 1 end
    err:write("pivday sandbox: ", sig, ", stopped", opts.state and (", state saved to " .. opts.state) or "", "\n")
  end)
  return status
end

M.Sandbox = Sandbox
return M
