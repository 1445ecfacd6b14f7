--- pivday.sandbox.app: the emulated service, without the network.
--
-- `app:handle(req)` takes {method, path, query (raw string), headers
-- (lowercased names), body, peer} and returns status, headers, body_string
-- (or app.DROP: close without answering). Everything between — routing from
-- the catalogue, auth, scopes, rate limits, injected faults, JSON parsing,
-- the handlers, the clock-driven jobs and lifecycles, webhook events — is
-- here or in the modules this one wires together. The network side
-- (pivday.sandbox init.lua) only moves bytes and timers.
local catalogue = require "pivday.catalogue"
local clock_mod = require "pivday.sandbox.clock"
local control = require "pivday.sandbox.control"
local files = require "pivday.sandbox.files"
local jobs = require "pivday.sandbox.jobs"
local lifecycle = require "pivday.sandbox.lifecycle"
local money = require "pivday.sandbox.money"
local policy = require "pivday.sandbox.policy"
local reply = require "pivday.sandbox.reply"
local request = require "pivday.sandbox.request"
local state_mod = require "pivday.sandbox.state"
local views = require "pivday.sandbox.views"
local webhooks = require "pivday.sandbox.webhooks"

local M = {}

--- Returned by handle() when the connection must close without an answer;
-- init.lua replaces it with pivday.http.DROP.
M.DROP = setmetatable({}, { __name = "pivday.sandbox.DROP" })

local App = { __name = "pivday.sandbox.App" }
App.__index = App

local HANDLER_MODULES = {
  "pivday.sandbox.handlers.account",
  "pivday.sandbox.handlers.numbers",
  "pivday.sandbox.handlers.proxy",
  "pivday.sandbox.handlers.domains",
  "pivday.sandbox.handlers.whites",
}

local MAX_TICK_STEPS = 100000  -- bounds one catch-up of jobs and lifecycles

-- Every catalogue endpoint needs a handler and a scope, and every handler an
-- endpoint: a new endpoint cannot silently answer 404 or skip auth.
local function load_handlers()
  local handlers = {}
  for _, name in ipairs(HANDLER_MODULES) do
    for id, fn in pairs(require(name)) do
      assert(not handlers[id], "pivday.sandbox: two handlers for " .. id)
      handlers[id] = fn
    end
  end
  for _, ep in ipairs(catalogue.endpoints) do
    assert(handlers[ep.id], "pivday.sandbox: no handler for endpoint " .. ep.id)
    assert(policy.scopes[ep.id], "pivday.sandbox: no scope for endpoint " .. ep.id)
  end
  for id in pairs(handlers) do
    assert(catalogue.by_id(id), "pivday.sandbox: handler for unknown endpoint " .. id)
  end
  return handlers
end

--- Creates the service. opts:
--   state      a pivday.sandbox.state State (default: a fresh one)
--   clock      a pivday.sandbox.clock Clock (default: speed opts.speed)
--   speed      clock speed when no clock is given (default 1)
--   realtime   wall/monotonic seconds function for rate limits (os.time)
--   sleep      function(seconds) for injected delays (default: none)
--   webhooks   options for pivday.sandbox.webhooks (send, sleep, spawn,
--              timeout, backoff)
--   drop       the sentinel handle() returns to close without answering
--   api_key    token of the default key of a fresh state
--   webhook_url  set on the default key (fresh or loaded state)
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, App)
  self.realtime = opts.realtime or os.time
  self.clock = opts.clock or clock_mod.new { speed = opts.speed, realtime = self.realtime }
  self.st = opts.state or state_mod.fresh(self.clock:now(), opts.api_key)
  self.sleep = opts.sleep or function() end
  self.DROP = opts.drop or M.DROP
  self.handlers = load_handlers()
  self.requests = {}            -- request log (memory only)
  self._rate = {}               -- key -> {window_start, count}
  self.dirty = false
  self.hooks = webhooks.new(self, opts.webhooks)
  if opts.webhook_url then
    self.st:key(self.st.data.default_key).webhook_url = opts.webhook_url
  end
  return self
end

--- The default API key and its account id.
function App:default_key()
  return self.st.data.default_key, self.st.data.default_user
end

--- Sandbox seconds now: while jobs and lifecycles catch up, the time each
-- one was due, so that their timestamps are the ones they would have had.
function App:now()
  return self._at or self.clock:now()
end

function App:iso(t)
  return views.time(t or self:now())
end

-- money, events, jobs: what handlers, jobs and lifecycles share -------------------

--- Charges the account; stops the handler with INSUFFICIENT_BALANCE (the
-- reference's message form) when the balance is short.
function App:charge(uid, cents, reason, ref)
  local row, available = self.st:charge(uid, cents, reason, ref, self:now())
  if not row then
    reply.fail("INSUFFICIENT_BALANCE", ("Not enough balance: required %s, available %s")
      :format(money.usd(cents), money.usd(available)))
  end
  self.dirty = true
  return row
end

function App:refund(uid, cents, reason, ref)
  self.dirty = true
  return self.st:credit(uid, cents, reason, ref, self:now())
end

--- Emits a webhook event for the account.
function App:emit(uid, event_type, data)
  self.dirty = true
  return self.hooks:emit(uid, event_type, data)
end

--- Runs job `kind` with `args` after `delay` sandbox seconds.
function App:schedule(delay, kind, args)
  self.dirty = true
  return jobs.schedule(self, delay, kind, args)
end

--- Takes the next forced outcome of `what` (control API "force"), or nil;
-- with `peek`, only looks at it.
function App:forced(what, peek)
  local q = self.st.data.forced[what]
  if not q or #q == 0 then return nil end
  if peek then return q[1] end
  local v = table.remove(q, 1)
  self.dirty = true
  return v
end

--- Runs every job and lifecycle step that is due, oldest first, each at
-- the time it was due. Returns the number of steps run.
function App:tick()
  local target = self.clock:now()
  local steps = 0
  while steps < MAX_TICK_STEPS do
    local jt, job = jobs.next(self)
    local lt, action = lifecycle.next(self)
    local t
    if jt and (not lt or jt <= lt) then t = jt else t = lt; job = nil end
    if not t or t > target then break end
    self._at = t
    if job then jobs.run(self, job) else action() end
    steps = steps + 1
  end
  self._at = nil
  if steps > 0 then self.dirty = true end
  if steps >= MAX_TICK_STEPS then
    io.stderr:write("pivday.sandbox: more than ", MAX_TICK_STEPS, " due steps; the rest waits for the next tick\n")
  end
  return steps
end

--- Sandbox time of the next due job or lifecycle step, or nil.
function App:next_due()
  local jt = jobs.next(self)
  local lt = lifecycle.next(self)
  if jt and lt then return math.min(jt, lt) end
  return jt or lt
end

--- Moves the sandbox clock forward and runs what became due.
function App:advance(seconds)
  self.clock:advance(seconds)
  return self:tick()
end

-- requests ----------------------------------------------------------------------

local BODY_METHODS = { POST = true, PUT = true, PATCH = true, DELETE = true }

-- Key from "Authorization: Bearer KEY"; stops with UNAUTHORIZED.
local function authenticate(self, req)
  local h = req.headers and req.headers.authorization
  if not h or h == "" then
    reply.fail("UNAUTHORIZED", "Missing API key: send Authorization: Bearer YOUR_API_KEY")
  end
  local token = h:match("^[Bb]earer%s+(%S+)%s*$")
  if not token then reply.fail("UNAUTHORIZED", "Authorization header must be 'Bearer YOUR_API_KEY'") end
  local key = self.st:key(token)
  if not key then reply.fail("UNAUTHORIZED", "Invalid API key") end
  if key.revoked then reply.fail("UNAUTHORIZED", "API key has been revoked") end
  return key
end

-- Fixed-window limit per key, in real seconds (policy.rate_limit).
local function rate_limit(self, key)
  local rl = key.rate_limit
  if not rl then return end
  local now = self.realtime()
  local w = self._rate[key.key]
  if not w or now >= w.start + rl.window then
    w = { start = now, count = 0 }
    self._rate[key.key] = w
  end
  w.count = w.count + 1
  if w.count > rl.limit then
    local wait = math.max(1, math.ceil(w.start + rl.window - now))
    reply.fail("RATE_LIMITED", ("Rate limit exceeded, retry in %ds"):format(wait),
      { ["retry-after"] = tostring(wait) })
  end
end

local function authorize(self, key, ep)
  local scope = policy.scopes[ep.id]
  local has = false
  for _, s in ipairs(key.scopes) do if s == scope then has = true break end end
  if not has then
    reply.fail("INSUFFICIENT_PERMISSIONS", ("This API key lacks the '%s' scope needed for %s %s")
      :format(scope, ep.method, ep.path))
  end
  local acct = self.st:account(key.user_id)
  local feature = scope:match("^([^:]+)")
  if acct.disabled[feature] then
    reply.fail("PERMISSION_DENIED", ("The '%s' feature is disabled for this account"):format(feature))
  end
  return acct
end

-- Answers one API request (the path is under catalogue.base_path); notes
-- the endpoint in `info` for the request log.
function App:dispatch(req, info)
  local ep, found = catalogue.route(req.method, req.path)
  if not ep then
    local path = req.path:sub(#catalogue.base_path + 1)
    if found then
      local allowed = table.concat(found, ", ")
      reply.fail("NOT_FOUND", ("No route for %s %s (allowed: %s)"):format(req.method, path, allowed),
        { allow = allowed })
    end
    reply.fail("NOT_FOUND", ("No route for %s %s"):format(req.method, path))
  end
  info.endpoint = ep.id
  local key = authenticate(self, req)
  rate_limit(self, key)
  local acct = authorize(self, key, ep)
  local ctx = {
    app = self, st = self.st, ep = ep, key = key, account = acct, uid = acct.user_id,
    params = found, query = request.query(req.query),
    body = BODY_METHODS[req.method] and request.body(req.body) or {},
    now = self:now(),
    origin = req.headers and req.headers.host and ("http://" .. req.headers.host) or self.origin,
  }
  local res = self.handlers[ep.id](ctx)
  if ep.method ~= "GET" then self.dirty = true end
  return res
end

-- Runs fn(...) and turns an API error into its answer; any other error is a
-- bug: logged with a traceback, answered INTERNAL_ERROR.
local function protect(fn, ...)
  local ok, res = xpcall(fn, function(e)
    if reply.is_error(e) then return e end
    return { bug = debug.traceback(tostring(e), 2) }
  end, ...)
  if ok then return res end
  if reply.is_error(res) then return reply.from_error(res) end
  io.stderr:write("pivday.sandbox: internal error: ", res.bug, "\n")
  return reply.from_error(reply.error("INTERNAL_ERROR", "Something went wrong on our side"))
end

local function is_loopback(peer)
  return peer == nil or peer == "::1" or peer:match("^127%.") ~= nil or peer:match("^::ffff:127%.") ~= nil
end

local function log_request(self, req, status, extra)
  local log = self.requests
  local entry = {
    id = #log > 0 and log[#log].id + 1 or 1,
    at = self:iso(), method = req.method, path = req.path, query = req.query or "",
    status = status, peer = req.peer,
  }
  for k, v in pairs(extra or {}) do entry[k] = v end
  log[#log + 1] = entry
  if #log > policy.limits.request_log then table.remove(log, 1) end
end

--- Handles one HTTP request: returns status, headers, body (or self.DROP).
function App:handle(req)
  self:tick()
  local path = req.path or "/"
  if path:sub(1, 10) == "/_sandbox/" or path == "/_sandbox" then
    local res
    if not is_loopback(req.peer) then
      res = reply.from_error(reply.error("PERMISSION_DENIED", "The sandbox control API only answers loopback clients"))
    else
      res = protect(control.handle, self, req)
    end
    return reply.render(res)
  end
  if path:sub(1, #files.PREFIX) == files.PREFIX then
    return files.serve(self, req)
  end
  if path:sub(1, #catalogue.base_path + 1) ~= catalogue.base_path .. "/" then
    local res = reply.from_error(reply.error("NOT_FOUND", "No route for " .. (req.method or "?") .. " " .. path))
    log_request(self, req, res.status)
    return reply.render(res)
  end

  local fault = control.take_fault(self, req)
  if fault then
    if fault.drop == "before" then
      log_request(self, req, nil, { fault = "drop before" })
      return self.DROP
    elseif fault.delay then
      self.sleep(fault.delay)
    elseif fault.status then
      local res = reply.from_error(control.fault_error(fault))
      log_request(self, req, res.status, { fault = tostring(fault.status) })
      return reply.render(res)
    end
  end

  local info = {}
  local res = protect(self.dispatch, self, req, info)
  if fault and fault.drop == "after" then
    log_request(self, req, res.status, { endpoint = info.endpoint, fault = "drop after" })
    return self.DROP
  end
  log_request(self, req, res.status, { endpoint = info.endpoint, fault = fault and fault.delay and "delay" or nil })
  return reply.render(res)
end

M.App = App
return M
