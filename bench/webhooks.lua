--- bench/webhooks.lua: row 2, the webhook listener under wrk.
--
--     pivday bench/webhooks.lua [JOURNAL]
--
-- Starts pivday.webhooks on an ephemeral 127.0.0.1 port (with the journal
-- when a path is given) whose sms.received handler reads ev.data and
-- counts. Prints "url=…" once listening, serves until SIGTERM/SIGINT, then
-- prints "handled=N distinct=N" and the listener's stats as stat_NAME=N.
-- BENCH_SYNC_INLINE=seconds sets the listener's sync_inline (0: every
-- journal sync in the thread pool, to measure that path).
local pivday = require "pivday"

local journal = arg[1]
if journal == "" then journal = nil end

-- `distinct` proves each event reached the handler once. wrk_webhook.lua
-- numbers its events 1, 2, ... in `code`, so the seen set is a bitmap over
-- that integer: 64 codes per list item. Keyed by the code strings it was a
-- hash of every code ever seen (~3 us per event); a list of booleans, one
-- item per code, still put ~700,000 items in front of every collection
-- cycle: the collector's walks over it cost ~0.8 us per event, ~8 % of the
-- listener's CPU (a measurement of the bench's bookkeeping, not of pivday).
local handled, distinct, seen = 0, 0, {}
local stats = {}

pivday.run(function()
  local hooks = assert(pivday.webhooks{ host = "127.0.0.1", port = 0, path = "/hooks",
    journal = journal, sync_inline = tonumber(os.getenv("BENCH_SYNC_INLINE")) })
  hooks:on("sms.received", function(ev)
    local n = tonumber(ev.data.code)
    handled = handled + 1
    if n then
      local w, bit = n >> 6, 1 << (n & 63)
      local have = seen[w] or 0
      if have & bit == 0 then
        seen[w] = have | bit
        distinct = distinct + 1
      end
    end
  end)
  io.stdout:write("url=", hooks.url, "\n")
  io.stdout:flush()
  pivday.wait_signal()
  for k, v in pairs(hooks.stats or {}) do stats[#stats + 1] = ("stat_%s=%s"):format(k, v) end
  table.sort(stats)
  hooks:close()
end)
io.stdout:write(("handled=%d distinct=%d %s\n"):format(handled, distinct, table.concat(stats, " ")))
