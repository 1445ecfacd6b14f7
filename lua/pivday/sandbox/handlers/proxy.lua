--- pivday.sandbox.handlers.proxy: the Proxies endpoints (REFERENCE 3.x).
local json = require "pivday.json"
local common = require "pivday.sandbox.handlers.common"
local money = require "pivday.sandbox.money"
local paginate = require "pivday.sandbox.paginate"
local policy = require "pivday.sandbox.policy"
local reply = require "pivday.sandbox.reply"
local state_mod = require "pivday.sandbox.state"
local validate = require "pivday.sandbox.validate"
local views = require "pivday.sandbox.views"

local H = {}

local LIM = policy.limits
local MONTHS = { name = "months", type = "integer", required = true,
  min = LIM.proxy_months[1], max = LIM.proxy_months[2] }
local LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"

local function order(ctx)
  return common.owned(ctx, "orders", ctx.params.id, "Proxy order")
end

-- Renewal needs a live order, restore an expired one: both are state
-- conflicts the reference gives no code for (VALIDATION_ERROR, policy).
local function require_status(o, status, hint)
  if o.status ~= status then
    reply.invalid("order", ("is %s; %s"):format(o.status, hint))
  end
end

local function make_items(server, quantity)
  local items = {}
  for i = 1, quantity do
    items[i] = {
      login = "u" .. state_mod.random_chars(7, LOWER),
      password = state_mod.random_chars(12),
      host = server.host,
      socks5_port = policy.proxy_ports.socks5,
      http_port = policy.proxy_ports.http,
      ipv6 = ("%s::%x"):format(server.ipv6, i),
    }
  end
  return items
end

H["proxy.servers"] = function(ctx)
  local out = json.array()
  for _, id in ipairs(ctx.st.data.server_order) do
    local s = ctx.st.data.servers[id]
    if s.active then out[#out + 1] = views.server(s) end
  end
  return reply.ok { servers = out }
end

H["proxy.orders"] = function(ctx)
  local q = ctx.query
  local status = validate.query_enum(q, "status", { "active", "expired" })
  local search = q.search ~= "" and q.search or nil
  local items = common.filter(ctx.st:list("orders"), {
    function(o) return o.user_id == ctx.uid end,
    status and function(o) return o.status == status end,
    -- search matches the order id, its country or its server's name
    search and function(o)
      return common.contains(o.id, search) or common.contains(o.country, search)
        or common.contains(o.server_name, search)
    end,
  })
  local list, page = paginate.page(items, q, "orders", views.order)
  return reply.ok { orders = list, pagination = page }
end

H["proxy.order"] = function(ctx)
  return reply.ok { order = views.order_full(order(ctx)) }
end

H["proxy.purchase"] = function(ctx)
  local b = validate.check(ctx.body, {
    { name = "server_id", type = "string", required = true, min_len = 1 },
    { name = "quantity", type = "integer", required = true,
      min = LIM.proxy_quantity[1], max = LIM.proxy_quantity[2] },
    MONTHS,
  })
  local s = ctx.st.data.servers[b.server_id]
  if not s or not s.active then
    reply.fail("NOT_FOUND", ("Proxy server %s was not found or is inactive"):format(b.server_id))
  end
  local total = s.price * b.quantity * b.months
  local o = {
    id = state_mod.uuid("ord"), user_id = ctx.uid, server_id = s.id, server_name = s.name,
    country = s.country, quantity = b.quantity, price_per_proxy = s.price, price_total = total,
    status = "active", purchased_at = ctx.now, created_at = ctx.now,
    expires_at = ctx.now + b.months * policy.MONTH,
    items = make_items(s, b.quantity),
  }
  ctx.app:charge(ctx.uid, total, "proxy purchase", o.id)
  ctx.st:add("orders", o)
  return reply.ok { order = views.order_purchased(o) }
end

H["proxy.renew"] = function(ctx)
  local b = validate.check(ctx.body, { MONTHS })
  local o = order(ctx)
  require_status(o, "active", "only active orders can be renewed (restore an expired one)")
  local cost = o.price_per_proxy * o.quantity * b.months
  ctx.app:charge(ctx.uid, cost, "proxy renewal", o.id)
  o.expires_at = o.expires_at + b.months * policy.MONTH
  return reply.ok { order_id = o.id, cost = money.json(cost), new_expires_at = views.time(o.expires_at) }
end

H["proxy.restore"] = function(ctx)
  local o = order(ctx)
  require_status(o, "expired", "only expired orders can be restored")
  if ctx.now >= o.expires_at + policy.lifecycle.restore_window then
    reply.invalid("order", "the 7-day restore window ended at "
      .. views.time(o.expires_at + policy.lifecycle.restore_window))
  end
  local cost = o.price_per_proxy * o.quantity
  ctx.app:charge(ctx.uid, cost, "proxy restore", o.id)
  o.status = "active"
  o.expires_at = ctx.now + policy.MONTH
  return reply.ok { order_id = o.id, quantity = o.quantity, total_cost = money.json(cost),
    expires_at = views.time(o.expires_at) }
end

H["proxy.export"] = function(ctx)
  local format = validate.query_enum(ctx.query, "format", { "socks5", "http", "both" }) or "socks5"
  local o = order(ctx)
  local lines = {}
  local kinds = format == "both" and { "socks5_port", "http_port" } or { format .. "_port" }
  for _, port in ipairs(kinds) do
    for _, it in ipairs(o.items) do
      lines[#lines + 1] = ("%s:%s@%s:%d"):format(it.login, it.password, it.host, it[port])
    end
  end
  return reply.ok {
    content = table.concat(lines, "\n"),
    filename = ("piv-day-proxy-%s-%s.txt"):format(o.id, format),
    format = format,
    count = #lines,
  }
end

return H
