--- pivday.webhooks: receive piv.day events without losing any, and await them.
--
--     local hooks = assert(pivday.webhooks{ journal = "events.jsonl" })
--     print("register this URL in the dashboard:", hooks.url)
--     hooks:on("sms.received", function(ev) print(ev.data.code) end)
--     local w = hooks:expect({"verify.completed", "verify.failed"}, { piv_num_id = id })
--     api.numbers.verify(id, { qr_url = url })            -- the triggering call
--     local ev, err = w:wait(300)
--
-- piv.day delivers an event as a plain JSON POST {event_type, timestamp,
-- data}, unsigned and without an event id, and retries (1 s / 2 s / 4 s)
-- unless it gets a 2xx within 5 s (REFERENCE §6, QUIRKS 27-29). So:
--
-- * The only credential is the URL: the path is a random secret
--   (/hooks/<32 hex>), compared in constant time, kept beside the journal
--   so a restart keeps the registered URL.
-- * We answer at once and run handlers afterwards, in tasks: one task runs
--   the handlers of a loop turn one after the other, and a handler that
--   waits keeps that task while a new one takes over the rest (see
--   _run_jobs), so no handler ever holds up another.
-- * With a journal, "2xx" means "on disk": the event line is appended and
--   fdatasync'd before the answer. Everything that arrives in one loop turn
--   shares one write and one fdatasync.
-- * A retried delivery (same type, timestamp and data) is answered but not
--   delivered again (see pivday.webhooks.dedupe).
--
-- No Lua runs per request: pivday.core's Hook (bindings/hook.c) checks
-- peer, path and method, decodes the body into the event table once,
-- checks its shape, looks its dedupe key up in the window, queues its
-- journal line and answers (without a journal). Once per loop turn it
-- calls _flush, which takes the turn's events, writes and syncs their
-- lines, has the Hook answer their senders, and dispatches them.
local core = require "pivday.core"
local async = require "pivday.async"
local json = require "pivday.json"
local Error = require "pivday.error"
local cidr = require "pivday.webhooks.cidr"
local dedupe = require "pivday.webhooks.dedupe"
local journal_mod = require "pivday.webhooks.journal"

local M = {}

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local byte, format = string.byte, string.format
local os_time, traceback = os.time, debug.traceback
-- The Hook decodes bodies as pivday.json.decode would (integers as
-- integers, null as json.null, [] marked a list: bindings/canon.c), and
-- never accepts what cjson refuses, so what it accepts the journal's reader
-- reads back the same.
local LIST_MT = getmetatable(json.array())

--- Defaults of pivday.webhooks{...}.
M.DEFAULTS = {
  host = "127.0.0.1",
  port = 8787,
  max_body = 256 * 1024,     -- the largest documented event is a restore summary
  max_header = 16 * 1024,
  header_timeout = 10,       -- seconds to send the request head, then cut
  idle_timeout = 60,
  dedupe_window = 60,        -- the sender's retries end within ~10 s of the first try
  retention = 7 * 86400,     -- done events are compacted away after this
  recent = 256,              -- events kept for a later wait()
  sync_inline = 0.002,       -- s: a journal sync this fast blocks the loop (see _flush)
}

local Hooks = {}
Hooks.__index = Hooks
Hooks.__name = "pivday.Webhooks"

local Waiter = {}
Waiter.__index = Waiter
Waiter.__name = "pivday.webhooks.Waiter"

-- Errors -----------------------------------------------------------------

local function closed_error()
  return Error.new{ kind = "cancelled", code = "CLOSED", message = "the webhook listener was closed" }
end

local function local_error(code, message)
  return Error.new{ kind = "local", code = code, message = message }
end

-- The secret path ------------------------------------------------------------

local function random_hex(n)
  local f, err = io.open("/dev/urandom", "rb")
  if not f then return nil, err end
  local s = f:read(n)
  f:close()
  if not s or #s ~= n then return nil, "short read from /dev/urandom" end
  return (s:gsub(".", function(c) return format("%02x", byte(c)) end))
end

-- Replaces `file` with `text` durably (write beside, sync, rename, sync dir).
local function write_atomic(file, text)
  local tmp = file .. ".tmp"
  local f, err = core.open_file(tmp, "w")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  if ok then ok, werr = f:sync() end
  f:close()
  if ok then ok, werr = os.rename(tmp, file) end
  if not ok then
    os.remove(tmp)
    return nil, werr
  end
  core.sync_dir(file)
  return true
end

--- The secret path for a journal: the one saved in JOURNAL.secret, or a new
-- random one saved there (mode 0600). Without a journal, a new one each run.
-- Returns the path, or nil and a message.
function M.secret_path(journal_path)
  local file = journal_path and journal_path .. ".secret"
  if file then
    local f = io.open(file, "rb")
    if f then
      local p = f:read("l")
      f:close()
      if p and p:match("^/hooks/%x+$") then return p end
    end
  end
  local hex, err = random_hex(16)
  if not hex then return nil, "cannot read /dev/urandom: " .. tostring(err) end
  local path = "/hooks/" .. hex
  if file then
    local ok, werr = write_atomic(file, path .. "\n")
    if not ok then return nil, ("cannot save the webhook path to %s: %s"):format(file, tostring(werr)) end
  end
  return path
end

-- Matching -------------------------------------------------------------------

-- nil (any type), "*", a type, or a list of types -> nil or a set.
local function type_set(types, level)
  if types == nil or types == "*" then return nil end
  if type(types) == "string" then return { [types] = true } end
  if type(types) ~= "table" then
    error("bad argument #1 (event type or list of types expected, got " .. type(types) .. ")", level + 1)
  end
  local set = {}
  for i, t in ipairs(types) do
    if type(t) ~= "string" then error(("bad argument #1 (types[%d] is not a string)"):format(i), level + 1) end
    if t == "*" then return nil end
    set[t] = true
  end
  return set
end

-- A table of data fields or fn(data, event) -> a predicate. Field values
-- compare equal across number and string ("42" matches 42): the API itself
-- sends ids sometimes as strings, sometimes as integers (QUIRKS 7).
local function matcher(match, level)
  if match == nil then return nil end
  if type(match) == "function" then return match end
  if type(match) ~= "table" then
    error("bad argument #2 (table of data fields or function expected, got " .. type(match) .. ")", level + 1)
  end
  local fields = {}
  for k, v in pairs(match) do fields[k] = v end
  return function(data)
    for k, v in pairs(fields) do
      local x = data[k]
      if x ~= v then
        local tx = type(x)
        if x == nil or tx == type(v) or (tx ~= "number" and tx ~= "string")
            or tostring(x) ~= tostring(v) then
          return false
        end
      end
    end
    return true
  end
end

-- Whether subscriber s (waiter or iterator) wants ev. A match function that
-- raises is reported and counts as "no": it must not break delivery.
local function wants(s, ev)
  local types = s._types
  if types and not types[ev.event_type] then return false end
  local m = s._match
  if not m then return true end
  local ok, r = pcall(m, ev.data, ev)
  if not ok then
    async.report("pivday.webhooks: match function failed: " .. tostring(r))
    return false
  end
  return r and true or false
end

local function is_loopback(host)
  if host == "localhost" then return true end
  local raw = cidr.parse_ip(host)
  if not raw then return false end
  if #raw == 4 then return byte(raw, 1) == 127 end
  return raw == ("\0"):rep(15) .. "\1"
end

-- Construction --------------------------------------------------------------------

local function check_number(opts, name, min)
  local v = opts[name]
  if v == nil then return M.DEFAULTS[name] end
  if type(v) ~= "number" or v < (min or 0) then
    error(("bad argument #1 to 'webhooks' (field '%s' must be a number >= %s)"):format(name, min or 0), 3)
  end
  return v
end

--- Starts a webhook listener. opts (all optional):
-- `host` ("127.0.0.1"; anything but loopback prints a warning unless `allow`
-- is set), `port` (8787; 0 picks a free one), `path` (default: a random
-- secret /hooks/<32 hex>, persisted as JOURNAL.secret), `public_url` (the
-- HTTPS address of the proxy or tunnel in front: `hooks.url` is it joined
-- with the path), `journal` (file: events survive crashes and restarts),
-- `allow` (CIDR or list: other peers get 403), `max_body` (bytes, 256 KiB),
-- `dedupe_window` (s, 60), `retention` (s a done event stays in the journal,
-- 7 days), `recent` (events kept for a later `wait`, 256), `sync_inline` (s,
-- 0.002: a journal sync the last of which took longer runs in the thread
-- pool while other senders wait to be read), `header_timeout`,
-- `idle_timeout`, `max_connections`, `max_header`.
-- Returns the listener, or nil and a pivday.Error (LISTEN_FAILED,
-- JOURNAL_LOCKED, JOURNAL_ERROR).
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #1 to 'webhooks' (table expected, got " .. type(opts) .. ")", 2)
  end
  local host = opts.host or M.DEFAULTS.host
  if type(host) ~= "string" then error("bad argument #1 to 'webhooks' (field 'host' must be a string)", 2) end
  local port = opts.port or M.DEFAULTS.port
  if math.type(port) ~= "integer" or port < 0 or port > 65535 then
    error("bad argument #1 to 'webhooks' (field 'port' must be an integer 0..65535)", 2)
  end
  if opts.path ~= nil and (type(opts.path) ~= "string" or not opts.path:match("^/[%w%-%._~/]+$")) then
    error("bad argument #1 to 'webhooks' (field 'path' must start with / and use URL-safe characters)", 2)
  end
  if opts.public_url ~= nil and (type(opts.public_url) ~= "string" or not opts.public_url:match("^https?://[^/]")) then
    error("bad argument #1 to 'webhooks' (field 'public_url' must be an http(s) URL)", 2)
  end
  if opts.journal ~= nil and (type(opts.journal) ~= "string" or opts.journal == "") then
    error("bad argument #1 to 'webhooks' (field 'journal' must be a file name)", 2)
  end
  local allow
  if opts.allow ~= nil then
    local err
    allow, err = cidr.networks(opts.allow)
    if not allow then error("bad argument #1 to 'webhooks' (" .. err .. ")", 2) end
  end
  local max_body = check_number(opts, "max_body", 1)
  local window = check_number(opts, "dedupe_window", 0)
  local retention = check_number(opts, "retention", 0)
  local sync_inline = check_number(opts, "sync_inline", 0)
  local recent = math.tointeger(check_number(opts, "recent", 0))
  if not recent then error("bad argument #1 to 'webhooks' (field 'recent' must be an integer)", 2) end

  local self = setmetatable({
    host = host, public_url = opts.public_url, max_body = max_body,
    dedupe_window = window, retention = retention,
    sync_inline = sync_inline,
    stats = { received = 0, duplicates = 0, rejected = 0, delivered = 0, failed = 0, replayed = 0,
      syncs = 0, syncs_pooled = 0 },
    _window = dedupe.window(window),
    _on = {},                          -- event type or "*" -> list of fns
    _waiters = {},                     -- in registration order
    _subs = {},                        -- events{} iterators
    _recent = {}, _rhead = 1, _rtail = 0, _rcap = recent,
    _syncing = nil,                    -- {events, n} while their fdatasync runs
    _sync_took = 0,                    -- seconds the last sync took (see _flush)
    _lingers = 0, _lingered_at = 0,    -- turns waited for this batch, its size then (_linger)
    _synced = {}, _nsynced = 0,        -- synced events, delivered by the next flush
    _held = {},                        -- waiting for the first registration
    _jf = {}, _je = {}, _jh = 1, _jt = 0, -- handler runs queued (see _run_jobs)
    _ready = false,
  }, Hooks)

  -- The journal first: it decides the path and what is pending.
  if opts.journal then
    local j, err = journal_mod.open(opts.journal)
    if not j then
      return nil, local_error(err:find("in use", 1, true) and "JOURNAL_LOCKED" or "JOURNAL_ERROR", err)
    end
    self._journal = j
    self.journal = opts.journal
    local ok, lerr = pcall(self._load, self, j)
    if not ok then
      j:close()
      return nil, local_error("JOURNAL_ERROR", tostring(lerr))
    end
  end
  local path = opts.path
  if not path then
    local err
    path, err = M.secret_path(opts.journal)
    if not path then
      if self._journal then self._journal:close() end
      return nil, local_error("JOURNAL_ERROR", err)
    end
  end
  self.path = path
  local j = self._journal
  self._hook = core.hook({
    path = path, allow = allow, window = self._window, list_mt = LIST_MT,
    journal = j ~= nil, next_id = j and j.next_id or 1,
  }, function() self:_flush() end)

  local srv, err = core.server({
    host = host, port = port, max_body = max_body,
    max_header = opts.max_header or M.DEFAULTS.max_header,
    header_timeout = opts.header_timeout or M.DEFAULTS.header_timeout,
    idle_timeout = opts.idle_timeout or M.DEFAULTS.idle_timeout,
    max_connections = opts.max_connections,
    hook = self._hook,
  })
  if not srv then
    self._hook:close()
    if j then j:close() end
    return nil, local_error("LISTEN_FAILED", ("cannot listen on %s:%d: %s"):format(host, port, tostring(err)))
  end
  self._srv = srv
  self.port = srv:port()
  local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
  self.local_url = ("http://%s:%d%s"):format(shown, self.port, path)
  self.url = opts.public_url and (opts.public_url:gsub("/+$", "") .. path) or self.local_url

  if not is_loopback(host) and not allow then
    io.stderr:write(("pivday.webhooks: listening on %s:%d, reachable from the network; "
      .. "the secret path is the only protection (set allow = {CIDR...} to restrict peers)\n")
      :format(host, self.port))
  end
  -- `pivday --sandbox` registers every listener a script opens as the
  -- sandbox key's webhook URL.
  if M.on_open then M.on_open(self) end
  return self
end

-- Takes what the journal holds: not-done events wait for the first
-- registration; recent arrivals refill the dedupe window; old done events
-- are compacted away.
function Hooks:_load(j)
  local now = os_time()
  local since = now - self.dedupe_window
  local removable = 0
  local keep_after = now - math.max(self.retention, self.dedupe_window)
  for _, rec in ipairs(j.records) do
    local ev = rec.event
    if rec.at > since and type(ev.data) == "table" then
      self._window:add(dedupe.text_key(rec.body) or dedupe.key(ev.event_type, ev.timestamp, ev.data),
        rec.at)
    end
    if not rec.done then
      ev.id, ev.received_at, ev.raw, ev.replayed = rec.id, rec.at, rec.body, true
      if type(ev.data) ~= "table" then ev.data = {} end
      self._held[#self._held + 1] = ev
    elseif rec.at < keep_after then
      removable = removable + 1
    end
  end
  local summary = j.summary
  j.records = nil -- the bodies are not needed any more
  if removable > 0 or summary.skipped > 0 or (summary.done > 0 and summary.bytes > 1048576) then
    local res, err = j:compact(keep_after)
    if not res then async.report("pivday.webhooks: journal compaction failed: " .. tostring(err)) end
  end
end

-- The turn: what the Hook queued ------------------------------------------------

-- _flush runs on the next loop iteration (the Hook also asks for it after
-- every request it handled).
function Hooks:_schedule()
  local hook = self._hook
  if hook then hook:kick() end
end

-- The stats the Hook counts.
function Hooks:_count()
  local stats = self.stats
  stats.received, stats.duplicates, stats.rejected = self._hook:counts()
end

-- Not on disk, so not acknowledged: the senders get 503 and retry, and the
-- Hook forgets the batch's keys so the retries are not taken for
-- duplicates.
local function refuse(self, why, err)
  async.report("pivday.webhooks: journal " .. why .. " failed, answering 503: " .. tostring(err))
  self._hook:settle(false)
end

local now_s = core.now

--- Takes what the Hook queued this turn, writes its journal lines and
-- syncs them, then has the Hook answer the senders and dispatches the
-- events; delivers what the last sync made durable first. Runs once per
-- loop turn (from the Hook), or from close() with `now`: then the sync
-- blocks, covering a batch still syncing too.
--
-- With a journal this is a group commit: when other connections are open
-- and the last sync took longer than `sync_inline`, the fdatasync runs in
-- libuv's thread pool (File:sync_async), one at a time, while the loop
-- goes on reading and parsing; what arrives meanwhile stays queued in the
-- Hook and goes with the next sync, started as soon as this one completes
-- (_synced_cb). A batch's senders are answered when its sync completes,
-- and its events then handed to handlers, in arrival order. Before taking
-- a batch the sync may wait a few loop turns for more senders (_linger).
function Hooks:_flush(now)
  local hook = self._hook
  if not hook then return end
  self._flush_due = false
  self:_count()
  local j = self._journal
  -- Events the last sync made durable, delivered before any later ones.
  local nd = self._nsynced
  if nd > 0 then
    local synced = self._synced
    self._synced, self._nsynced = {}, 0
    self:_deliver_all(synced, nd)
  end
  local batch = self._syncing
  if j and batch and not now then
    -- A sync is running: this turn's arrivals wait for the next one.
    self:_run_jobs()
    return
  end
  if j and not now and self:_linger() then
    self:_run_jobs()
    return
  end
  local events, n, lines, nacks, next_id = hook:take()
  if j then
    j.next_id = next_id
    if j:should_compact(os_time() - math.max(self.retention, self.dedupe_window)) then
      self:compact() -- writes and syncs what is queued first
    end
    if lines then j:append_lines(lines, events[1].received_at) end
    if batch then
      -- close(): the running sync's events go with this blocking one (the
      -- Hook merged its senders already).
      self._syncing = nil
      local bev, bn = batch[1], batch[2]
      for i = 1, n do bev[bn + i] = events[i] end
      events, n = bev, bn + n
    end
    -- Overlap only when something can arrive meanwhile and the disk is
    -- slow: with every open connection waiting in this batch (one sender,
    -- or the last stragglers) a blocking sync costs the loop nothing, and a
    -- fast one (the last took at most `sync_inline`) stalls it less than
    -- the thread pool's round trip costs (hand-off, wake-up, a second batch
    -- in flight): under a burst on this machine's disk, ~0.5 ms syncs
    -- inline took 62-66K events/s where the pool took 54K.
    local srv = self._srv
    local background = nacks > 0 and not now and srv ~= nil and srv:connections() > nacks
      and self._sync_took > self.sync_inline
    if nacks > 0 then
      local stats = self.stats
      stats.syncs = stats.syncs + 1
      if background then stats.syncs_pooled = stats.syncs_pooled + 1 end
    end
    local started = nacks > 0 and now_s() -- only acknowledged batches' syncs are timed
    if nacks > 0 or j:pending() then
      local ok, err = j:flush(nacks > 0 and not background)
      if not ok then return refuse(self, "write", err) end
      if nacks > 0 and not background then self._sync_took = now_s() - started end
    end
    if background then
      batch = { events, n }
      self._syncing = batch
      local ok, err = j:sync_async(function(sok, serr)
        self._sync_took = now_s() - started
        self:_synced_cb(batch, sok, serr)
      end)
      if not ok then
        self._syncing = nil
        return refuse(self, "sync", err)
      end
      self:_run_jobs()
      return
    end
    hook:settle(true)
  end
  self:_deliver_all(events, n)
  self:_run_jobs()
end

-- Group commit, the wait: while the last loop turn brought new senders and
-- other connections are open (their events may be on the way), the sync
-- waits for up to LINGER_TURNS more turns, each a non-blocking poll of the
-- sockets (no timer: libuv's are whole milliseconds, longer than a sync).
-- Under a burst from 64 connections a batch grew from ~43 events to ~60,
-- one fdatasync for more of them: 60K -> 73K events/s. A lone sender is
-- never held: with no other connection open it goes at once, and a turn
-- that brings nobody new ends the wait.
local LINGER_TURNS = 4

function Hooks:_linger()
  local queued = self._hook:queued()
  local srv = self._srv
  if queued > self._lingered_at and self._lingers < LINGER_TURNS
      and srv ~= nil and srv:connections() > queued then
    self._lingers = self._lingers + 1
    self._lingered_at = queued
    self._hook:kick()
    return true
  end
  self._lingers, self._lingered_at = 0, 0
  return false
end

-- The journal's sync of `batch` completed: its senders get their 2xx, its
-- events go to handlers with the next flush, which also starts the sync of
-- what arrived meanwhile.
function Hooks:_synced_cb(batch, ok, err)
  if self._syncing ~= batch then return end -- close() took it over
  self._syncing = nil
  if not ok then
    refuse(self, "sync", err)
  else
    self._hook:settle(true)
    local events, n = batch[1], batch[2]
    local synced, nd = self._synced, self._nsynced
    for i = 1, n do synced[nd + i] = events[i] end
    self._nsynced = nd + n
  end
  self:_schedule()
end

-- Delivery -----------------------------------------------------------------------

-- Local functions, not methods: they run for every event, and a method
-- call looks its name up in the instance, misses, then in the class.
local dispatch, release, remember

-- Events wait in _held until the script registered something, and keep
-- their order behind a replay still in progress.
-- A script that never registers anything must not grow memory for ever:
-- past this many, the oldest held events are dropped from memory (with a
-- journal they stay pending on disk and come back after a restart).
local HELD_MAX = 10000

function Hooks:_deliver(ev)
  if self._ready and #self._held == 0 then
    dispatch(self, ev)
  else
    local held = self._held
    if not self._ready and #held >= HELD_MAX then table.remove(held, 1) end
    held[#held + 1] = ev
  end
end

-- _deliver for events[1..n]: ready or not is the same for all of them
-- (dispatching never holds an event back).
function Hooks:_deliver_all(events, n)
  if self._ready and #self._held == 0 then
    for i = 1, n do dispatch(self, events[i]) end
  else
    for i = 1, n do self:_deliver(events[i]) end
  end
end

-- Called by the first on/wait/expect/events/replay: from the next loop turn
-- on, held events (the journal's pending ones first) are delivered.
function Hooks:_make_ready()
  if self._ready then return end
  self._ready = true
  if #self._held > 0 then
    async.daemon(function()
      -- Events that arrive meanwhile are appended and delivered in order.
      local i = 1
      while i <= #self._held and not self._closed do
        local ev = self._held[i]
        if ev.replayed then self.stats.replayed = self.stats.replayed + 1 end
        dispatch(self, ev)
        i = i + 1
      end
      self._held = {}
      self:_run_jobs()
    end)
  end
end

local function mark_done(self, ev)
  local j = self._journal
  if j and ev.id then
    j:done(ev.id)
    -- One flush for all the marks until the next one runs.
    if not self._flush_due then
      self._flush_due = true
      self:_schedule()
    end
  end
end

-- Drops one hold on ev; the last one marks it done unless a handler failed.
-- Then _holds is -1: a stray release later changes nothing (a separate
-- `_done` field was the ninth key of the event table, which doubled its
-- hash part once more on every event).
function release(self, ev)
  local h = ev._holds - 1
  ev._holds = h
  if h == 0 then
    ev._holds = -1
    if ev._failed then
      self.stats.failed = self.stats.failed + 1
    else
      self.stats.delivered = self.stats.delivered + 1
      mark_done(self, ev)
    end
  end
end

-- Handler runs queued by dispatch (_jf[i] runs on _je[i]), taken in order
-- by workers. A worker runs one after the other while they return without
-- waiting; one that waits keeps its worker, whose resumption later just
-- carries on with whatever is queued then. The runs share one protected
-- call until one raises (a protected call per run was a tenth of the
-- dispatch's cost); `cur[1]` is the event being handled, so the one that
-- failed is known.
local function run_jobs(self, cur)
  local jf, je = self._jf, self._je
  while self._jh <= self._jt do
    local h = self._jh
    local fn, ev = jf[h], je[h]
    jf[h], je[h] = nil, nil
    self._jh = h + 1
    cur[1] = ev
    fn(ev)
    cur[1] = nil
    release(self, ev)
  end
end

local function worker(self)
  local cur = {}
  while true do
    local ok, err = xpcall(run_jobs, traceback, self, cur)
    if ok then break end
    local ev = cur[1]
    cur[1] = nil
    if ev then
      ev._failed = true
      async.report(("pivday.webhooks: handler for %s (event %s) failed; the event stays pending: %s")
        :format(ev.event_type, tostring(ev.id), tostring(err)))
      release(self, ev)
    else
      async.report("pivday.webhooks: delivery failed: " .. tostring(err))
    end
  end
  self._jh, self._jt = 1, 0
end

local function join_task(t) t:join() end

-- Runs the queued handlers now. A task per handler run was the largest
-- cost of an event after decoding (a coroutine, its closures and tables,
-- and the collector's work on them), so one task takes them all, and only
-- a handler that waits gets a task to itself: spawn_now returns when the
-- worker finished or waits, and then the next worker takes the rest.
-- Workers are daemon tasks (spawn_now's kind), so a non-daemon task joins
-- each waiting one: pivday.run waits for a handler as it did when each had
-- its own spawned task.
function Hooks:_run_jobs()
  while self._jh <= self._jt do
    local t = async.spawn_now(worker, self)
    if not t.done then async.spawn(join_task, t) end
  end
end

-- The recent ring: events no waiter took, oldest first, for a later wait.
-- Positions _rhead.._rtail only grow; position p lives in slot
-- (p - 1) % _rcap + 1, so the ring is a fixed-size array, and the new
-- event's slot holds the one it evicts: position tail - cap (or nil, when
-- a wait took that one). No loop: this runs for every event.
function remember(self, ev, unseen)
  local cap = self._rcap
  if cap == 0 then
    if unseen then return false end
    return true
  end
  local r = self._recent
  local tail = self._rtail + 1
  self._rtail = tail
  local slot = (tail - 1) % cap + 1
  local old = r[slot]
  r[slot] = ev
  if self._rhead <= tail - cap then self._rhead = tail - cap + 1 end
  if unseen then
    ev._recent_hold = true
    ev._holds = ev._holds + 1
  end
  if old and old._recent_hold then
    -- Nobody asked for it while it was recent: it counts as seen now, so
    -- unconsumed event types do not pile up in the journal.
    old._recent_hold = nil
    release(self, old)
  end
  return true
end

-- The oldest recent event w wants, taken out of the ring.
function Hooks:_take_recent(w)
  local r, cap = self._recent, self._rcap
  for i = self._rhead, self._rtail do
    local slot = (i - 1) % cap + 1
    local ev = r[slot]
    if ev and wants(w, ev) then
      r[slot] = nil
      local h, t = self._rhead, self._rtail
      while h <= t and r[(h - 1) % cap + 1] == nil do h = h + 1 end
      self._rhead = h
      if ev._recent_hold then
        ev._recent_hold = nil
        release(self, ev)
      end
      return ev
    end
  end
  return nil
end

-- Gives ev to the first waiter that wants it; true when one took it.
function Hooks:_offer(ev)
  local ws = self._waiters
  for i = 1, #ws do
    local w = ws[i]
    if wants(w, ev) then
      table.remove(ws, i)
      w._registered = false
      w.event = ev
      w._cond:signal(ev)
      return true
    end
  end
  return false
end

--- Delivers one event: every `on` handler (each in its own task), every
-- iterator that wants it, at most one waiter, else the recent ring.
function dispatch(self, ev)
  -- One hold is this function's own, so nothing is marked done midway; the
  -- handler runs queued here each hold one. Fields are read into locals
  -- once: this runs for every event.
  local holds = 1
  local t = ev.event_type
  local on = self._on
  local jf, je, jt = self._jf, self._je, self._jt
  local list = on[t]
  if list then
    for i = 1, #list do
      jt = jt + 1
      jf[jt], je[jt] = list[i], ev
    end
    holds = holds + #list
  end
  if t ~= "*" then
    list = on["*"]
    if list then
      for i = 1, #list do
        jt = jt + 1
        jf[jt], je[jt] = list[i], ev
      end
      holds = holds + #list
    end
  end
  self._jt = jt
  local seen = holds > 1
  ev._holds = holds
  local subs = self._subs
  for i = 1, #subs do
    local s = subs[i]
    if wants(s, ev) then
      seen = true
      ev._holds = ev._holds + 1
      local tail = s._t + 1
      s._t = tail
      s._q[tail] = ev
      s._cond:signal()
    end
  end
  if #self._waiters > 0 and self:_offer(ev) then
    seen = true
  else
    remember(self, ev, not seen)
  end
  -- Our own hold, dropped in line: with a handler queued it is not the
  -- last one (a call per event saved).
  local h = ev._holds
  if h > 1 then ev._holds = h - 1 else release(self, ev) end
end

-- Public API ------------------------------------------------------------------------

--- Runs fn(event) in its own task for every event of `types` (a type, a
-- list of types, or "*" for all, including types pivday does not know).
-- An error in fn is reported with its traceback and leaves the event
-- pending in the journal (delivered again after a restart). Returns a
-- function that removes the handler.
function Hooks:on(types, fn)
  if type(fn) ~= "function" then
    error("bad argument #2 to 'on' (function expected, got " .. type(fn) .. ")", 2)
  end
  local list_of
  if types == nil or types == "*" then
    list_of = { "*" }
  elseif type(types) == "string" then
    list_of = { types }
  elseif type(types) == "table" then
    list_of = types
  else
    error("bad argument #1 to 'on' (event type or list of types expected, got " .. type(types) .. ")", 2)
  end
  for _, t in ipairs(list_of) do
    if type(t) ~= "string" then error("bad argument #1 to 'on' (types must be strings)", 2) end
    local list = self._on[t] or {}
    self._on[t] = list
    list[#list + 1] = fn
  end
  self:_make_ready()
  return function()
    for _, t in ipairs(list_of) do
      local list = self._on[t]
      for i = #(list or {}), 1, -1 do
        if list[i] == fn then table.remove(list, i) break end
      end
    end
  end
end

local function new_waiter(self, types, match, level)
  return setmetatable({
    _hooks = self, _types = type_set(types, level + 1), _match = matcher(match, level + 1),
    _cond = async.cond(), _registered = false, _desc = type(types) == "table" and table.concat(types, "|")
      or tostring(types or "*"),
  }, Waiter)
end

function Hooks:_add_waiter(w)
  w._registered = true
  self._waiters[#self._waiters + 1] = w
end

--- Starts waiting *now* for the next event of `types` whose data matches
-- `match` (a table of data fields, e.g. {piv_num_id = id}, or
-- fn(data, event) -> boolean). Call it before the call that triggers the
-- event, then `w:wait(timeout)`. Each event satisfies at most one
-- expectation or wait.
function Hooks:expect(types, match)
  local w = new_waiter(self, types, match, 2)
  self:_make_ready()
  if self._closed then
    w._err = closed_error()
  else
    self:_add_waiter(w)
  end
  return w
end

--- Waits for an event of `types` matching `match` (see expect); an event
-- that arrived shortly before the call (one of the last `recent`) counts
-- too, oldest first. Returns the event, or nil and a TIMEOUT (or CLOSED)
-- pivday.Error. `hooks:wait(types, timeout)` works too.
function Hooks:wait(types, match, timeout)
  if timeout == nil and type(match) == "number" then match, timeout = nil, match end
  local w = new_waiter(self, types, match, 2)
  self:_make_ready()
  local ev = self:_take_recent(w)
  if ev then
    w.event = ev
    return ev
  end
  if self._closed then return nil, closed_error() end
  self:_add_waiter(w)
  return w:wait(timeout)
end

--- Waits until the expected event arrives (at most `timeout` seconds; no
-- timeout waits for ever). Returns the event, or nil and a pivday.Error
-- (TIMEOUT, or CLOSED when the listener closed). After a timeout the
-- expectation is withdrawn, so it cannot swallow a later event; asking
-- again returns the same answer.
function Waiter:wait(timeout)
  if self.event then return self.event end
  if self._err then return nil, self._err end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("bad argument #1 to 'wait' (non-negative number of seconds expected)", 2)
  end
  local ok, r, err = pcall(self._cond.wait, self._cond, timeout)
  local ev = self.event
  if not ok then
    -- Cancelled while waiting: an event handed over meanwhile goes back.
    self:cancel()
    if ev then
      self.event = nil
      local hooks = self._hooks
      if not hooks:_offer(ev) then remember(hooks, ev, false) end
    end
    error(r, 0)
  end
  if ev then return ev end
  self:cancel()
  if not self._err then
    if err and err.code == "TIMEOUT" then
      err = Error.new{ kind = "timeout", code = "TIMEOUT",
        message = ("no %s event within %g s"):format(self._desc, timeout or 0) }
    end
    self._err = err or closed_error()
  end
  return nil, self._err
end

--- Withdraws the expectation (an event it already got stays its own).
function Waiter:cancel()
  if not self._registered then return end
  self._registered = false
  local ws = self._hooks._waiters
  for i = #ws, 1, -1 do
    if ws[i] == self then table.remove(ws, i) break end
  end
end

--- An iterator over events of `opts.types` matching `opts.match`, for
-- long-running consumers: `for ev in hooks:events{types = "sms.received"} do
-- ... end`. Like `on`, it sees every such event (it does not take them from
-- waits); an event counts as handled when the loop asks for the next one, so
-- one the loop never finished stays pending in the journal. The loop ends
-- when the listener closes, or after `opts.timeout` seconds without an event.
-- Leaving the loop early (break, error) unsubscribes.
function Hooks:events(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'events' (table expected)", 2) end
  local sub = { _types = type_set(opts.types, 2), _match = matcher(opts.match, 2),
    _q = {}, _h = 1, _t = 0, _cond = async.cond() }
  local timeout = opts.timeout
  self._subs[#self._subs + 1] = sub
  self:_make_ready()
  local last
  local function close()
    if sub.gone then return end
    sub.gone = true
    local subs = self._subs
    for i = #subs, 1, -1 do if subs[i] == sub then table.remove(subs, i) break end end
    if last then release(self, last) last = nil end
    -- Queued but never seen: not done.
    for i = sub._h, sub._t do
      local ev = sub._q[i]
      sub._q[i] = nil
      ev._failed = true
      release(self, ev)
    end
    sub._h = sub._t + 1
  end
  local function next_event()
    if last then release(self, last) last = nil end
    while not sub.gone do
      if sub._h <= sub._t then
        local ev = sub._q[sub._h]
        sub._q[sub._h] = nil
        sub._h = sub._h + 1
        last = ev
        return ev
      end
      if self._closed then break end
      local ok = sub._cond:wait(timeout)
      if not ok then break end
    end
    close()
    return nil
  end
  sub.close = close
  return next_event, nil, nil, setmetatable({}, { __close = close, __name = "pivday.webhooks.Events" })
end

--- Delivers the events the journal holds as not done (and those that came
-- before anything was registered). Happens by itself on the first
-- on/wait/expect/events; call it when a script only wants the backlog.
-- Returns how many events are queued for delivery.
function Hooks:replay()
  local n = #self._held
  self:_make_ready()
  return n
end

--- Compacts the journal now (done events older than `retention` go).
-- Returns {kept, removed, bytes}, or nil and a message.
function Hooks:compact()
  local j = self._journal
  if not j then return nil, "no journal" end
  local res, err = j:compact(os_time() - math.max(self.retention, self.dedupe_window))
  if not res then async.report("pivday.webhooks: journal compaction failed: " .. tostring(err)) end
  return res, err
end

--- Stops listening: answers what is queued, syncs and closes the journal,
-- and ends waits (CLOSED) and iterators. Handlers still running finish;
-- their done marks are lost, so those events are delivered again next time.
function Hooks:close()
  if self._closed then return end
  self:_flush(true)
  self._closed = true
  if self._srv then
    self._srv:close()
    self._srv = nil
  end
  self._hook:close()
  self._hook = nil
  if self._journal then
    self._journal:close()
    self._journal = nil
  end
  local err = closed_error()
  local ws = self._waiters
  self._waiters = {}
  for _, w in ipairs(ws) do
    w._registered = false
    w._err = err
    w._cond:broadcast()
  end
  for _, s in ipairs(self._subs) do s._cond:broadcast() end
end
Hooks.__close = Hooks.close

function Hooks:__tostring()
  return ("pivday.Webhooks (%s)"):format(self._closed and "closed" or self.url)
end

--- Number of open connections.
function Hooks:connections()
  return self._srv and self._srv:connections() or 0
end

--- True once closed.
function Hooks:closed()
  return self._closed == true
end

return M
