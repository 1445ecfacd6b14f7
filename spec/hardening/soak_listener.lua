-- The listener process of soak_spec.lua (run by build/bin/pivday):
--   pivday soak_listener.lua JOURNAL PORT HANDLED_LOG
-- Every handler run appends "n r|-" to HANDLED_LOG (r: replayed from the
-- journal after a restart) with a write(2) per line, so a SIGKILL loses
-- nothing the handler finished. Prints "READY port path" when listening and
-- its stats when stopped by SIGTERM.
local pivday = require "pivday"
local journal, port, out = arg[1], tonumber(arg[2]), arg[3]
local hooks = assert(pivday.webhooks { port = port, journal = journal })
local f = assert(io.open(out, "a"))
f:setvbuf("no")
hooks:on("soak.event", function(ev)
  f:write(("%d %s\n"):format(ev.data.n, ev.replayed and "r" or "-"))
end)
io.stdout:write(("READY %d %s\n"):format(hooks.port, hooks.path))
io.stdout:flush()
pivday.wait_signal()
local s = hooks.stats
io.stdout:write(("STATS received=%d duplicates=%d delivered=%d replayed=%d\n")
  :format(s.received, s.duplicates, s.delivered, s.replayed))
hooks:close()
f:close()
