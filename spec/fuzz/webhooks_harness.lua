-- spec/fuzz/webhooks_harness.lua: the Lua half of fuzz_webhooks.
--
-- Loaded once by the C target; returns feed(body), which hands `body` to a
-- real pivday.webhooks listener (with a journal) as a POST to its secret
-- path, exactly as the server's request callback would, then turns the loop
-- until the delivery is answered and dispatched. Any broken invariant calls
-- fuzz_abort (a C function that aborts, so libFuzzer keeps the input):
--   * every delivery is answered exactly once, 200 or 400;
--   * no error reaches async.report (handlers, flush, dispatch);
--   * an accepted event reaches the "*" handler once, and never twice;
--   * the journal line of an accepted event reads back (journal.read) as the
--     same event: same dedupe key as the listener computed;
--   * after a restart from the journal, a repeat of a recent accepted body
--     is recognised as a duplicate (the journal keeps the event's identity).
local fuzz_abort = assert(fuzz_abort)
local core = require "pivday.core"
local async = require "pivday.async"
local webhooks = require "pivday.webhooks"
local journal_mod = require "pivday.webhooks.journal"
local dedupe = require "pivday.webhooks.dedupe"

local dir = assert(os.getenv("FUZZ_TMPDIR"), "FUZZ_TMPDIR not set")
local jpath = dir .. "/journal.jsonl"
for _, f in ipairs{ jpath, jpath .. ".lock", jpath .. ".secret", jpath .. ".tmp" } do os.remove(f) end

async.report = function(msg) fuzz_abort("async.report: " .. tostring(msg)) end

local PATH = "/hooks/0123456789abcdef0123456789abcdef"
local hooks
local handled = {}          -- event id -> times a handler ran
local recent, nrecent = {}, 0 -- accepted bodies, for the restart check
local fed = 0
local last_ev               -- the last event a handler saw
local scratch = dir .. "/line.jsonl"

local function open()
  local err
  hooks, err = webhooks.new{ port = 0, path = PATH, journal = jpath,
    retention = 0, dedupe_window = 5, recent = 8 }
  if not hooks then fuzz_abort("cannot open the listener: " .. tostring(err)) end
  -- Bounded memory over millions of inputs: few keys, short retention (the
  -- journal compacts events done more than 5 s ago).
  hooks._window.cap = 5000
  hooks:on("*", function(ev)
    if type(ev.data) ~= "table" or type(ev.event_type) ~= "string" then
      fuzz_abort("handler got a malformed event")
    end
    local n = (handled[ev.id] or 0) + 1
    handled[ev.id] = n
    if n > 1 then fuzz_abort("event " .. tostring(ev.id) .. " handled twice") end
    last_ev = ev
  end)
end

-- Turns the loop until nothing of ours is pending (bounded).
local function settle(answered)
  for _ = 1, 200 do
    core.step(0)
    if answered() and not hooks._scheduled then return end
  end
  if not answered() then fuzz_abort("delivery not answered after 200 loop turns") end
end

local function deliver(body, method)
  local calls, status = 0, nil
  local h = {
    respond = function(_, st) calls = calls + 1 status = st end,
    drop = function() calls = calls + 1 status = "drop" end,
  }
  hooks:_request{ method = method or "POST", path = PATH, query = "", target = PATH,
    headers = { ["content-type"] = "application/json" }, body = body,
    peer = "127.0.0.1", handle = h }
  settle(function() return calls > 0 end)
  core.step(0) -- handler tasks
  if calls ~= 1 then fuzz_abort("answered " .. calls .. " times") end
  return status
end

local function restart()
  hooks:close()
  core.step(0)
  handled = {}
  open()
  core.step(0)
  for i = 1, nrecent do
    local before = hooks.stats.duplicates
    -- Only what is still inside the dedupe window (5 s) counts.
    if os.time() - recent[i].at >= 4 then goto next end
    local st = deliver(recent[i].body)
    if st ~= 200 or hooks.stats.duplicates ~= before + 1 then
      fuzz_abort(("after a restart a repeat was not taken as a duplicate (status %s): %q")
        :format(tostring(st), recent[i].body))
    end
    ::next::
  end
  recent, nrecent = {}, 0
end

open()

return function(body)
  fed = fed + 1
  local before = hooks.stats.received
  local st = deliver(body, #body % 17 == 0 and "PUT" or "POST")
  if st ~= 200 and st ~= 400 and st ~= 405 then
    fuzz_abort("unexpected status " .. tostring(st))
  end
  if hooks.stats.received > before then
    -- The line the journal writes for it must read back as the same event.
    local ev = last_ev
    if not ev or ev.raw == nil then fuzz_abort("accepted event not handled") end
    local j = setmetatable({ _buf = {}, _n = 0 }, getmetatable(hooks._journal))
    j:append(1, 1, ev.raw)
    local f = assert(io.open(scratch, "wb"))
    f:write(j._buf[1])
    f:close()
    local recs = journal_mod.read(scratch)
    local rec = recs and recs[1]
    if not rec or type(rec.event.data) ~= "table" or
        dedupe.key(rec.event.event_type, rec.event.timestamp, rec.event.data) ~= ev._key then
      fuzz_abort(("the journal does not give back the event it was given: %q"):format(body))
    end
    last_ev = nil
  end
  if hooks.stats.received > before and nrecent < 4 then
    nrecent = nrecent + 1
    recent[nrecent] = { body = body, at = os.time() }
  end
  if fed % 1000 == 0 or (os.getenv("FUZZ_RESTART_EACH") and nrecent > 0) then restart() end
end
