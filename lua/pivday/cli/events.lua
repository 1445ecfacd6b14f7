--- pivday.cli.events: `pivday events`, what a webhook journal holds, and
-- `pivday events replay`, delivering it again.
--
-- Listing only reads the file (no lock), so it works while a listener runs.
-- Replay marks forwarded events done only when it can take the journal's
-- lock, i.e. when no listener is appending to it.
local pivday = require "pivday"
local cli = require "pivday.cli"
local time = require "pivday.time"
local journal_mod = require "pivday.webhooks.journal"
local listen = require "pivday.cli.listen"

local M = {}

local DEFAULT_JOURNAL = "pivday-webhooks.jsonl"

local USAGE = [[
usage: pivday events [--journal FILE] [--type T ...] [--since TIME] [--pending] [--json]
       pivday events replay [--journal FILE] [--type T ...] [--since TIME] [--all]
                            [--forward-to URL]
Lists the events a webhook journal holds (`pivday listen --journal`,
pivday.webhooks{journal=}), or delivers them again.
  --journal FILE    the journal (default: $PIVDAY_JOURNAL, else ]] .. DEFAULT_JOURNAL .. [[)
  --type T          only events of type T (repeatable)
  --since TIME      only events received since TIME: 2026-05-22T12:00:00Z,
                    epoch seconds, or an age such as 90s, 15m, 2h, 3d
  --pending         list only events whose handlers have not finished
  --json            one JSON object per event
replay:
  --all             every selected event, not only the pending ones
  --forward-to URL  POST each event, as received, to URL (without it the
                    raw events are printed as JSON lines); forwarded pending
                    events are marked done unless a listener holds the journal
]]

local SPEC = {
  journal = "value", type = "list", since = "value", pending = "flag", json = "flag",
  all = "flag", forward_to = "value", help = "flag",
}

local UNITS = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 }

--- Parses --since: ISO 8601, epoch seconds, or an age ("15m"). Returns
-- epoch seconds, or nil and a message.
function M.parse_since(s, now)
  local n, unit = s:match("^(%d+%.?%d*)([smhdw])$")
  if n then return (now or os.time()) - tonumber(n) * UNITS[unit] end
  if s:match("^%d+$") then return tonumber(s) end
  local t, err = time.parse(s)
  if not t then return nil, "--since: " .. err .. " (or use epoch seconds, or an age such as 15m)" end
  return t
end

local function parse_args(args)
  local o, rest = cli.parse(args, SPEC)
  if not o then return nil, rest end
  if o.help then return nil, nil end
  local sub = rest[1]
  if sub ~= nil and sub ~= "replay" and sub ~= "list" then
    return nil, "unknown subcommand '" .. sub .. "' (want replay)"
  end
  if #rest > 1 then return nil, "unexpected argument '" .. rest[2] .. "'" end
  o.replay = sub == "replay"
  if not o.replay and (o.all or o.forward_to) then return nil, "--all and --forward-to belong to `events replay`" end
  if o.replay and o.json then return nil, "--json is for listing (replay without --forward-to prints JSON)" end
  o.journal = o.journal or os.getenv("PIVDAY_JOURNAL") or DEFAULT_JOURNAL
  if o.since then
    local t, err = M.parse_since(o.since)
    if not t then return nil, err end
    o.since_epoch = t
  end
  if o.forward_to and not o.forward_to:match("^https?://[^/]") then return nil, "--forward-to needs an http(s) URL" end
  if o.type then
    o.types = {}
    for _, t in ipairs(o.type) do o.types[t] = true end
  end
  return o
end

local function selected(o, rec, pending_only)
  if o.types and not o.types[rec.event.event_type] then return false end
  if o.since_epoch and rec.at < o.since_epoch then return false end
  if pending_only and rec.done then return false end
  return true
end

local function as_event(rec)
  local ev = rec.event
  ev.id, ev.received_at, ev.raw = rec.id, rec.at, rec.body
  return ev
end

local function list(o, records, summary)
  local shown = 0
  for _, rec in ipairs(records) do
    if selected(o, rec, o.pending) then
      shown = shown + 1
      local ev = as_event(rec)
      if o.json then
        io.stdout:write(listen.json_event(ev, { done = rec.done }), "\n")
      else
        io.stdout:write(listen.format_event(ev, rec.done and "" or "  [pending]"), "\n")
      end
    end
  end
  local oldest = records[1] and time.format(records[1].at) or "-"
  local line = ("%s: %d events (%d pending, %d done), %.1f KiB, oldest %s; %d shown%s\n")
    :format(o.journal, summary.events, summary.pending, summary.done, summary.bytes / 1024, oldest, shown,
      summary.skipped > 0 and (", %d unreadable lines skipped"):format(summary.skipped) or "")
  ;(o.json and io.stderr or io.stdout):write(line)
  return 0
end

local function replay(o, records)
  local chosen = {}
  for _, rec in ipairs(records) do
    if selected(o, rec, not o.all) then chosen[#chosen + 1] = rec end
  end
  if not o.forward_to then
    for _, rec in ipairs(chosen) do io.stdout:write((rec.body:gsub("[\r\n]", " ")), "\n") end
    io.stderr:write(("%d events printed (nothing marked done)\n"):format(#chosen))
    return 0
  end
  local status = 0
  local delivered = {}
  pivday.run(function()
    for _, rec in ipairs(chosen) do
      local code, secs = listen.forward(o.forward_to, rec.body)
      local ev = as_event(rec)
      if code and code >= 200 and code <= 299 then
        delivered[#delivered + 1] = rec
        io.stdout:write(listen.format_event(ev, ("  -> %d in %.0f ms"):format(code, secs * 1000)), "\n")
      else
        status = 1
        io.stdout:write(listen.format_event(ev, "  -> FAILED: " .. (code and ("HTTP " .. code) or tostring(secs))), "\n")
      end
    end
  end)
  -- Mark what was delivered, but never behind a running listener's back.
  local marked = 0
  local j, err = journal_mod.open(o.journal)
  if j then
    for _, rec in ipairs(delivered) do
      if not rec.done then
        j:done(rec.id)
        marked = marked + 1
      end
    end
    j:close()
  else
    io.stderr:write("pivday events: not marking events done: ", err, "\n")
  end
  io.stderr:write(("%d of %d events delivered to %s, %d marked done\n"):format(#delivered, #chosen, o.forward_to, marked))
  return status
end

--- `pivday events [replay] ...`. Returns the exit status (0 ok, 1 a
-- failure, 2 usage).
function M.main(args)
  local o, err = parse_args(args or {})
  if not o then return require("pivday.cli").usage_exit("events", err, USAGE) end
  io.stdout:setvbuf("line")
  local f = io.open(o.journal, "rb")
  if not f then
    io.stderr:write("pivday events: no journal at ", o.journal, " (see --journal)\n")
    return 1
  end
  f:close()
  local records, summary = journal_mod.read(o.journal)
  if not records then
    io.stderr:write("pivday events: cannot read ", o.journal, ": ", tostring(summary), "\n")
    return 1
  end
  if o.replay then return replay(o, records) end
  return list(o, records, summary)
end

return M
