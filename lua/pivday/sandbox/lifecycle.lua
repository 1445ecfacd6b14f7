--- pivday.sandbox.lifecycle: what happens to rentals as sandbox time passes.
--
-- Numbers: with auto-renew on, one month is charged 24 h before expiry;
-- when that fails (balance short, country withdrawn) the number expires at
-- expires_at and can be restored for 7 days. Proxy orders: proxy.expires_soon
-- 3 days before expiry, then expired. Domains: domain.expires_soon 7 days
-- before, auto-renew (one year) 24 h before, then expired.
--
-- Nothing is scheduled in advance: next() derives the earliest due step from
-- the objects themselves, so renewing or switching auto-renew never leaves a
-- stale timer behind. Each step records what it did (soon_for, renew_failed_for
-- = the expiry it was about) so it runs once per expiry date.
local policy = require "pivday.sandbox.policy"
local views = require "pivday.sandbox.views"

local M = {}

local L = policy.lifecycle

local function try_renew(app, obj, cents, reason)
  if cents and app.st:charge(obj.user_id, cents, reason, obj.id, app:now()) then
    return true
  end
  obj.renew_failed_for = obj.expires_at
  return false
end

local function number_steps(app, n, add)
  if n.status ~= "active" then return end
  if n.auto_renew and n.renew_failed_for ~= n.expires_at then
    add(n.expires_at - L.auto_renew_lead, function()
      local c = app.st.data.countries[n.country]
      local price = c and c.available ~= false and c.price or nil
      if try_renew(app, n, price, "number auto-renew") then
        n.expires_at = n.expires_at + policy.MONTH
      end
    end)
  else
    add(n.expires_at, function() n.status = "expired" end)
  end
end

local function order_steps(app, o, add)
  if o.status ~= "active" then return end
  if o.soon_for ~= o.expires_at then
    add(o.expires_at - L.proxy_expires_soon, function()
      o.soon_for = o.expires_at
      app:emit(o.user_id, "proxy.expires_soon", {
        order_id = o.id, country = o.country, quantity = o.quantity, expires_at = views.time(o.expires_at),
      })
    end)
  end
  add(o.expires_at, function() o.status = "expired" end)
end

local function domain_steps(app, d, add)
  if d.status ~= "active" then return end
  if d.soon_for ~= d.expires_at then
    add(d.expires_at - L.domain_expires_soon, function()
      d.soon_for = d.expires_at
      app:emit(d.user_id, "domain.expires_soon", {
        domain_id = d.id, domain_name = d.name, expires_at = views.time(d.expires_at), auto_renew = d.auto_renew,
      })
    end)
  end
  if d.auto_renew and d.renew_failed_for ~= d.expires_at then
    add(d.expires_at - L.auto_renew_lead, function()
      local tld = app.st.data.tlds[d.name:match("%.([^.]+)$")]
      if try_renew(app, d, tld and tld.renew, "domain auto-renew") then
        d.expires_at = d.expires_at + policy.YEAR
        d.updated_at = app:now()
      end
    end)
  end
  add(d.expires_at, function()
    d.status = "expired"
    d.updated_at = app:now()
  end)
end

--- The earliest lifecycle step: its due time and a function doing it, or nil.
function M.next(app)
  local best_t, best_fn
  local function add(t, fn)
    if not best_t or t < best_t then best_t, best_fn = t, fn end
  end
  for _, n in ipairs(app.st:list("numbers")) do number_steps(app, n, add) end
  for _, o in ipairs(app.st:list("orders")) do order_steps(app, o, add) end
  for _, d in ipairs(app.st:list("domains")) do domain_steps(app, d, add) end
  return best_t, best_fn
end

--- True when an expired number can still be restored at time `now`.
function M.restorable(n, now)
  return n.status == "expired" and now < n.expires_at + L.restore_window
end

return M
