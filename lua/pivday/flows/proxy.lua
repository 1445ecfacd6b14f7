--- pivday.flows.proxy: keep proxy orders alive.
local common = require "pivday.flows.common"

local M = {}

--- On every proxy.expires_soon, renews the order for `months` (1). opts:
-- hooks (required), months, orders (a list of order ids to watch; default
-- all), api, on_renew(order_id, result_or_nil, err), progress.
-- Returns a handle: handle:stop(), handle.renewed (count), handle.charged.
-- Runs until stopped (pair it with pivday.wait_signal() in a script).
function M.proxy_autorenew(opts)
  local hooks = common.need(opts, "hooks", "table", "proxy_autorenew")
  local say = common.progress(opts, "proxy_autorenew")
  local api = common.api(opts)
  local watch
  if opts.orders then
    watch = {}
    for _, id in ipairs(opts.orders) do watch[id] = true end
  end
  local months = opts.months or 1
  local handle = { renewed = 0, failed = 0, charged = 0 }
  local charged_cents = 0
  local remove = hooks:on("proxy.expires_soon", function(ev)
    local id = ev.data.order_id
    if watch and not watch[id] then return end
    say("order %s expires at %s: renewing for %d month(s)", tostring(id), tostring(ev.data.expires_at), months)
    local res, err = api.proxy.renew(id, { months = months })
    if res then
      handle.renewed = handle.renewed + 1
      local order = res.order or res
      charged_cents = charged_cents + common.cents(order.total_cost or order.cost or order.price_total)
      handle.charged = common.amount(charged_cents)
      say("renewed %s until %s", tostring(id), tostring(order.expires_at))
    else
      handle.failed = handle.failed + 1
      say("renewing %s failed: %s", tostring(id), tostring(err))
    end
    if opts.on_renew then opts.on_renew(id, res, err) end
  end)
  function handle.stop() remove() end
  return handle
end

return M
