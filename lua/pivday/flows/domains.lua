--- pivday.flows.domains: register a domain and wait until it is live.
local Error = require "pivday.error"
local json = require "pivday.json"
local common = require "pivday.flows.common"

local M = {}

local REGISTER_FIELDS = { "domain", "period", "cloudflare", "auto_renew", "ssl_mode",
  "dns_records", "nameservers" }

-- The queue entry as an outcome: the full domain once completed, a failure
-- for any status the reference does not call pending.
local function poll_queue(api, queue_id)
  return function()
    local q, err = api.domains.queue(queue_id)
    if not q then
      if err.retryable then return nil end
      return nil, err
    end
    if q.status == "completed" and type(q.domain) == "table" then
      return { event_type = "domain.registered", data = { domain_id = q.domain.id }, domain = q.domain }
    end
    if q.status == "pending" or q.status == "processing" then return nil end
    return { event_type = "domain.failed",
      data = { error = q.error or ("registration ended with status " .. tostring(q.status)) } }
  end
end

--- Checks availability, registers, then awaits domain.registered /
-- domain.failed (or polls the queue when no listener is given) and returns
-- the full domain. opts: domain, period (1), cloudflare (true), auto_renew
-- (false), ssl_mode, dns_records, nameservers, hooks, api, timeout (900),
-- poll_interval (5), progress. Returns {domain=, charged=, refunded=} or
-- nil and a pivday.Error carrying charged/refunded.
function M.register_domain(opts)
  local name = common.need(opts, "domain", "string", "register_domain")
  local say = common.progress(opts, "register_domain")
  local api = common.api(opts)
  local money = { charged = 0, refunded = 0 }

  local found, err = api.domains.search{ q = name }
  if not found then return common.fail(err, money) end
  if not found.available then
    return common.fail(Error.new{ kind = "api", code = "DOMAIN_NOT_AVAILABLE",
      message = name .. " is not available" }, money)
  end
  say("%s is available for %s %s/year", name, tostring(found.create_price), found.currency or "")

  local body = {}
  for _, k in ipairs(REGISTER_FIELDS) do body[k] = opts[k] end
  body.period = body.period or 1
  if body.cloudflare == nil then body.cloudflare = true end
  if body.auto_renew == nil then body.auto_renew = false end
  if body.dns_records then json.array(body.dns_records) end
  if body.nameservers then json.array(body.nameservers) end

  local res, cents = common.charge(api, api.domains.register, body)
  if not res then return common.fail(cents, money) end
  money.charged = money.charged + cents
  local domain_id = res.domain and res.domain.id
  say("registration queued (%s), charged %s", tostring(res.queue_id), common.amount(cents))

  local waiter = opts.hooks and opts.hooks:expect({ "domain.registered", "domain.failed" },
    function(d) return d.domain_id == domain_id or d.domain_name == name end)
  local ev, werr = common.await_outcome(waiter, poll_queue(api, res.queue_id),
    opts.timeout or 900, opts.poll_interval or 5, "domain registration")
  if not ev then return common.fail(werr, money) end
  if ev.event_type == "domain.failed" then
    money.refunded = money.refunded + cents
    say("registration failed: %s (fee refunded)", tostring(ev.data.error))
    return common.fail(Error.new{ kind = "api", code = "DOMAIN_FAILED",
      message = tostring(ev.data.error) }, money, { domain_id = domain_id })
  end
  local full = ev.domain
  if not full then
    local got, gerr = api.domains.get(ev.data.domain_id or domain_id)
    if not got then return common.fail(gerr, money) end
    full = got.domain or got
  end
  say("%s is registered", name)
  return { domain = full, charged = common.amount(money.charged), refunded = common.amount(money.refunded) }
end

return M
