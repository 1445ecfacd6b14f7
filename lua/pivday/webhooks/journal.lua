--- pivday.webhooks.journal: the append-only file that makes "2xx" mean "kept".
--
-- One JSON object per line:
--
--     {"id":7,"at":1779453296,"event":{...the body as received...}}
--     {"done":7}
--     {"id":3,"at":1779450000,"done":true,"event":{...}}   (written by compaction)
--     {"meta":{"next_id":12}}                                (first line after compaction)
--
-- The listener appends an event line and fdatasyncs *before* answering 2xx,
-- so an acknowledged event survives a crash; `done` lines are appended when
-- its handlers have finished (not synced on their own: losing one only means
-- the event is delivered again, which handlers must tolerate anyway, since
-- the sender itself may deliver twice). Writes are buffered per loop turn
-- and written with one write(2) and at most one fdatasync, by the caller's
-- flush.
--
-- The body is embedded verbatim (newlines turned into spaces; JSON allows
-- them only as whitespace), so appending costs no re-encoding. A crash in
-- the middle of a write leaves a torn last line; loading skips lines that do
-- not parse and the next append starts on a fresh line.
--
-- A second process must not append to the same journal: `open` takes an
-- exclusive flock on FILE.lock (a separate file, because compaction replaces
-- the journal itself by rename).
local core = require "pivday.core"
local json = require "pivday.json"

local M = {}

local concat, tointeger, format, unpack = table.concat, math.tointeger, string.format, table.unpack

local Journal = {}
Journal.__index = Journal
Journal.__name = "pivday.webhooks.Journal"

-- Splits a line into its record; returns nil for a line that is not one of
-- ours (torn, edited). `decode` false skips decoding the event body.
local function parse_line(line, decode)
  local done = line:match('^{"done":(%d+)}$')
  if done then return { done_mark = tointeger(tonumber(done)) } end
  local id, at, rest = line:match('^{"id":(%d+),"at":(%d+),(.*)}$')
  if id then
    local is_done = false
    local body = rest:match('^"event":(.*)$')
    if not body then
      body = rest:match('^"done":true,"event":(.*)$')
      is_done = true
    end
    if not body then return nil end
    local rec = { id = tointeger(tonumber(id)), at = tointeger(tonumber(at)), done = is_done, body = body }
    if decode ~= false then
      local ev = json.decode(body)
      if type(ev) ~= "table" or type(ev.event_type) ~= "string" then return nil end
      rec.event = ev
    end
    return rec
  end
  local meta = line:match('^{"meta":(.*)}$')
  if meta then
    local m = json.decode(meta)
    if type(m) == "table" then return { meta = m } end
  end
  return nil
end

--- Reads a journal without locking or changing it (what `pivday events`
-- uses). Returns a list of records {id, at, done, body, event} in file
-- order with done marks applied, plus a summary {events, done, pending,
-- bytes, skipped, next_id}; or nil and a message. A missing file is an
-- empty journal.
function M.read(path)
  local f, err, code = io.open(path, "rb")
  if not f then
    if code == 2 then -- ENOENT
      return {}, { events = 0, done = 0, pending = 0, bytes = 0, skipped = 0, next_id = 1, torn = false }
    end
    return nil, err
  end
  local data = f:read("a")
  f:close()
  local list, by_id, skipped, next_id = {}, {}, 0, 1
  for line in data:gmatch("[^\n]+") do
    local rec = parse_line(line)
    if not rec then
      skipped = skipped + 1
    elseif rec.done_mark then
      local r = by_id[rec.done_mark]
      if r then r.done = true end
    elseif rec.meta then
      next_id = math.max(next_id, tointeger(rec.meta.next_id) or 1)
    elseif not by_id[rec.id] then
      list[#list + 1] = rec
      by_id[rec.id] = rec
      if rec.id >= next_id then next_id = rec.id + 1 end
    end
  end
  local done = 0
  for _, r in ipairs(list) do if r.done then done = done + 1 end end
  return list, {
    events = #list, done = done, pending = #list - done, bytes = #data,
    skipped = skipped, next_id = next_id, torn = #data > 0 and data:sub(-1) ~= "\n",
  }
end

--- Opens (creating) the journal at `path` for appending, after locking
-- it and reading what it holds. Returns the journal, or nil and a message.
-- `j.records` is the list M.read returns (the caller takes what it needs
-- and may drop it), `j.summary` its summary.
function M.open(path)
  local lockf, err = core.open_file(path .. ".lock", "a")
  if not lockf then return nil, "cannot open the journal's lock file: " .. err end
  local ok, lerr = lockf:lock()
  if ok == false then
    lockf:close()
    return nil, ("journal %s is in use by another listener (%s.lock is held)"):format(path, path)
  elseif not ok then
    lockf:close()
    return nil, "cannot lock the journal: " .. tostring(lerr)
  end
  local records, summary = M.read(path)
  if not records then
    lockf:close()
    return nil, "cannot read the journal: " .. tostring(summary)
  end
  local file, ferr = core.open_file(path, "a")
  if not file then
    lockf:close()
    return nil, "cannot open the journal: " .. ferr
  end
  local oldest
  for _, r in ipairs(records) do
    if oldest == nil or r.at < oldest then oldest = r.at end
  end
  local j = setmetatable({
    path = path, records = records, summary = summary, next_id = summary.next_id,
    _oldest = oldest, -- arrival time of the oldest event line in the file
    _lock = lockf, _file = file, _buf = {}, _n = 0, _done = {}, _nd = 0,
    -- A torn last line must not swallow the next record.
    _torn = summary.torn,
    _size = summary.bytes, _compacted_size = summary.bytes,
  }, Journal)
  return j
end

--- Queues event lines made by the listener's request path (bindings/hook.c
-- writes them in this file's format, `{"id":N,"at":T,"event":BODY}` with
-- the body on one line, and numbers them from next_id); `at` is the
-- arrival time of the first. Nothing reaches the file before flush().
function Journal:append_lines(text, at)
  local n = self._n + 1
  self._buf[n] = text
  self._n = n
  local oldest = self._oldest
  if oldest == nil or at < oldest then self._oldest = at end
end

--- Queues a done mark for `id`. Only the id is kept: flush() writes the
-- marks after the queued lines (so after their events' own lines) with one
-- table.concat, instead of a string per mark.
function Journal:done(id)
  local n = self._nd + 1
  self._done[n] = id
  self._nd = n
end

--- True when lines are waiting for flush().
function Journal:pending()
  return self._n > 0 or self._nd > 0
end

--- Writes what is queued in one write(2), then fdatasyncs when `sync`.
-- Returns true, or nil and a message (the queued lines are dropped: the
-- caller answers their senders with an error so they retry).
function Journal:flush(sync)
  if not self._file then return nil, "journal closed" end
  local nd = self._nd
  if nd > 0 then
    local n = self._n + 1
    self._buf[n] = '{"done":' .. concat(self._done, '}\n{"done":', 1, nd) .. '}\n'
    self._n = n
    self._done, self._nd = {}, 0
  end
  local n = self._n
  if n > 0 then
    local buf = self._buf
    self._buf, self._n = {}, 0
    if self._torn then
      table.insert(buf, 1, "\n")
      n = n + 1
    end
    local bytes = 0
    for i = 1, n do bytes = bytes + #buf[i] end
    -- One write(2) of the queued strings as they are (File:write takes
    -- several).
    local ok, err = self._file:write(unpack(buf, 1, n))
    if not ok then
      -- Part of it may be on disk: start the next write on a fresh line.
      self._torn = true
      return nil, err
    end
    self._torn = false
    self._size = self._size + bytes
  end
  if sync then
    local ok, err = self._file:sync()
    if not ok then return nil, err end
  end
  return true
end

--- Starts an fdatasync of what flush() wrote so far in libuv's thread pool
-- and returns true; cb(true) or cb(nil, message) follows from the loop.
-- Returns nil and a message when it could not start (cb is not called).
function Journal:sync_async(cb)
  if not self._file then return nil, "journal closed" end
  return self._file:sync_async(cb)
end

--- True when the file has grown enough since the last compaction that
-- rewriting it is worth it (at least 1 MiB and as much as it then held),
-- and, given `keep_after`, when compact(keep_after) could remove an event:
-- with none older than it, a compaction would only fold the done marks,
-- while reading and rewriting the whole file (under a burst of webhooks,
-- that pass was the largest cost per event with a journal).
function Journal:should_compact(keep_after)
  if keep_after and (self._oldest == nil or self._oldest >= keep_after) then return false end
  local grown = self._size - self._compacted_size
  return grown >= 1048576 and grown >= self._compacted_size
end

--- Rewrites the journal without events that are done and arrived before
-- `keep_after` (epoch seconds), folding done marks into their events. The
-- new file is written beside, synced, renamed over the old one and the
-- directory synced, so a crash leaves either file whole. Blocks the loop
-- for the duration (a pass over the file). Returns {kept, removed, bytes},
-- or nil and a message (the old file stays in use).
function Journal:compact(keep_after)
  local ok, err = self:flush(true)
  if not ok then return nil, err end
  local f, oerr = io.open(self.path, "rb")
  if not f then return nil, oerr end
  local data = f:read("a")
  f:close()
  -- Pass 1: which events are done.
  local done = {}
  -- Whole lines only: a body may hold an object {"done":N} of its own.
  for line in data:gmatch("[^\n]+") do
    local id = line:match('^{"done":(%d+)}$')
    if id then done[tointeger(tonumber(id))] = true end
  end
  -- Pass 2: the lines to keep (bodies are copied, not decoded).
  local out, kept, removed = { format('{"meta":{"next_id":%d}}\n', self.next_id) }, 0, 0
  local oldest
  local seen = {}
  for line in data:gmatch("[^\n]+") do
    local rec = parse_line(line, false)
    if rec and rec.id and not seen[rec.id] then
      seen[rec.id] = true
      local is_done = rec.done or done[rec.id]
      if is_done and rec.at < keep_after then
        removed = removed + 1
      else
        kept = kept + 1
        if oldest == nil or rec.at < oldest then oldest = rec.at end
        out[#out + 1] = format('{"id":%d,"at":%d,%s"event":%s}\n', rec.id, rec.at,
          is_done and '"done":true,' or "", rec.body)
      end
    end
  end
  local text = concat(out)
  local tmp = self.path .. ".tmp"
  local nf, nerr = core.open_file(tmp, "w")
  if not nf then return nil, nerr end
  local wok, werr = nf:write(text)
  if wok then wok, werr = nf:sync() end
  if not wok then
    nf:close()
    os.remove(tmp)
    return nil, werr
  end
  local rok, rerr = os.rename(tmp, self.path)
  if not rok then
    nf:close()
    os.remove(tmp)
    return nil, rerr
  end
  nf:close()
  core.sync_dir(self.path)
  -- Appends go to the new file from now on.
  local file, ferr = core.open_file(self.path, "a")
  if not file then return nil, ferr end
  self._file:close()
  self._file = file
  self._torn = false
  self._size, self._compacted_size = #text, #text
  self._oldest = oldest
  return { kept = kept, removed = removed, bytes = #text }
end

--- Bytes in the file (as far as this process wrote it).
function Journal:size()
  return self._size
end

--- Writes what is queued (synced) and closes the file and its lock.
function Journal:close()
  if not self._file then return end
  self:flush(true)
  self._file:close()
  self._file = nil
  self._lock:close()
  self._lock = nil
end

return M
