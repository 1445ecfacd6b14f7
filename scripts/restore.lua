-- Restore expired numbers (within their 7-day window) and wait for the
-- outcome of each; optionally retry the failed ones once.
--
--   pivday scripts/restore.lua --number ID --number ID2 --retry-failed
local pivday = require "pivday"
local S = require "pivday.script"

local s = S.new{
  name = "restore",
  summary = "Restores expired numbers and reports which came back, which failed and what\n"
    .. "was refunded. Without --port/--journal it still listens (webhooks are faster\n"
    .. "than polling); --poll polls each number's status instead.",
  listener = true,
  options = {
    number = { "list", "piv_num_id to restore (repeat for several)" },
    retry_failed = { "flag", "retry the failed ones once" },
    poll = { "flag", "poll the numbers instead of listening for the webhook" },
    timeout = { "value", "seconds to wait", "600" },
  },
}
local o = s:parse(arg)
if not o.number then s:usage_error("--number is required (repeat it for several)") end
local api = s:client()
local hooks = not o.poll and s:listener() or nil
local result, err = pivday.flows.restore{ api = api, hooks = hooks, piv_num_ids = o.number,
  retry_failed = o.retry_failed, timeout = tonumber(o.timeout) }
if hooks then hooks:close() end
s:finish(result, err)
