--- pivday.sandbox.handlers.domains: the Domains endpoints (REFERENCE 4.x).
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
local PERIOD = { name = "period", type = "integer", required = true,
  min = LIM.domain_period[1], max = LIM.domain_period[2] }

-- ttl: 1 (automatic) or a number of seconds in policy range.
local function ttl_rule(v)
  if v ~= 1 and (v < LIM.dns_ttl[1] or v > LIM.dns_ttl[2]) then
    return ("must be 1 (automatic) or between %d and %d seconds"):format(LIM.dns_ttl[1], LIM.dns_ttl[2])
  end
end

-- Record fields; `required` false for the partial PUT.
local function record_rules(required)
  return {
    { name = "type", type = "string", required = required, enum = LIM.dns_types },
    { name = "name", type = "string", required = required, min_len = 1, max_len = 255 },
    { name = "content", type = "string", required = required, min_len = 1, max_len = 2048 },
    { name = "ttl", type = "integer", check = ttl_rule },
    { name = "proxied", type = "boolean" },
  }
end
local RECORD_NEW, RECORD_PATCH = record_rules(true), record_rules(false)

local NAMESERVERS = { name = "nameservers", type = "array", items = { type = "string", check = function(v)
  if not common.is_hostname(v) then return "must be a host name such as ns1.example.com" end
end }, min_items = LIM.nameservers[1], max_items = LIM.nameservers[2] }

local function new_record(r)
  return {
    id = state_mod.uuid("rec"), type = r.type, name = r.name, content = r.content,
    ttl = validate.opt(r, "ttl") or 1, proxied = validate.opt(r, "proxied") or false,
  }
end

local function domain(ctx)
  return common.owned(ctx, "domains", ctx.params.id, "Domain")
end

-- Changes need a registered, live domain (policy: VALIDATION_ERROR naming
-- the state, the reference documents no code).
local function require_active(d)
  if d.status ~= "active" then
    reply.invalid("domain", ("is %s; this needs an active domain"):format(d.status))
  end
end

local function require_cloudflare(d)
  if not d.cloudflare then
    reply.invalid("domain", "DNS records are managed through Cloudflare, which is off for this domain "
      .. "(enable it with POST /domains/{id}/cloudflare)")
  end
end

local function tld_of(name)
  return name:match("%.([^.]+)$")
end

-- Registered (or being registered) by anyone, or on the "taken" list.
local function is_taken(ctx, name)
  if ctx.st.data.taken[name] then return true end
  for _, d in ipairs(ctx.st:list("domains")) do
    if d.name == name and d.status ~= "failed" then return true end
  end
  return false
end

local function queue_view(ctx, q)
  local d = ctx.st:get("domains", q.domain_id)
  if q.status == "completed" then
    return { queue_id = q.id, status = "completed", domain = views.domain_full(d) }
  end
  return { queue_id = q.id, domain = d.name, status = q.status, error = q.error }
end

local function new_queue(ctx, d, kind, cost, period)
  return ctx.st:add("queue", {
    id = state_mod.uuid("que"), user_id = ctx.uid, domain_id = d.id, kind = kind,
    status = "pending", cost = cost, period = period, created_at = ctx.now,
  })
end

H["domains.search"] = function(ctx)
  local q = ctx.query.q
  if q == nil or q == "" then reply.invalid("q", "required") end
  if not common.is_hostname(q) then reply.invalid("q", "must be a domain name such as mysite.com (got '" .. q .. "')") end
  q = q:lower()
  local tld = ctx.st.data.tlds[tld_of(q)]
  return reply.ok {
    domain = q,
    available = tld ~= nil and not is_taken(ctx, q),
    create_price = views.orn(tld and money.json(tld.create)),
    renew_price = views.orn(tld and money.json(tld.renew)),
    currency = "USD",
  }
end

H["domains.list"] = function(ctx)
  local q = ctx.query
  local status = validate.query_enum(q, "status", { "active", "pending", "expired" })
  -- the filter's "pending" is the register response's "purchasing"
  if status == "pending" then status = "purchasing" end
  local cf = common.bool_filter(q, "cloudflare")
  local auto = common.bool_filter(q, "auto_renew")
  local search = q.search ~= "" and q.search or nil
  local items = common.filter(ctx.st:list("domains"), {
    function(d) return d.user_id == ctx.uid end,
    status and function(d) return d.status == status end,
    cf ~= nil and function(d) return d.cloudflare == cf end or nil,
    auto ~= nil and function(d) return d.auto_renew == auto end or nil,
    search and function(d) return common.contains(d.name, search) end,
  })
  local list, page = paginate.page(items, q, "domains", views.domain)
  return reply.ok { domains = list, pagination = page }
end

H["domains.register"] = function(ctx)
  local b = validate.check(ctx.body, {
    { name = "domain", type = "string", required = true },
    PERIOD,
    { name = "cloudflare", type = "boolean", required = true },
    { name = "auto_renew", type = "boolean", required = true },
    { name = "ssl_mode", type = "string", enum = { "flexible", "full", "strict" } },
    NAMESERVERS,
    { name = "dns_records", type = "array", items = RECORD_NEW },
  })
  local name = common.check_hostname(b, "domain")
  if b.cloudflare then
    validate.forbid(b, "nameservers", "when cloudflare is true")
  else
    validate.forbid(b, "ssl_mode", "when cloudflare is false")
    validate.forbid(b, "dns_records", "when cloudflare is false")
    if validate.opt(b, "nameservers") == nil then
      reply.invalid("nameservers", ("required when cloudflare is false (at least %d)"):format(LIM.nameservers[1]))
    end
  end
  local tld = ctx.st.data.tlds[tld_of(name)]
  if not tld then reply.fail("DOMAIN_NOT_AVAILABLE", ("The .%s TLD is not offered"):format(tld_of(name))) end
  if ctx.app:forced("domain", true) == "unavailable" then
    ctx.app:forced("domain")
    reply.fail("DOMAIN_NOT_AVAILABLE", name .. " cannot be registered: it is already taken")
  end
  if is_taken(ctx, name) then
    reply.fail("DOMAIN_NOT_AVAILABLE", name .. " cannot be registered: it is already taken")
  end
  local cost = tld.create * b.period
  local d = {
    id = state_mod.uuid("dom"), user_id = ctx.uid, name = name, status = "purchasing", period = b.period,
    cloudflare = b.cloudflare, auto_renew = b.auto_renew,
    ssl_mode = b.cloudflare and (validate.opt(b, "ssl_mode") or policy.default_ssl_mode) or nil,
    nameservers = b.cloudflare and {} or b.nameservers, records = {},
    created_at = ctx.now, updated_at = ctx.now,
  }
  for i, r in ipairs(validate.opt(b, "dns_records") or {}) do d.records[i] = new_record(r) end
  ctx.app:charge(ctx.uid, cost, "domain registration", d.id)
  local outcome = ctx.app:forced("domain")   -- "taken": fails later, refunded
  ctx.st:add("domains", d)
  local q = new_queue(ctx, d, "register", cost, b.period)
  ctx.app:schedule(policy.delays.domain_register, "domain.register",
    { queue_id = q.id, outcome = outcome == "taken" and outcome or nil })
  return reply.ok { queue_id = q.id, domain = views.domain_created(d) }
end

H["domains.queue"] = function(ctx)
  local q = common.owned(ctx, "queue", ctx.params.id, "Queue entry")
  return reply.ok(queue_view(ctx, q))
end

H["domains.get"] = function(ctx)
  return reply.ok { domain = views.domain_full(domain(ctx)) }
end

H["domains.renew"] = function(ctx)
  local b = validate.check(ctx.body, { PERIOD })
  local d = domain(ctx)
  if d.status ~= "active" and d.status ~= "expired" then
    reply.invalid("domain", ("is %s; only active or expired domains can be renewed"):format(d.status))
  end
  local tld = ctx.st.data.tlds[tld_of(d.name)]
  if not tld then reply.fail("DOMAIN_NOT_AVAILABLE", "The ." .. tld_of(d.name) .. " TLD is no longer offered") end
  local cost = tld.renew * b.period
  ctx.app:charge(ctx.uid, cost, "domain renewal", d.id)
  local q = new_queue(ctx, d, "renew", cost, b.period)
  ctx.app:schedule(policy.delays.domain_renew, "domain.renew",
    { queue_id = q.id, outcome = ctx.app:forced("domain_renew") })
  -- expires_at is the expiry now; the queue entry shows the renewed domain
  return reply.ok { queue_id = q.id, domain_id = d.id, expires_at = views.time(d.expires_at) }
end

H["domains.set_auto_renew"] = function(ctx)
  local b = validate.check(ctx.body, { { name = "auto_renew", type = "boolean", required = true } })
  local d = domain(ctx)
  d.auto_renew = b.auto_renew
  d.renew_failed_for = nil
  d.updated_at = ctx.now
  return reply.ok { id = d.id, auto_renew = d.auto_renew }
end

H["domains.dns"] = function(ctx)
  local d = domain(ctx)
  local out = json.array()
  for i, r in ipairs(d.records) do out[i] = views.record(r) end
  return reply.ok { records = out }
end

local function record(d, id)
  for i, r in ipairs(d.records) do
    if r.id == id then return r, i end
  end
  reply.fail("NOT_FOUND", ("DNS record %s not found"):format(tostring(id)))
end

H["domains.add_dns"] = function(ctx)
  local b = validate.check(ctx.body, RECORD_NEW)
  local d = domain(ctx)
  require_active(d)
  require_cloudflare(d)
  local r = new_record(b)
  d.records[#d.records + 1] = r
  d.updated_at = ctx.now
  return reply.ok { record = views.record(r) }
end

H["domains.update_dns"] = function(ctx)
  local b = validate.check(ctx.body, RECORD_PATCH)
  local d = domain(ctx)
  require_active(d)
  require_cloudflare(d)
  local r = record(d, ctx.params.recordId)
  for _, rule in ipairs(RECORD_PATCH) do
    local v = validate.opt(b, rule.name)
    if v ~= nil then r[rule.name] = v end
  end
  d.updated_at = ctx.now
  return reply.ok { record = views.record(r) }
end

H["domains.delete_dns"] = function(ctx)
  local d = domain(ctx)
  require_active(d)
  require_cloudflare(d)
  local r, i = record(d, ctx.params.recordId)
  table.remove(d.records, i)
  d.updated_at = ctx.now
  return reply.ok { id = r.id, deleted = true }
end

H["domains.enable_cloudflare"] = function(ctx)
  local b = validate.check(ctx.body, { { name = "enabled", type = "boolean", required = true } })
  if b.enabled ~= true then reply.invalid("enabled", "must be true (Cloudflare cannot be disabled through the API)") end
  local d = domain(ctx)
  require_active(d)
  if not d.cloudflare then
    d.cloudflare, d.cloudflare_status = true, "active"
    d.ssl_mode, d.ssl_type, d.ssl_status = policy.default_ssl_mode, "lets_encrypt", "active"
    d.ssl_expires_at = ctx.now + 90 * policy.DAY
    d.nameservers = {}
    d.updated_at = ctx.now
  end
  return reply.ok { domain_id = d.id, ssl_mode = d.ssl_mode }
end

H["domains.set_nameservers"] = function(ctx)
  local rule = { name = NAMESERVERS.name, type = "array", items = NAMESERVERS.items,
    min_items = NAMESERVERS.min_items, max_items = NAMESERVERS.max_items, required = true }
  local b = validate.check(ctx.body, { rule })
  local d = domain(ctx)
  require_active(d)
  if d.cloudflare then
    reply.invalid("nameservers", "cannot be set while Cloudflare is enabled (Cloudflare's nameservers are managed for you)")
  end
  d.nameservers = {}
  for i, ns in ipairs(b.nameservers) do d.nameservers[i] = ns:lower() end
  d.updated_at = ctx.now
  return reply.ok { nameservers = views.nameservers(d.nameservers) }
end

return H
