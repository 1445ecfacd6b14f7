--- pivday.sandbox.webhooks: events and their delivery, as documented.
--
-- emit() records the event (the event log) and creates one delivery per
-- distinct webhook URL of the account's live keys. A delivery is a POST of
-- {event_type, timestamp, data} with User-Agent piv.day-webhook/1.0; any 2xx
-- within the deadline (5 s) is success; otherwise up to 3 retries after 1, 2
-- and 4 s (divided by the clock speed), then "failed", which resend() can
-- start again. Every attempt is in the delivery log.
--
-- The transport is injected: init.lua passes pivday.http.request, spawn and
-- sleep; without a transport (pure specs) deliveries stay "pending" until
-- deliver() is called.
local json = require "pivday.json"
local policy = require "pivday.sandbox.policy"
local views = require "pivday.sandbox.views"

local M = {}

local Hooks = { __name = "pivday.sandbox.Webhooks" }
Hooks.__index = Hooks

local EVENT_LOG_MAX = 1000
local DELIVERY_LOG_MAX = 1000   -- finished deliveries beyond this are forgotten, oldest first

--- opts: send = function(url, body, headers, timeout) -> status | nil, err;
-- spawn = function(fn); sleep = function(seconds); timeout (s, default
-- policy.webhooks.timeout); backoff (list of s, default 1, 2, 4).
function M.new(app, opts)
  opts = opts or {}
  return setmetatable({
    app = app,
    send = opts.send,
    spawn = opts.spawn or function(fn) fn() end,
    sleep = opts.sleep or function() end,
    timeout = opts.timeout or policy.webhooks.timeout,
    backoff = opts.backoff or policy.webhooks.backoff,
  }, Hooks)
end

--- The distinct webhook URLs of the account's keys that are not revoked.
function Hooks:urls(uid)
  local out, seen = {}, {}
  for _, k in ipairs(self.app.st:keys_of(uid)) do
    local url = k.webhook_url
    if url and url ~= "" and not k.revoked and not seen[url] then
      seen[url] = true
      out[#out + 1] = url
    end
  end
  return out
end

--- Emits an event for account `uid`. Returns the event record.
function Hooks:emit(uid, event_type, data)
  local st = self.app.st
  local event = {
    seq = st:next_seq("event"), user_id = uid, event_type = event_type,
    timestamp = views.time(self.app:now()), data = data,
  }
  local log = st.data.events or {}
  st.data.events = log
  log[#log + 1] = event
  if #log > EVENT_LOG_MAX then table.remove(log, 1) end
  local payload = json.encode { event_type = event_type, timestamp = event.timestamp, data = data }
  for _, url in ipairs(self:urls(uid)) do
    local d = {
      id = st:next_seq("delivery"), user_id = uid, event_type = event_type, url = url,
      payload = payload, status = "pending", attempts = {}, created_at = event.timestamp,
    }
    st.data.deliveries[#st.data.deliveries + 1] = d
    self:start(d)
  end
  self:prune()
  return event
end

-- Keeps the delivery log bounded; pending and in-flight ones always stay.
function Hooks:prune()
  local list = self.app.st.data.deliveries
  local i = 1
  while #list > DELIVERY_LOG_MAX and i <= #list do
    local st = list[i].status
    if st == "delivered" or st == "failed" then table.remove(list, i) else i = i + 1 end
  end
end

function Hooks:find(id)
  for _, d in ipairs(self.app.st.data.deliveries) do
    if d.id == id then return d end
  end
  return nil
end

--- Starts delivering `d` in its own task, when there is a transport.
function Hooks:start(d)
  if not self.send then return end
  d.status = "delivering"
  self.spawn(function() self:deliver(d) end)
end

-- The real seconds to wait before retry `i` (the documented backoff runs on
-- sandbox time, so a faster clock retries sooner).
function Hooks:wait(i)
  local speed = self.app.clock.speed
  if not speed or speed <= 0 then speed = 1 end
  return self.backoff[i] / speed
end

--- Delivers `d` now, with the documented retries; may sleep between them.
function Hooks:deliver(d)
  assert(self.send, "pivday.sandbox: no webhook transport")
  d.status = "delivering"
  local headers = { ["content-type"] = "application/json", ["user-agent"] = policy.webhooks.user_agent }
  for attempt = 1, #self.backoff + 1 do
    local at = views.time(self.app:now())
    local status, err = self.send(d.url, d.payload, headers, self.timeout)
    d.attempts[#d.attempts + 1] = { n = #d.attempts + 1, at = at, status = status, error = err and tostring(err) or nil }
    self.app.dirty = true
    if status and status >= 200 and status < 300 then
      d.status = "delivered"
      return true
    end
    if attempt <= #self.backoff then self.sleep(self:wait(attempt)) end
  end
  d.status = "failed"
  return false
end

--- Starts a failed delivery again (all attempts anew). Returns it, or nil
-- and a message.
function Hooks:resend(id)
  local d = self:find(id)
  if not d then return nil, "no delivery " .. tostring(id) end
  if d.status ~= "failed" then
    return nil, ("delivery %d is %s; only failed deliveries can be re-sent"):format(id, d.status)
  end
  d.resends = (d.resends or 0) + 1
  d.status = "pending"
  self:start(d)
  return d
end

--- Restarts deliveries a previous run left pending (after a state load).
function Hooks:resume()
  for _, d in ipairs(self.app.st.data.deliveries) do
    if d.status == "pending" or d.status == "delivering" then self:start(d) end
  end
end

return M
