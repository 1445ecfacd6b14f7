-- Renew proxy orders when proxy.expires_soon arrives; runs until Ctrl-C.
--
--   pivday scripts/proxy_autorenew.lua --months 1 --journal renew.journal
local pivday = require "pivday"
local S = require "pivday.script"

local s = S.new{
  name = "proxy_autorenew",
  summary = "Listens for proxy.expires_soon and renews each order (or only --order ones)\n"
    .. "for --months. Runs until SIGINT/SIGTERM; use --journal so no event is lost.",
  listener = true,
  options = {
    months = { "value", "months to renew for", "1" },
    order = { "list", "order id to watch (repeat; default all)" },
  },
}
local o = s:parse(arg)
local months = math.tointeger(tonumber(o.months))
if not months or months < 1 then s:usage_error("--months takes a whole number >= 1") end
local api = s:client()
local hooks = s:listener()
local handle = pivday.flows.proxy_autorenew{ api = api, hooks = hooks, months = months, orders = o.order }
io.stderr:write("proxy_autorenew: waiting for proxy.expires_soon (Ctrl-C to stop)\n")
pivday.wait_signal()
handle.stop()
hooks:close()
s:finish({ renewed = handle.renewed, failed = handle.failed, charged = handle.charged })
