--- pivday.sandbox.handlers.whites: the White pages endpoints (REFERENCE 5.x).
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
local BLOG_TIER = "v2_tier3"

local function url_rule(name)
  return { name = name, type = "string", pattern = { "^https?://[^%s]+$", "must be a full http(s) URL" } }
end

local ISO_COUNTRY = { "^%u%u$", "must be an ISO 3166-1 alpha-2 code such as DE" }
local ISO_LANGUAGE = { "^%l%l$", "must be an ISO 639-1 code such as de" }
local EMAIL = { "^[^@%s]+@[^@%s]+%.[^@%s]+$", "must be a full e-mail address" }

local CREATE = {
  { name = "name", type = "string", required = true, min_len = 2, max_len = 20 },
  { name = "tier_key", type = "string", required = true },
  { name = "niche", type = "string", required = true, min_len = 1, max_len = 25 },
  { name = "country", type = "string", required = true, pattern = ISO_COUNTRY },
  { name = "language", type = "string", required = true, pattern = ISO_LANGUAGE },
  { name = "quality", type = "string", enum = { "standard", "premium" } },
  { name = "languages", type = "array", max_items = LIM.languages,
    items = { type = "string", pattern = ISO_LANGUAGE } },
  { name = "domain", type = "string" },
  { name = "email", type = "string", pattern = EMAIL },
  { name = "phone", type = "string", max_len = 32 },
  { name = "address", type = "string", max_len = 200 },
  { name = "legal_name", type = "string", max_len = 100 },
  { name = "style_hint", type = "string", max_len = 50 },
  { name = "keywords", type = "array", items = "string", max_items = LIM.list_strings },
  { name = "banned_words", type = "array", items = "string", max_items = LIM.list_strings },
  { name = "blog_count", type = "integer", min = 3, max = 20 },
  { name = "contacts_mode", type = "string", enum = { "same", "template" } },
  { name = "contacts_template", type = "string", max_len = 5000 },
  url_rule("facebook"), url_rule("instagram"), url_rule("linkedin"), url_rule("youtube"), url_rule("tiktok"),
}

local CONFIG_FIELDS = { "company", "domain", "email", "phone", "address", "legal" }
local CONFIG = {
  { name = "company", type = "string", max_len = 100 },
  { name = "domain", type = "string" },
  { name = "email", type = "string", pattern = EMAIL },
  { name = "phone", type = "string", max_len = 32 },
  { name = "address", type = "string", max_len = 200 },
  { name = "legal", type = "string", max_len = 100 },
}

local function tier(ctx, key)
  for _, t in ipairs(ctx.st.data.tiers) do
    if t.tier_key == key then return t end
  end
  return nil
end

local function white(ctx)
  return common.owned(ctx, "whites", ctx.params.id, "White")
end

-- The price of a job: tier + articles over the included ones + premium +
-- languages beyond the first (policy.prices), in cents.
local function price(t, b, languages)
  local cents = t.price
  if t.tier_key == BLOG_TIER then
    local articles = validate.opt(b, "blog_count") or t.min_articles
    cents = cents + math.max(0, articles - t.min_articles) * t.extra_article
  end
  if b.quality == "premium" then cents = cents + money.percent(t.price, policy.prices.premium_percent) end
  return cents + (#languages - 1) * policy.prices.extra_language_cents
end

H["whites.tiers"] = function(ctx)
  local out = json.array()
  for i, t in ipairs(ctx.st.data.tiers) do out[i] = views.tier(t) end
  return reply.ok { tiers = out }
end

H["whites.list"] = function(ctx)
  local q = ctx.query
  local status = validate.query_enum(q, "status", { "queued", "processing", "done", "failed" })
  local tier_key = validate.query_enum(q, "tier_key", { "v2_tier1", "v2_tier2", "v2_tier3" })
  local items = common.filter(ctx.st:list("whites"), {
    function(w) return w.user_id == ctx.uid end,
    status and function(w) return w.status == status end,
    tier_key and function(w) return w.tier_key == tier_key end,
  })
  local list, page = paginate.page(items, q, "whites", views.white)
  return reply.ok { whites = list, pagination = page }
end

H["whites.create"] = function(ctx)
  local b = validate.check(ctx.body, CREATE)
  local domain = common.check_hostname(b, "domain", "example.com")
  local t = tier(ctx, b.tier_key)
  if not t then
    local keys = {}
    for i, x in ipairs(ctx.st.data.tiers) do keys[i] = x.tier_key end
    reply.fail("INVALID_TIER", ("No tier '%s' (tiers: %s)"):format(b.tier_key, table.concat(keys, ", ")))
  end
  if validate.opt(b, "blog_count") ~= nil and t.tier_key ~= BLOG_TIER then
    reply.invalid("blog_count", "only allowed with tier_key " .. BLOG_TIER)
  end
  if b.contacts_mode == "template" and validate.opt(b, "contacts_template") == nil then
    reply.invalid("contacts_template", "required when contacts_mode is template")
  end
  -- billed languages: the main one plus the distinct others in `languages`
  local languages, seen = { b.language }, { [b.language] = true }
  for _, l in ipairs(validate.opt(b, "languages") or {}) do
    if not seen[l] then seen[l] = true; languages[#languages + 1] = l end
  end
  local cost = price(t, b, languages)
  local w = {
    id = state_mod.uuid("job"), user_id = ctx.uid, name = b.name, status = "queued", tier_key = t.tier_key,
    quality = validate.opt(b, "quality") or "standard", niche = b.niche, country = b.country,
    language = b.language, languages = languages, domain = domain, price = cost,
    blog_count = t.tier_key == BLOG_TIER and (validate.opt(b, "blog_count") or t.min_articles) or nil,
    contacts = { email = validate.opt(b, "email"), phone = validate.opt(b, "phone"),
      address = validate.opt(b, "address"), legal = validate.opt(b, "legal_name") },
    created_at = ctx.now,
  }
  ctx.app:charge(ctx.uid, cost, "white generation", w.id)
  local fail = ctx.app:forced("white")
  w.fail = fail and "Generation failed" or nil
  ctx.st:add("whites", w)
  ctx.app:schedule(policy.delays.white_start, "white.advance", { id = w.id })
  return reply.ok { status = "queued", white = views.white(w) }
end

H["whites.get"] = function(ctx)
  return reply.ok { white = views.white(white(ctx)) }
end

H["whites.download"] = function(ctx)
  local format = validate.query_enum(ctx.query, "format", policy.white_formats) or "php"
  local w = white(ctx)
  if w.status == "failed" then
    reply.fail("NOT_READY", "Generation of this white failed; start a new job with POST /whites")
  elseif w.status ~= "done" then
    reply.fail("NOT_READY", ("The white page is still being generated (%s); retry after white.completed"):format(w.status))
  end
  -- forget links that have expired, then make a new one
  for _, dl in ipairs(ctx.st:list("downloads")) do
    if dl.expires_at < ctx.now then ctx.st:remove("downloads", dl.id) end
  end
  local date = views.time(ctx.now):sub(1, 10)
  local filename = ("%s_%s_%s_%s.zip"):format(w.domain or w.name:gsub("[^%w%.%-]", "_"), date, w.country, w.language)
  local token = state_mod.random_chars(40, "0123456789abcdef")
  local dl = ctx.st:add("downloads", { id = token, user_id = ctx.uid, job_id = w.id, format = format,
    filename = filename, expires_at = ctx.now + policy.lifecycle.download_ttl })
  local qs = ("format=%s&token=%s&filename=%s"):format(format, token, filename)
  return reply.ok {
    url = ("%s/download/%s/%s?%s"):format(ctx.origin or "http://127.0.0.1", ctx.uid, w.id, qs),
    filename = filename, format = format, expires_at = views.time(dl.expires_at),
  }
end

H["whites.config"] = function(ctx)
  local b = validate.check(ctx.body, CONFIG)
  local domain = common.check_hostname(b, "domain", "newdomain.com")
  local any = false
  for _, f in ipairs(CONFIG_FIELDS) do if validate.opt(b, f) ~= nil then any = true end end
  if not any then reply.invalid("body", "send at least one of " .. table.concat(CONFIG_FIELDS, ", ")) end
  local w = white(ctx)
  w.contacts = w.contacts or {}
  for _, f in ipairs(CONFIG_FIELDS) do
    local v = validate.opt(b, f)
    if v ~= nil and f ~= "domain" then w.contacts[f] = v end
  end
  if domain then w.domain = domain end
  return reply.ok { white = views.white(w) }
end

return H
