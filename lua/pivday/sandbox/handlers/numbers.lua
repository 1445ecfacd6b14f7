--- pivday.sandbox.handlers.numbers: the Numbers endpoints (REFERENCE 2.x).
local json = require "pivday.json"
local common = require "pivday.sandbox.handlers.common"
local jobs = require "pivday.sandbox.jobs"
local lifecycle = require "pivday.sandbox.lifecycle"
local money = require "pivday.sandbox.money"
local paginate = require "pivday.sandbox.paginate"
local policy = require "pivday.sandbox.policy"
local reply = require "pivday.sandbox.reply"
local sms = require "pivday.sandbox.sms"
local state_mod = require "pivday.sandbox.state"
local validate = require "pivday.sandbox.validate"
local views = require "pivday.sandbox.views"

local H = {}

local LIM = policy.limits
local MONTHS = { name = "duration_months", type = "integer", required = true,
  min = LIM.duration_months[1], max = LIM.duration_months[2] }
local CUSTOM_NAME = { name = "custom_name", type = "string", max_len = LIM.custom_name }
local SMS_VERIFY_REFUNDED = { PROXY_DEAD = true, QUEUE_FULL = true, SERVER_UNAVAILABLE = true }
local REFUNDED_MESSAGES = {
  PROXY_DEAD = "The proxy is unavailable. The balance has been refunded.",
  QUEUE_FULL = "The verification queue is full; retry later. The balance has been refunded.",
  SERVER_UNAVAILABLE = "The automation server is unavailable. The balance has been refunded.",
}

local function number(ctx)
  local id = ctx.params.piv_num_id
  local n = ctx.st:owned("numbers", id, ctx.uid)
  if not n then reply.fail("NUMBER_NOT_FOUND", "Number " .. id .. " not found") end
  return n
end

local function country_of(ctx, n)
  return ctx.st.data.countries[n.country]
end

-- The price of a month in the country, or COUNTRY_NOT_AVAILABLE.
local function priced(ctx, code, what)
  local c = ctx.st.data.countries[code]
  if not c or c.available == false then
    reply.fail("COUNTRY_NOT_AVAILABLE", ("Country %s is not available for %s"):format(code, what))
  end
  return c
end

-- Sending needs an active number: expired -> NUMBER_EXPIRED (403), any
-- other state -> NUMBER_NOT_ACTIVE (400).
local function require_active(n, expired_code)
  if n.status == "active" then return end
  if n.status == "expired" and expired_code then
    reply.fail(expired_code, ("Number %s has expired; restore it within 7 days or buy a new number"):format(n.id))
  end
  reply.fail("NUMBER_NOT_ACTIVE", ("Number %s is %s"):format(n.id, n.status))
end

local function new_phone(ctx, c)
  for _ = 1, 50 do
    local digits = state_mod.random_chars(c.len - #c.lead, "0123456789")
    local phone = "+" .. c.dial .. c.lead .. digits
    local clash = false
    for _, n in ipairs(ctx.st:list("numbers")) do
      if n.phone == phone then clash = true break end
    end
    if not clash then return phone end
  end
  error("pivday.sandbox: no free phone number in " .. c.country_code)
end

H["numbers.countries"] = function(ctx)
  local out = json.array()
  for _, code in ipairs(ctx.st.data.country_order) do
    local c = ctx.st.data.countries[code]
    if c.available ~= false then out[#out + 1] = views.country(c) end
  end
  return reply.ok(out)
end

H["numbers.list"] = function(ctx)
  local q = ctx.query
  local status = validate.query_enum(q, "status", { "active", "expired", "pending_restore" })
  local country = q.country ~= "" and q.country or nil
  local search = q.search ~= "" and q.search or nil
  local items = common.filter(ctx.st:list("numbers"), {
    function(n) return n.user_id == ctx.uid end,
    status and function(n) return n.status == status end,
    country and function(n) return n.country == country:upper() end,
    search and function(n) return common.contains(n.phone, search) or common.contains(n.custom_name, search) end,
  })
  local list, page = paginate.page(items, q, "numbers", function(n) return views.number(n, country_of(ctx, n)) end)
  return reply.ok { numbers = list, pagination = page }
end

H["numbers.get"] = function(ctx)
  local n = number(ctx)
  return reply.ok(views.number(n, country_of(ctx, n)))
end

H["numbers.purchase"] = function(ctx)
  local b = validate.check(ctx.body, {
    { name = "country_code", type = "string", required = true,
      pattern = { "^%a%a$", "must be a two-letter ISO country code such as SE" } },
    MONTHS,
    { name = "auto_renew", type = "boolean", required = true },
    CUSTOM_NAME,
  })
  local c = priced(ctx, b.country_code:upper(), "purchase")
  if ctx.app:forced("purchase") or c.stock <= 0 then
    reply.fail("NO_NUMBERS_AVAILABLE", "No numbers are currently available in " .. c.country_code)
  end
  local cost = c.price * b.duration_months
  local n = {
    id = state_mod.num_id(), user_id = ctx.uid, phone = new_phone(ctx, c), country = c.country_code,
    status = "active", created_at = ctx.now, purchased_at = ctx.now,
    expires_at = ctx.now + b.duration_months * policy.MONTH,
    auto_renew = b.auto_renew, custom_name = validate.opt(b, "custom_name"), tags = {},
  }
  ctx.app:charge(ctx.uid, cost, "number purchase", n.id)
  c.stock = c.stock - 1
  ctx.st:add("numbers", n)
  return reply.top { cost = money.json(cost), numbers = json.array { views.number_purchased(n) } }
end

H["numbers.renew"] = function(ctx)
  local b = validate.check(ctx.body, { MONTHS })
  local n = number(ctx)
  require_active(n, "NUMBER_EXPIRED")
  local c = priced(ctx, n.country, "renewal")
  local cost = c.price * b.duration_months
  ctx.app:charge(ctx.uid, cost, "number renewal", n.id)
  local old = n.expires_at
  n.expires_at = old + b.duration_months * policy.MONTH
  return reply.ok {
    piv_num_id = n.id, phone_number = n.phone,
    old_expires_at = views.time(old), new_expires_at = views.time(n.expires_at),
    cost = money.json(cost),
  }
end

H["numbers.update"] = function(ctx)
  local b = validate.check(ctx.body, {
    { name = "custom_name", type = "string", required = true, max_len = LIM.custom_name },
  })
  local n = number(ctx)
  n.custom_name = b.custom_name
  return reply.ok(views.number_updated(n))
end

H["numbers.set_auto_renew"] = function(ctx)
  local b = validate.check(ctx.body, { { name = "auto_renew", type = "boolean", required = true } })
  local n = number(ctx)
  n.auto_renew = b.auto_renew
  n.renew_failed_for = nil     -- switching it on again retries a failed renewal
  return reply.ok { piv_num_id = n.id, phone_number = n.phone, auto_renew = n.auto_renew }
end

H["numbers.restore"] = function(ctx)
  local b = validate.check(ctx.body, {
    { name = "piv_num_ids", type = "array", required = true, items = "string",
      min_items = 1, max_items = LIM.restore_ids },
  })
  local items, seen, skipped, total = {}, {}, 0, 0
  for _, id in ipairs(b.piv_num_ids) do
    local n = not seen[id] and ctx.st:owned("numbers", id, ctx.uid)
    local c = n and ctx.st.data.countries[n.country]
    if n and c and c.available ~= false and lifecycle.restorable(n, ctx.now) then
      local cost = money.percent(c.price, policy.prices.restore_percent)
      items[#items + 1] = { id = n.id, cost = cost }
      total = total + cost
    else
      skipped = skipped + 1
    end
    seen[id] = true
  end
  if #items == 0 then
    reply.fail("NO_RESTORABLE_NUMBERS", ("None of the %d numbers can be restored (not expired, not yours, "
      .. "or past the 7-day window)"):format(#b.piv_num_ids))
  end
  local batch = state_mod.uuid("rst")
  ctx.app:charge(ctx.uid, total, "number restore", batch)
  local out = json.array()
  for _, it in ipairs(items) do
    local n = ctx.st:get("numbers", it.id)
    n.status = "pending_restore"
    out[#out + 1] = { piv_num_id = n.id, phone_number = n.phone, status = "pending" }
  end
  ctx.app:schedule(policy.delays.restore, "restore.finish",
    { user_id = ctx.uid, batch = batch, items = items, fail = ctx.app:forced("restore") })
  return reply.top { queued = #items, skipped = skipped, total_charged = money.json(total), numbers = out }
end

H["numbers.sms"] = function(ctx)
  local n = number(ctx)
  local msgs = ctx.st:list("messages", function(m) return m.number_id == n.id end)
  table.sort(msgs, function(a, b) return a.seq > b.seq end)   -- newest first, as the text says
  local list, page = paginate.page(msgs, ctx.query, "sms", views.message)
  return reply.ok { messages = list, pagination = page }
end

H["numbers.send_sms"] = function(ctx)
  local b = validate.check(ctx.body, {
    { name = "to_number", type = "string", required = true,
      check = function(v)
        local digits = v:match("^%+([1-9]%d*)$")
        if not digits or #digits < 8 or #digits > 15 then
          return "must be an E.164 number: + and 8 to 15 digits, such as +14155551234"
        end
      end },
    { name = "message_body", type = "string", required = true, min_len = 1 },
  })
  local n = number(ctx)
  require_active(n, "NUMBER_EXPIRED")
  local c = country_of(ctx, n)
  if not c or c.send == nil then
    reply.fail("SMS_DISABLED", ("Outbound SMS is not available for numbers in %s"):format(n.country))
  end
  local ok, why = sms.check(b.message_body)
  if not ok then reply.fail("INVALID_MESSAGE_FORMAT", why) end
  local row = ctx.app:charge(ctx.uid, c.send, "sms send")
  local m = jobs.send_sms(ctx.app, n, b.to_number, b.message_body, ctx.app:forced("sms"))
  row.ref = "sms:" .. m.id
  return reply.ok {
    message_id = m.id, from_number = m.from, to_number = m.to, message_body = m.body,
    status = m.status, created_at = views.time(m.at),
  }
end

H["numbers.verify"] = function(ctx)
  local b = validate.check(ctx.body, { { name = "gv_url", type = "string", required = true, min_len = 1 } })
  local n = number(ctx)
  require_active(n, nil)
  local c = country_of(ctx, n)
  if not c or c.send == nil then
    reply.fail("SMS_DISABLED", ("SMS sending is disabled for number %s (%s)"):format(n.id, n.country))
  end
  local fee = policy.prices.verify_fee_cents
  local task_id = ctx.st:next_seq("task")
  local ref = "task:" .. task_id
  ctx.app:charge(ctx.uid, fee, "verify", ref)
  local outcome = ctx.app:forced("verify")
  if SMS_VERIFY_REFUNDED[outcome] then
    ctx.app:refund(ctx.uid, fee, "verify refund", ref)
    reply.fail(outcome, REFUNDED_MESSAGES[outcome])
  end
  ctx.app:schedule(policy.delays.verify, "verify.finish", {
    task_id = task_id, user_id = ctx.uid, number_id = n.id, fee = fee, gv_url = b.gv_url, outcome = outcome,
  })
  return reply.top { message = "Verification initiated" }
end

return H
