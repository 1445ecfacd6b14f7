--- pivday.sandbox.views: stored objects -> the JSON shapes of the reference.
--
-- The reference shows several shapes of the same object (a number in GET,
-- in purchase, in PATCH; an order in list, get, purchase; a domain in list,
-- get, register). Each shape is one function here, used by handlers, jobs
-- and webhook payloads alike, so a shape is written once.
local json = require "pivday.json"
local money = require "pivday.sandbox.money"
local policy = require "pivday.sandbox.policy"
local ptime = require "pivday.time"

local M = {}

local null = json.null

--- Sandbox seconds -> "2026-05-22T12:34:56Z" (nil -> null).
function M.time(t)
  if t == nil then return null end
  return ptime.format(t)
end
local iso = M.time

local function orn(v)
  if v == nil then return null end
  return v
end
M.orn = orn

local function strings(list)
  local out = json.array()
  for i, s in ipairs(list or {}) do out[i] = s end
  return out
end

-- numbers -----------------------------------------------------------------------

function M.number(n, country)
  return {
    piv_num_id = n.id,
    phone_number = n.phone,
    country_code = n.country,
    status = n.status,
    created_at = iso(n.created_at),
    expires_at = iso(n.expires_at),
    auto_renew = n.auto_renew,
    custom_name = orn(n.custom_name),
    purchased_at = iso(n.purchased_at),
    next_renewal_date = iso(n.expires_at),
    tags = strings(n.tags),
    can_send_sms = country ~= nil and country.send ~= nil,
    can_receive_sms = country ~= nil and country.receive == true,
  }
end

function M.number_purchased(n)
  return {
    piv_num_id = n.id,
    country_code = n.country,
    phone_number = n.phone,
    created_at = iso(n.created_at),
    expires_at = iso(n.expires_at),
    auto_renew = n.auto_renew,
    custom_name = orn(n.custom_name),
  }
end

function M.number_updated(n)
  return {
    piv_num_id = n.id,
    phone_number = n.phone,
    country_code = n.country,
    status = n.status,
    custom_name = orn(n.custom_name),
    auto_renew = n.auto_renew,
    expires_at = iso(n.expires_at),
    tags = strings(n.tags),
  }
end

function M.country(c)
  return {
    country_code = c.country_code,
    price_per_month = money.json(c.price),
    base_price = money.json(c.base),
    can_send_sms = c.send ~= nil,
    can_receive_sms = c.receive == true,
    sms_send_price = orn(money.json(c.send)),
  }
end

function M.message(m)
  return {
    id = m.id,
    from_number = m.from,
    to_number = m.to,
    message_body = m.body,
    direction = m.direction,
    status = m.status,
    received_at = iso(m.at),
  }
end

-- proxies -----------------------------------------------------------------------

function M.server(s)
  return {
    id = s.id, name = s.name, country = s.country,
    socks5_port = policy.proxy_ports.socks5, http_port = policy.proxy_ports.http,
    price_per_proxy = money.json(s.price),
  }
end

local function items(o)
  local out = json.array()
  for i, it in ipairs(o.items) do
    out[i] = {
      login = it.login, password = it.password, host = it.host,
      socks5_port = it.socks5_port, http_port = it.http_port, ipv6 = it.ipv6,
    }
  end
  return out
end

function M.order(o)
  return {
    id = o.id, country = o.country, quantity = o.quantity,
    price_per_proxy = money.json(o.price_per_proxy),
    price_total = money.json(o.price_total),
    status = o.status,
    purchased_at = iso(o.purchased_at),
    expires_at = iso(o.expires_at),
  }
end

function M.order_full(o)
  local v = M.order(o)
  v.created_at = iso(o.created_at)
  v.items = items(o)
  return v
end

function M.order_purchased(o)
  return {
    id = o.id, country = o.country, quantity = o.quantity,
    price_total = money.json(o.price_total),
    status = o.status,
    expires_at = iso(o.expires_at),
    created_at = iso(o.created_at),
    items = items(o),
  }
end

-- domains -----------------------------------------------------------------------

--- A DNS record; `with_id` false gives the form embedded in a domain.
function M.record(r, with_id)
  return {
    id = with_id ~= false and r.id or nil,
    type = r.type, name = r.name, content = r.content,
    ttl = r.ttl, priority = orn(r.priority), proxied = r.proxied,
  }
end

function M.nameservers(list)
  local out = json.array()
  for i, ns in ipairs(list or {}) do out[i] = { nameserver = ns, order_index = i } end
  return out
end

function M.domain(d)
  return {
    id = d.id,
    domain_name = d.name,
    status = d.status,
    registered_at = iso(d.registered_at),
    expires_at = iso(d.expires_at),
    auto_renew = d.auto_renew,
    cloudflare_enabled = d.cloudflare,
    cloudflare_status = orn(d.cloudflare_status),
    ssl_type = orn(d.ssl_type),
    ssl_status = orn(d.ssl_status),
    ssl_mode = orn(d.ssl_mode),
    ssl_expires_at = iso(d.ssl_expires_at),
    created_at = iso(d.created_at),
    updated_at = iso(d.updated_at),
  }
end

--- The full domain (get, completed queue entry): records without ids, and
-- nameservers only when Cloudflare is off.
function M.domain_full(d)
  local v = M.domain(d)
  local recs = json.array()
  for i, r in ipairs(d.records) do recs[i] = M.record(r, false) end
  v.dns_records = recs
  if not d.cloudflare then v.nameservers = M.nameservers(d.nameservers) end
  return v
end

function M.domain_created(d)
  return {
    id = d.id, domain_name = d.name, status = d.status, period = d.period,
    cloudflare_enabled = d.cloudflare, auto_renew = d.auto_renew,
    ssl_mode = orn(d.ssl_mode), created_at = iso(d.created_at),
  }
end

-- whites ------------------------------------------------------------------------

function M.tier(t)
  return {
    tier_key = t.tier_key, name = t.name, generator_version = "v2",
    min_articles = t.min_articles, max_articles = t.max_articles,
    price = money.json(t.price),
    extra_article_price = orn(money.json(t.extra_article)),
  }
end

function M.white(w)
  return {
    id = w.id,
    name = w.name,
    status = policy.white_status[w.status],
    tier_key = w.tier_key,
    quality = w.quality,
    niche = w.niche,
    country = w.country,
    language = w.language,
    domain = orn(w.domain),
    result_url = null,
    created_at = iso(w.created_at),
  }
end

return M
