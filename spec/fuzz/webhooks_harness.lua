-- spec/fuzz/webhooks_harness.lua: the Lua half of fuzz_webhooks.
--
-- Loaded once by the C target; returns feed(body), which POSTs `body` to a
-- real pivday.webhooks listener (with a journal) on its secret path, over a
-- keep-alive connection on 127.0.0.1, then turns the loop until the
-- delivery is answered and dispatched. Any broken invariant calls
-- fuzz_abort (a C function that aborts, so libFuzzer keeps the input):
--   * every delivery is answered, 200, 400 or 405;
--   * no error reaches async.report (handlers, flush, dispatch);
--   * an accepted event reaches the "*" handler once, and never twice;
--   * the journal line of an accepted event reads back (journal.read) as the
--     same event: same dedupe key as the handler's event has;
--   * after a restart from the journal, a repeat of a recent accepted body
--     is recognised as a duplicate (the journal keeps the event's identity).
local fuzz_abort = assert(fuzz_abort)
local core = require "pivday.core"
local async = require "pivday.async"
local tcp = require "pivday.tcp"
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
local last_lines            -- the last journal lines the listener queued
local scratch = dir .. "/line.jsonl"
local conn                  -- the keep-alive connection to the listener

local function open()
  local err
  hooks, err = webhooks.new{ port = 0, path = PATH, journal = jpath,
    retention = 0, dedupe_window = 5, recent = 8 }
  if not hooks then fuzz_abort("cannot open the listener: " .. tostring(err)) end
  -- Short retention bounds the journal over millions of inputs (it compacts
  -- events done more than 5 s ago); the window bounds its keys itself.
  local j = hooks._journal
  local append_lines = j.append_lines
  function j.append_lines(self, text, at)
    last_lines = text
    return append_lines(self, text, at)
  end
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

-- The status of one answer read from conn, or nil when the connection
-- failed (then it is dropped, and the next delivery reconnects).
local function read_answer()
  local got = ""
  while true do
    local head_end = got:find("\r\n\r\n", 1, true)
    if head_end then
      local len = tonumber(got:match("\r\n[Cc]ontent%-[Ll]ength: *(%d+)")) or 0
      if #got >= head_end + 3 + len then
        if got:find("\r\nConnection: close\r\n", 1, true) then conn:close() conn = nil end
        return tonumber(got:match("^HTTP/1%.1 (%d%d%d) "))
      end
    end
    local data = conn:receive(10)
    if not data then
      conn:close()
      conn = nil
      return nil
    end
    got = got .. data
  end
end

local function deliver(body, method)
  if not conn then
    local err
    conn, err = tcp.connect("127.0.0.1", hooks.port, 5)
    if not conn then fuzz_abort("cannot connect to the listener: " .. tostring(err)) end
  end
  conn:send(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    .. "Content-Length: %d\r\n\r\n%s"):format(method or "POST", PATH, #body, body))
  local status = read_answer()
  if not status then fuzz_abort("delivery not answered") end
  -- The answer went out from the flush that dispatched the event; these
  -- turns run what it started (handler tasks, done marks).
  for _ = 1, 3 do core.step(0) end
  return status
end

local function restart()
  if conn then conn:close() conn = nil end
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
    if not ev or ev.raw == nil or not last_lines then fuzz_abort("accepted event not handled") end
    local f = assert(io.open(scratch, "wb"))
    f:write(last_lines)
    f:close()
    local recs = journal_mod.read(scratch)
    local rec = recs and recs[1]
    if not rec or #recs ~= 1 or rec.id ~= ev.id or type(rec.event.data) ~= "table" or
        dedupe.key(rec.event.event_type, rec.event.timestamp, rec.event.data)
          ~= dedupe.key(ev.event_type, ev.timestamp, ev.data) then
      fuzz_abort(("the journal does not give back the event it was given: %q"):format(body))
    end
    last_ev, last_lines = nil, nil
  end
  if hooks.stats.received > before and nrecent < 4 then
    nrecent = nrecent + 1
    recent[nrecent] = { body = body, at = os.time() }
  end
  if fed % 1000 == 0 or (os.getenv("FUZZ_RESTART_EACH") and nrecent > 0) then restart() end
end
