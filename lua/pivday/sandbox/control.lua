--- pivday.sandbox.control: the sandbox's own API, for tests and rehearsals.
--
-- Each operation is a function ops.NAME(app, args) -> result table; the
-- same operations answer over HTTP under /_sandbox/ (loopback clients only,
-- checked in app.lua) and as Lua methods of the sandbox object (init.lua).
-- Bad arguments stop with VALIDATION_ERROR naming the field.
local catalogue = require "pivday.catalogue"
local json = require "pivday.json"
local money = require "pivday.sandbox.money"
local policy = require "pivday.sandbox.policy"
local reply = require "pivday.sandbox.reply"
local request = require "pivday.sandbox.request"
local sms = require "pivday.sandbox.sms"
local state_mod = require "pivday.sandbox.state"
local validate = require "pivday.sandbox.validate"
local views = require "pivday.sandbox.views"

local M = {}

local ops = {}
M.ops = ops

--- What "force" accepts: the next call of `what` gets `outcome`.
M.FORCIBLE = {
  purchase = { "NO_NUMBERS_AVAILABLE" },
  verify = { "PROXY_DEAD", "QUEUE_FULL", "SERVER_UNAVAILABLE", "VERIFY_TIMEOUT", "VERIFY_REJECTED",
    "VERIFY_INVALID_URL" },          -- or any other error_code for verify.failed
  restore = { "failed" },             -- or a list of piv_num_ids that fail
  sms = { "failed" },
  domain = { "taken", "unavailable" },
  domain_renew = { "failed" },
  white = { "failed" },
}

local function account_view(app, acct)
  return {
    user_id = acct.user_id, email = acct.email, balance = money.json(acct.balance),
    disabled = (function()
      local out = json.array()
      for f in pairs(acct.disabled) do out[#out + 1] = f end
      table.sort(out)
      return out
    end)(),
  }
end

local function key_view(k)
  local scopes = json.array()
  for i, s in ipairs(k.scopes) do scopes[i] = s end
  return {
    api_key = k.key, user_id = k.user_id, scopes = scopes, revoked = k.revoked,
    webhook_url = views.orn(k.webhook_url), rate_limit = views.orn(k.rate_limit),
  }
end

local function balance_cents(args, field)
  local v = args[field]
  if v == nil then return nil end
  local c = money.from_dollars(v)
  if not c or c < 0 then reply.invalid(field, "must be an amount >= 0 with at most 2 decimals") end
  return c
end

local function the_account(app, uid)
  local acct = app.st:account(uid or app.st.data.default_user)
  if not acct then reply.fail("NOT_FOUND", "no account " .. tostring(uid)) end
  return acct
end

local function scope_list(args)
  if args.scopes == nil then return nil end
  validate.check(args, { { name = "scopes", type = "array", items = "string" } })
  local known = {}
  for _, s in pairs(policy.scopes) do known[s] = true end
  for i, s in ipairs(args.scopes) do
    if not known[s] then reply.invalid("scopes[" .. (i - 1) .. "]", "unknown scope '" .. s .. "'") end
  end
  return args.scopes
end

local function rate_limit_arg(args)
  local rl = args.rate_limit
  if rl == nil then return nil end
  if rl == json.null or rl == false then return false end
  validate.check(args, { { name = "rate_limit", type = "object" } })
  validate.check(rl, {
    { name = "limit", type = "integer", required = true, min = 1 },
    { name = "window", type = "number", required = true },
  })
  if rl.window <= 0 then reply.invalid("rate_limit.window", "must be > 0 seconds") end
  return { limit = rl.limit, window = rl.window }
end

local WEBHOOK_URL = { name = "webhook_url", type = "string", pattern = { "^https?://", "must be an http(s) URL" } }

--- Forgets everything: a fresh state (the default key keeps its token).
function ops.reset(app)
  local key = app.st.data.default_key
  local url = app.st:key(key) and app.st:key(key).webhook_url
  app.st = state_mod.fresh(app.clock:now(), key)
  app.st:key(key).webhook_url = url
  app.requests = {}
  app._rate = {}
  app.dirty = true
  return { api_key = key, user_id = app.st.data.default_user }
end

--- New account {balance, email, disabled = features}, with one key with
-- every scope unless scopes are given. Returns account + api_key.
function ops.create_account(app, args)
  validate.check(args, {
    { name = "balance", type = "number" },
    { name = "email", type = "string", pattern = { "^[^@%s]+@[^@%s]+$", "must be an e-mail address" } },
    { name = "disabled", type = "array", items = "string" },
    WEBHOOK_URL,
  })
  local now = app:now()
  local acct = app.st:create_account({
    email = args.email, balance_cents = balance_cents(args, "balance") or 0, disabled = args.disabled,
  }, now)
  local key = app.st:create_key({ user_id = acct.user_id, scopes = scope_list(args),
    webhook_url = args.webhook_url, rate_limit = rate_limit_arg(args) or nil }, now)
  app.dirty = true
  local v = account_view(app, acct)
  v.api_key = key.key
  return v
end

--- Changes an account: balance (a control top-up/down goes through the
-- ledger), disabled features.
function ops.update_account(app, args)
  validate.check(args, { { name = "balance", type = "number" }, { name = "disabled", type = "array", items = "string" } })
  local acct = the_account(app, args.user_id)
  local target = balance_cents(args, "balance")
  if target then
    local diff = target - acct.balance
    if diff > 0 then
      app.st:credit(acct.user_id, diff, "sandbox balance set", nil, app:now())
    elseif diff < 0 then
      app.st:charge(acct.user_id, -diff, "sandbox balance set", nil, app:now())
    end
  end
  if args.disabled then
    acct.disabled = {}
    for _, f in ipairs(args.disabled) do acct.disabled[f] = true end
  end
  app.dirty = true
  return account_view(app, acct)
end

function ops.account(app, args)
  return account_view(app, the_account(app, args.user_id))
end

--- New key for an account (default: the default account).
function ops.create_key(app, args)
  validate.check(args, { { name = "user_id", type = "string" }, WEBHOOK_URL })
  local acct = the_account(app, args.user_id)
  local key = app.st:create_key({ user_id = acct.user_id, scopes = scope_list(args),
    webhook_url = args.webhook_url, rate_limit = rate_limit_arg(args) or nil }, app:now())
  app.dirty = true
  return key_view(key)
end

--- Changes a key: revoked, webhook_url (null clears), scopes, rate_limit
-- ({limit, window}; null clears). Default key when api_key is absent.
function ops.update_key(app, args)
  validate.check(args, { { name = "api_key", type = "string" }, { name = "revoked", type = "boolean" }, WEBHOOK_URL })
  local key = app.st:key(args.api_key or app.st.data.default_key)
  if not key then reply.fail("NOT_FOUND", "no API key " .. tostring(args.api_key)) end
  if args.revoked ~= nil then key.revoked = args.revoked end
  if args.webhook_url == json.null then key.webhook_url = nil
  elseif args.webhook_url then key.webhook_url = args.webhook_url end
  local scopes = scope_list(args)
  if scopes then key.scopes = scopes end
  local rl = rate_limit_arg(args)
  if rl == false then key.rate_limit = nil elseif rl then key.rate_limit = rl end
  app._rate[key.key] = nil
  app.dirty = true
  return key_view(key)
end

--- An inbound SMS to a number: history row + sms.received (code extracted).
function ops.inbound_sms(app, args)
  validate.check(args, {
    { name = "piv_num_id", type = "string", required = true },
    { name = "text", type = "string", required = true, min_len = 1 },
    { name = "from", type = "string", pattern = { "^%+%d+$", "must be an E.164 number" } },
  })
  local n = app.st:get("numbers", args.piv_num_id)
  if not n then reply.fail("NUMBER_NOT_FOUND", "no number " .. args.piv_num_id) end
  if n.status ~= "active" then reply.fail("NUMBER_NOT_ACTIVE", "number " .. n.id .. " is " .. n.status) end
  local seq = app.st:next_seq("message")
  local m = app.st:add("messages", {
    id = tostring(seq), seq = seq, user_id = n.user_id, number_id = n.id,
    from = args.from or "+14155550100", to = n.phone, body = args.text,
    direction = "inbound", status = "received", at = app:now(),
  })
  app:emit(n.user_id, "sms.received", {
    piv_num_id = n.id, text = m.body, code = views.orn(sms.extract_code(m.body)),
    country = n.country, received_at = views.time(m.at),
  })
  return views.message(m)
end

--- The next `count` (default 1) calls of `what` get `outcome`.
function ops.force(app, args)
  validate.check(args, {
    { name = "what", type = "string", required = true, enum = (function()
      local t = {}
      for k in pairs(M.FORCIBLE) do t[#t + 1] = k end
      table.sort(t)
      return t
    end)() },
    { name = "count", type = "integer", min = 1, max = 1000 },
  })
  local outcome
  if args.what == "restore" and type(args.outcome) == "table" then
    validate.check(args, { { name = "outcome", type = "array", items = "string", min_items = 1 } })
    outcome = args.outcome                  -- these piv_num_ids fail
  else
    if args.what == "verify" then
      -- any error_code: the three documented ones fail at once (refunded),
      -- others arrive as verify.failed
      validate.check(args, { { name = "outcome", type = "string", required = true,
        pattern = { "^[A-Z][A-Z0-9_]*$", "must be an error code such as VERIFY_TIMEOUT" } } })
    else
      validate.check(args, { { name = "outcome", type = "string", required = true, enum = M.FORCIBLE[args.what] } })
    end
    outcome = args.outcome
    if args.what == "restore" then outcome = true end   -- every number fails
  end
  local q = app.st.data.forced[args.what] or {}
  app.st.data.forced[args.what] = q
  for _ = 1, args.count or 1 do q[#q + 1] = outcome end
  app.dirty = true
  return { what = args.what, queued = #q }
end

--- Faults for the next `times` (default 1) API requests whose path (after
-- /api/v1) equals `match`, or starts with it when it ends in "*":
-- status 500|503|429 (retry_after for 429), delay (seconds, then normal),
-- drop "before" (close, nothing done) | "after" (done, e.g. charged, then
-- close without an answer).
function ops.fault(app, args)
  validate.check(args, {
    { name = "match", type = "string", required = true, pattern = { "^/", "must be a path such as /numbers/purchase" } },
    { name = "method", type = "string", enum = { "GET", "POST", "PUT", "PATCH", "DELETE" } },
    { name = "times", type = "integer", min = 1, max = 10000 },
    { name = "status", type = "integer", enum = { 500, 503, 429 } },
    { name = "retry_after", type = "integer", min = 0, max = 86400 },
    { name = "delay", type = "number" },
    { name = "drop", type = "string", enum = { "before", "after" } },
    { name = "code", type = "string" },
    { name = "message", type = "string" },
  })
  local kinds = (args.status and 1 or 0) + (args.delay and 1 or 0) + (args.drop and 1 or 0)
  if kinds ~= 1 then reply.invalid("fault", "give exactly one of status, delay, drop") end
  if args.delay and (args.delay < 0 or args.delay > 600) then reply.invalid("delay", "must be between 0 and 600 seconds") end
  if args.code and not reply.STATUS[args.code] then reply.invalid("code", "unknown error code '" .. args.code .. "'") end
  local f = {
    match = args.match, method = args.method, times = args.times or 1,
    status = args.status, retry_after = args.retry_after, delay = args.delay, drop = args.drop,
    code = args.code, message = args.message,
  }
  local list = app.st.data.faults
  list[#list + 1] = f
  return f
end

function ops.clear_faults(app)
  local n = #app.st.data.faults
  app.st.data.faults = {}
  return { cleared = n }
end

--- Emits an arbitrary event with `data` to the account of `api_key` (or
-- `user_id`, or the default account).
function ops.emit(app, args)
  validate.check(args, {
    { name = "event_type", type = "string", required = true, min_len = 1 },
    { name = "data", type = "object" },
    { name = "api_key", type = "string" },
    { name = "user_id", type = "string" },
  })
  local uid = args.user_id
  if args.api_key then
    local k = app.st:key(args.api_key)
    if not k then reply.fail("NOT_FOUND", "no API key " .. args.api_key) end
    uid = k.user_id
  end
  local acct = the_account(app, uid)
  local ev = app:emit(acct.user_id, args.event_type, args.data or {})
  return { event_type = ev.event_type, timestamp = ev.timestamp, deliveries = #app.hooks:urls(acct.user_id) }
end

--- Moves the sandbox clock forward by `seconds` and runs what became due.
function ops.advance(app, args)
  validate.check(args, { { name = "seconds", type = "number", required = true } })
  if args.seconds < 0 then reply.invalid("seconds", "must be >= 0") end
  local steps = app:advance(args.seconds)
  return { now = views.time(app:now()), steps = steps }
end

function ops.clock(app)
  return { now = views.time(app:now()), epoch = app:now(), speed = app.clock.speed }
end

function ops.set_speed(app, args)
  validate.check(args, { { name = "speed", type = "number", required = true } })
  if args.speed < 0 then reply.invalid("speed", "must be >= 0") end
  app.clock:set_speed(args.speed)
  return ops.clock(app)
end

local function tail(list, limit)
  local out = json.array()
  local first = limit and math.max(1, #list - limit + 1) or 1
  for i = first, #list do out[#out + 1] = list[i] end
  return out
end

local function limit_arg(args)
  local l = args.limit
  if type(l) == "string" then l = math.tointeger(tonumber(l)) end
  if l ~= nil and (math.type(l) ~= "integer" or l < 1) then reply.invalid("limit", "must be an integer >= 1") end
  return l
end

function ops.requests(app, args)
  return tail(app.requests, limit_arg(args))
end

function ops.deliveries(app, args)
  local out = {}
  for _, d in ipairs(app.st.data.deliveries) do
    if not args.status or d.status == args.status then
      local attempts = json.array()
      for i, a in ipairs(d.attempts) do attempts[i] = a end
      out[#out + 1] = {
        id = d.id, event_type = d.event_type, url = d.url, status = d.status,
        created_at = d.created_at, attempts = attempts, payload = d.payload, resends = d.resends or 0,
      }
    end
  end
  return tail(out, limit_arg(args))
end

function ops.events(app, args)
  local out = {}
  for _, e in ipairs(app.st.data.events) do
    if not args.event_type or e.event_type == args.event_type then out[#out + 1] = e end
  end
  return tail(out, limit_arg(args))
end

function ops.resend(app, args)
  local id = math.tointeger(tonumber(args.id))
  if not id then reply.invalid("id", "must be a delivery id") end
  local d, err = app.hooks:resend(id)
  if not d then reply.fail("NOT_FOUND", err) end
  return { id = d.id, status = d.status }
end

function ops.ledger(app, args)
  local acct = the_account(app, args.user_id)
  local rows = json.array()
  for i, r in ipairs(app.st:ledger(acct.user_id)) do
    rows[i] = { id = r.id, at = views.time(r.at), amount = money.json(r.amount),
      balance = money.json(r.balance), reason = r.reason, ref = views.orn(r.ref) }
  end
  return { user_id = acct.user_id, balance = money.json(acct.balance), rows = rows }
end

--- Changes a number country: price / base_price / sms_send_price (dollars,
-- null = cannot send), stock, available (false: COUNTRY_NOT_AVAILABLE).
function ops.set_country(app, args)
  validate.check(args, {
    { name = "country_code", type = "string", required = true, pattern = { "^%u%u$", "must be two capital letters" } },
    { name = "stock", type = "integer", min = 0 },
    { name = "available", type = "boolean" },
    { name = "can_receive_sms", type = "boolean" },
  })
  local c = app.st.data.countries[args.country_code]
  if not c then
    c = { country_code = args.country_code, price = 100, base = 100, receive = true, stock = 1000,
      dial = "99", lead = "", len = 9 }
    app.st.data.countries[c.country_code] = c
    table.insert(app.st.data.country_order, c.country_code)
  end
  c.price = balance_cents(args, "price_per_month") or c.price
  c.base = balance_cents(args, "base_price") or c.base
  if args.sms_send_price == json.null then c.send = nil
  else c.send = balance_cents(args, "sms_send_price") or c.send end
  if args.stock then c.stock = args.stock end
  if args.available ~= nil then c.available = args.available end
  if args.can_receive_sms ~= nil then c.receive = args.can_receive_sms end
  app.dirty = true
  return views.country(c)
end

function ops.save(app)
  if not app.save then reply.invalid("state", "this sandbox has no state file") end
  local ok, err = app:save()
  if not ok then reply.fail("INTERNAL_ERROR", err) end
  return { saved = true }
end

-- faults (used by app.lua) ----------------------------------------------------------

local function fault_matches(f, method, path)
  if f.method and f.method ~= method then return false end
  if f.match:sub(-1) == "*" then return path:sub(1, #f.match - 1) == f.match:sub(1, -2) end
  return path == f.match
end

--- Takes the first fault matching this API request (counting it down).
function M.take_fault(app, req)
  local list = app.st.data.faults
  if #list == 0 then return nil end
  local path = req.path:sub(#catalogue.base_path + 1)
  for i, f in ipairs(list) do
    if fault_matches(f, req.method, path) then
      f.times = f.times - 1
      if f.times <= 0 then table.remove(list, i) end
      return f
    end
  end
  return nil
end

--- The API error an injected status fault answers with.
function M.fault_error(f)
  if f.status == 429 then
    local wait = f.retry_after or 1
    return reply.error("RATE_LIMITED", f.message or ("Rate limit exceeded, retry in %ds"):format(wait),
      { ["retry-after"] = tostring(wait) })
  end
  local code = f.code or (f.status == 503 and "SERVER_UNAVAILABLE" or "INTERNAL_ERROR")
  local e = reply.error(code, f.message or "Injected fault (sandbox)")
  e.status = f.status
  return e
end

-- HTTP --------------------------------------------------------------------------------

-- method, path pattern (captures become args), operation.
local ROUTES = {
  { "POST", "^/reset$", "reset" },
  { "POST", "^/accounts$", "create_account" },
  { "GET", "^/accounts/([^/]+)$", "account", "user_id" },
  { "PATCH", "^/accounts/([^/]+)$", "update_account", "user_id" },
  { "POST", "^/keys$", "create_key" },
  { "PATCH", "^/keys/([^/]+)$", "update_key", "api_key" },
  { "POST", "^/sms/inbound$", "inbound_sms" },
  { "POST", "^/force$", "force" },
  { "POST", "^/faults$", "fault" },
  { "DELETE", "^/faults$", "clear_faults" },
  { "POST", "^/events$", "emit" },
  { "GET", "^/events$", "events" },
  { "POST", "^/clock/advance$", "advance" },
  { "GET", "^/clock$", "clock" },
  { "PUT", "^/clock$", "set_speed" },
  { "GET", "^/requests$", "requests" },
  { "GET", "^/deliveries$", "deliveries" },
  { "POST", "^/deliveries/(%d+)/resend$", "resend", "id" },
  { "GET", "^/ledger$", "ledger" },
  { "PATCH", "^/countries/([^/]+)$", "set_country", "country_code" },
  { "POST", "^/save$", "save" },
}
M.ROUTES = ROUTES

--- Answers a control request (path under /_sandbox).
function M.handle(app, req)
  local path = req.path:sub(#"/_sandbox" + 1)
  for _, r in ipairs(ROUTES) do
    local cap = path:match(r[2])
    if cap ~= nil and req.method == r[1] then
      local args = request.query(req.query)
      for k, v in pairs(request.body(req.body)) do args[k] = v end
      if r[4] then args[r[4]] = cap end
      return reply.ok(ops[r[3]](app, args))
    end
  end
  reply.fail("NOT_FOUND", "No sandbox control route for " .. req.method .. " /_sandbox" .. path)
end

return M
