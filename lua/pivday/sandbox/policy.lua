--- pivday.sandbox.policy: every choice the sandbox makes where the API
-- reference is silent, in one table (the README lists it).
--
-- Money is in integer cents everywhere in the sandbox; times are seconds of
-- sandbox time. Seed data (countries, servers, TLDs, tiers) is copied into a
-- fresh state, so a state file keeps the prices it was created with and the
-- control API can change them per sandbox.
local M = {}

local DAY = 86400

M.DAY = DAY
--- A "month" of any rental is 30 days (the number examples: 05-01 -> 05-31),
-- a "year" of a domain 365 days.
M.MONTH = 30 * DAY
M.YEAR = 365 * DAY

--- The default account of a fresh state: 1000.00 and one key with every scope.
M.default_account = {
  email = "sandbox@example.com",
  balance_cents = 100000,
}

--- Scope each endpoint needs (the reference names no scopes). The feature
-- (the part before ":") is what an account-level switch can disable, which
-- answers PERMISSION_DENIED instead of INSUFFICIENT_PERMISSIONS.
M.scopes = {
  ["account.get"] = "account:read",
  ["numbers.countries"] = "numbers:read",
  ["numbers.list"] = "numbers:read",
  ["numbers.get"] = "numbers:read",
  ["numbers.sms"] = "numbers:read",
  ["numbers.update"] = "numbers:write",
  ["numbers.set_auto_renew"] = "numbers:write",
  ["numbers.purchase"] = "numbers:purchase",
  ["numbers.renew"] = "numbers:purchase",
  ["numbers.restore"] = "numbers:purchase",
  ["numbers.send_sms"] = "sms:send",
  ["numbers.verify"] = "verify:start",
  ["proxy.servers"] = "proxy:read",
  ["proxy.orders"] = "proxy:read",
  ["proxy.order"] = "proxy:read",
  ["proxy.export"] = "proxy:read",
  ["proxy.purchase"] = "proxy:purchase",
  ["proxy.renew"] = "proxy:purchase",
  ["proxy.restore"] = "proxy:purchase",
  ["domains.search"] = "domains:read",
  ["domains.list"] = "domains:read",
  ["domains.queue"] = "domains:read",
  ["domains.get"] = "domains:read",
  ["domains.dns"] = "domains:read",
  ["domains.register"] = "domains:purchase",
  ["domains.renew"] = "domains:purchase",
  ["domains.set_auto_renew"] = "domains:write",
  ["domains.add_dns"] = "domains:write",
  ["domains.update_dns"] = "domains:write",
  ["domains.delete_dns"] = "domains:write",
  ["domains.enable_cloudflare"] = "domains:write",
  ["domains.set_nameservers"] = "domains:write",
  ["whites.tiers"] = "whites:read",
  ["whites.list"] = "whites:read",
  ["whites.get"] = "whites:read",
  ["whites.download"] = "whites:read",
  ["whites.create"] = "whites:write",
  ["whites.config"] = "whites:write",
}

--- Prices and fees not in the reference.
M.prices = {
  verify_fee_cents = 50,          -- Google QR verification, charged at enqueue
  restore_percent = 150,          -- number restore = price_per_month x 150 %
  premium_percent = 50,           -- white quality "premium": +50 % of tier price
  extra_language_cents = 100,     -- each white language beyond the first
}

--- Rounding of every percentage: half up, on integer cents.
M.rounding = "half-up"

--- White job status integers (the reference shows only 0 = queued and
-- 10 = done; 5 and 20 are ours).
M.white_status = { queued = 0, processing = 5, done = 10, failed = 20 }

--- Outbound SMS: GSM-7 text up to 1600 septets (10 x 160), otherwise UCS-2
-- up to 670 code units (10 x 67). Control characters other than \n and \r,
-- and bytes that are not UTF-8, are forbidden. One fee per message.
M.sms = { gsm7_max = 1600, ucs2_max = 670 }

--- Sandbox-second delays of the asynchronous work (divide by --speed for
-- wall-clock time).
M.delays = {
  sms_sent = 2,            -- queued -> sent
  sms_delivered = 5,       -- sent -> delivered (or failed)
  verify = 8,              -- verify queued -> verify.completed/failed
  restore = 5,             -- restore -> number.restore_completed
  domain_register = 10,    -- queue pending -> completed/failed
  domain_renew = 5,
  white_start = 3,         -- queued -> processing
  white_generate = 20,     -- processing -> done/failed
}

--- Lifecycle windows.
M.lifecycle = {
  restore_window = 7 * DAY,        -- numbers and proxy orders
  auto_renew_lead = 1 * DAY,       -- numbers and domains: charge 24 h before expiry
  proxy_expires_soon = 3 * DAY,
  domain_expires_soon = 7 * DAY,
  download_ttl = 300,              -- whites download link
}

--- Webhook delivery (documented: 5 s, 3 retries after 1/2/4 s).
M.webhooks = { timeout = 5, backoff = { 1, 2, 4 }, user_agent = "piv.day-webhook/1.0" }

--- Pagination: per list, default and cap; a larger limit is clamped to the
-- cap, limit < 1 or offset < 0 or non-integers are VALIDATION_ERROR.
M.pages = {
  numbers = { default = 50, max = 200 },
  sms = { default = 50, max = 200 },
  orders = { default = 100, max = 500 },
  domains = { default = 100, max = 500 },
  whites = { default = 100, max = 500 },
}

--- Limits the reference leaves open.
M.limits = {
  duration_months = { 1, 12 },     -- number purchase / renew
  proxy_months = { 1, 12 },        -- proxy purchase (documented) and renew
  proxy_quantity = { 1, 500 },
  domain_period = { 1, 10 },       -- register (documented) and renew
  custom_name = 64,                -- characters
  restore_ids = 100,               -- piv_num_ids per call
  nameservers = { 2, 13 },
  dns_ttl = { 60, 86400 },         -- or 1 = automatic
  dns_types = { "A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA" },
  languages = 10,
  list_strings = 50,               -- keywords, banned_words
  request_log = 1000,              -- entries kept in memory
}

--- Default rate limit of a key: none. A key's `rate_limit = {limit, window}`
-- allows `limit` requests per fixed `window` seconds of wall-clock time.
M.rate_limit = nil

--- Number countries (prices in cents). `stock` = numbers left to sell
-- (FR starts empty: NO_NUMBERS_AVAILABLE). DE cannot send SMS.
M.countries = {
  { country_code = "SE", price = 400, base = 500, send = 25, receive = true, stock = 1000, dial = "46", lead = "7", len = 8 },
  { country_code = "GB", price = 300, base = 300, send = 20, receive = true, stock = 1000, dial = "44", lead = "7", len = 9 },
  { country_code = "CA", price = 250, base = 300, send = 15, receive = true, stock = 1000, dial = "1", lead = "4", len = 9 },
  { country_code = "US", price = 200, base = 250, send = 10, receive = true, stock = 1000, dial = "1", lead = "2", len = 9 },
  { country_code = "NL", price = 450, base = 500, send = 30, receive = true, stock = 1000, dial = "31", lead = "6", len = 8 },
  { country_code = "DE", price = 500, base = 600, send = nil, receive = true, stock = 1000, dial = "49", lead = "15", len = 9 },
  { country_code = "FR", price = 400, base = 500, send = 20, receive = true, stock = 0, dial = "33", lead = "6", len = 8 },
}

--- Proxy servers (price per proxy per month, cents). EU-FR-01 is inactive:
-- hidden from the list, NOT_FOUND when bought.
M.proxy_servers = {
  { id = "a1b2c3d4-e5f6-7890-abcd-ef1234567890", name = "EU-DE-01", country = "DE", price = 50, host = "185.1.2.3", ipv6 = "2a00:1:2:3", active = true },
  { id = "b2c3d4e5-f6a7-8901-bcde-f12345678901", name = "EU-NL-01", country = "NL", price = 45, host = "185.1.2.4", ipv6 = "2a00:1:2:4", active = true },
  { id = "c3d4e5f6-a7b8-9012-cdef-123456789012", name = "US-NY-01", country = "US", price = 60, host = "104.1.2.5", ipv6 = "2600:1:2:5", active = true },
  { id = "d4e5f6a7-b8c9-0123-def0-234567890123", name = "EU-FR-01", country = "FR", price = 55, host = "51.1.2.6", ipv6 = "2a01:1:2:6", active = false },
}
M.proxy_ports = { socks5 = 1080, http = 3128 }

--- Domain TLDs (cents per year). Other TLDs: not available.
M.tlds = {
  com = { create = 1250, renew = 1250 },
  net = { create = 1400, renew = 1400 },
  org = { create = 1300, renew = 1300 },
  io = { create = 3900, renew = 3900 },
  dev = { create = 1500, renew = 1500 },
  de = { create = 800, renew = 800 },
  xyz = { create = 200, renew = 1300 },
}
--- Names registered by "someone else" (search: unavailable; register:
-- DOMAIN_NOT_AVAILABLE).
M.taken_domains = { "google.com", "example.com", "piv.day", "taken.com" }
M.default_ssl_mode = "flexible"

--- White tiers (cents), as in the reference example.
M.tiers = {
  { tier_key = "v2_tier1", name = "Landing", min_articles = 0, max_articles = 0, price = 300 },
  { tier_key = "v2_tier2", name = "Multi-page", min_articles = 0, max_articles = 0, price = 600 },
  { tier_key = "v2_tier3", name = "Full + Blog", min_articles = 3, max_articles = 20, price = 1000, extra_article = 150 },
}
M.white_formats = { "php", "html" }

--- Asynchronous outcomes, when not forced through the control API.
M.verify = {
  captured_phone = "+14155550123",                -- Google's sender
  message = "Your Google verification code is %s",
  -- gv_url must be https on a google host, else verify.failed with:
  invalid_url_code = "VERIFY_INVALID_URL",
  failure_messages = {
    VERIFY_TIMEOUT = "Verification timed out",
    VERIFY_REJECTED = "Google rejected the verification",
    VERIFY_INVALID_URL = "The verification URL is not valid",
  },
}
M.sms_failure = { code = "30003", message = "Unreachable destination handset" }

return M
