--- pivday.catalogue: every endpoint of the piv.day Business API as data.
--
-- The facts come from ../shared/api/endpoints.json (spec/unit/catalogue_spec.lua
-- compares the two). The client builds its methods from this table and the
-- sandbox routes with it, so an endpoint is described once, here.
--
-- Endpoint fields:
--   id       "numbers.purchase": the method name on the client (section.name)
--   method   HTTP method; path: relative to base_url, `{name}` for parameters
--   params   path parameter names, in order (the method's positional args)
--   query    GET parameters: {name, type, required, default, max, enum}
--   body     JSON body fields: {name, type ("string"|"integer"|"number"|
--            "boolean"|"array"|"object"), items (element type of an array),
--            required (true|false|"conditional"), min, max, min_length,
--            max_length, min_items, enum, default, format (informative),
--            only_when / required_when / forbidden_when = {other_field = value}}
--   body_source "table" (documented), "curl" (fields seen only in the curl
--            example, required unknown: all false here), "none"
--   wrapped  success payload under `data` (true), top-level (false), or nil
--            when the source documents no response (DNS PUT/DELETE, config)
--   charges  the call takes money: never re-send it blindly
--   page     list endpoints only: default/max page size, `items` = the key
--            under data holding the list, `iterator` = the client's each-name
--   events   webhook events reporting this call's outcome
--   errors   endpoint-specific error codes (statuses in M.errors)
local M = {}

M.base_url = "https://app.piv.day/api/v1"
-- Path prefix of base_url, for matching full request paths.
M.base_path = "/api/v1"

local data = {
  endpoints = {
    { id = "account.get", method = "GET", path = "/account", params = {},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "numbers.countries", method = "GET", path = "/numbers/countries", params = {},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "numbers.list", method = "GET", path = "/numbers", params = {},
      query = {
        { name = "limit", type = "integer", required = false, default = 50, max = 200 },
        { name = "offset", type = "integer", required = false },
        { name = "country", type = "string", required = false },
        { name = "status", type = "string", required = false, enum = {"active", "expired", "pending_restore"} },
        { name = "search", type = "string", required = false },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      page = { default = 50, max = 200, items = "numbers", iterator = "numbers.each" },
      events = {},
      errors = {},
    },
    { id = "numbers.get", method = "GET", path = "/numbers/{piv_num_id}", params = {"piv_num_id"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {"NUMBER_NOT_FOUND"},
    },
    { id = "numbers.purchase", method = "POST", path = "/numbers/purchase", params = {},
      query = {},
      body = {
        { name = "country_code", type = "string", required = true },
        { name = "duration_months", type = "integer", required = true, min = 1 },
        { name = "auto_renew", type = "boolean", required = true },
        { name = "custom_name", type = "string", required = false },
      },
      body_source = "table",
      wrapped = false, charges = true,
      events = {},
      errors = {"COUNTRY_NOT_AVAILABLE", "NO_NUMBERS_AVAILABLE", "INSUFFICIENT_BALANCE", "VALIDATION_ERROR"},
    },
    { id = "numbers.renew", method = "POST", path = "/numbers/{piv_num_id}/renew", params = {"piv_num_id"},
      query = {},
      body = {
        { name = "duration_months", type = "integer", required = true },
      },
      body_source = "table",
      wrapped = true, charges = true,
      events = {},
      errors = {"NUMBER_NOT_FOUND", "COUNTRY_NOT_AVAILABLE", "INSUFFICIENT_BALANCE"},
    },
    { id = "numbers.update", method = "PATCH", path = "/numbers/{piv_num_id}", params = {"piv_num_id"},
      query = {},
      body = {
        { name = "custom_name", type = "string", required = true },
      },
      body_source = "table",
      wrapped = true, charges = false,
      events = {},
      errors = {"NUMBER_NOT_FOUND", "VALIDATION_ERROR"},
    },
    { id = "numbers.set_auto_renew", method = "PATCH", path = "/numbers/{piv_num_id}/auto-renewal", params = {"piv_num_id"},
      query = {},
      body = {
        { name = "auto_renew", type = "boolean", required = true },
      },
      body_source = "table",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "numbers.restore", method = "POST", path = "/numbers/restore", params = {},
      query = {},
      body = {
        { name = "piv_num_ids", type = "array", items = "string", required = true },
      },
      body_source = "table",
      wrapped = false, charges = true,
      events = {"number.restore_completed"},
      errors = {"NO_RESTORABLE_NUMBERS", "INSUFFICIENT_BALANCE"},
    },
    { id = "numbers.sms", method = "GET", path = "/numbers/{piv_num_id}/sms", params = {"piv_num_id"},
      query = {
        { name = "limit", type = "integer", required = false, default = 50, max = 200 },
        { name = "offset", type = "integer", required = false },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      page = { default = 50, max = 200, items = "messages", iterator = "numbers.each_sms" },
      events = {},
      errors = {},
    },
    { id = "numbers.send_sms", method = "POST", path = "/numbers/{piv_num_id}/sms/send", params = {"piv_num_id"},
      query = {},
      body = {
        { name = "to_number", type = "string", required = true, format = "E.164" },
        { name = "message_body", type = "string", required = true },
      },
      body_source = "table",
      wrapped = true, charges = true,
      events = {"sms.status_updated"},
      errors = {"NUMBER_NOT_FOUND", "NUMBER_EXPIRED", "NUMBER_NOT_ACTIVE", "INSUFFICIENT_BALANCE", "INVALID_MESSAGE_FORMAT"},
    },
    { id = "numbers.verify", method = "POST", path = "/numbers/{piv_num_id}/verify", params = {"piv_num_id"},
      query = {},
      body = {
        { name = "gv_url", type = "string", required = true },
      },
      body_source = "table",
      wrapped = false, charges = true,
      events = {"verify.completed", "verify.failed"},
      errors = {"NUMBER_NOT_FOUND", "NUMBER_NOT_ACTIVE", "SMS_DISABLED", "INSUFFICIENT_BALANCE", "PROXY_DEAD", "QUEUE_FULL", "SERVER_UNAVAILABLE"},
    },
    { id = "proxy.servers", method = "GET", path = "/proxy/servers", params = {},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "proxy.orders", method = "GET", path = "/proxy/orders", params = {},
      query = {
        { name = "limit", type = "integer", required = false, default = 100, max = 500 },
        { name = "offset", type = "integer", required = false },
        { name = "status", type = "string", required = false, enum = {"active", "expired"} },
        { name = "search", type = "string", required = false },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      page = { default = 100, max = 500, items = "orders", iterator = "proxy.each_order" },
      events = {},
      errors = {},
    },
    { id = "proxy.order", method = "GET", path = "/proxy/orders/{id}", params = {"id"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "proxy.purchase", method = "POST", path = "/proxy/purchase", params = {},
      query = {},
      body = {
        { name = "server_id", type = "string", required = true },
        { name = "quantity", type = "integer", required = true, min = 1, max = 500 },
        { name = "months", type = "integer", required = true, min = 1, max = 12 },
      },
      body_source = "table",
      wrapped = true, charges = true,
      events = {},
      errors = {"INSUFFICIENT_BALANCE", "NOT_FOUND", "VALIDATION_ERROR"},
    },
    { id = "proxy.renew", method = "POST", path = "/proxy/orders/{id}/renew", params = {"id"},
      query = {},
      body = {
        { name = "months", type = "integer", required = true },
      },
      body_source = "table",
      wrapped = true, charges = true,
      events = {},
      errors = {},
    },
    { id = "proxy.restore", method = "POST", path = "/proxy/orders/{id}/restore", params = {"id"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = true,
      events = {},
      errors = {},
    },
    { id = "proxy.export", method = "GET", path = "/proxy/orders/{id}/export", params = {"id"},
      query = {
        { name = "format", type = "string", required = false, default = "socks5", enum = {"socks5", "http", "both"} },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.search", method = "GET", path = "/domains/search", params = {},
      query = {
        { name = "q", type = "string", required = true },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.list", method = "GET", path = "/domains", params = {},
      query = {
        { name = "limit", type = "integer", required = false, default = 100, max = 500 },
        { name = "offset", type = "integer", required = false },
        { name = "status", type = "string", required = false, enum = {"active", "pending", "expired"} },
        { name = "cloudflare", type = "string", required = false, enum = {"true", "false"} },
        { name = "auto_renew", type = "string", required = false, enum = {"true", "false"} },
        { name = "search", type = "string", required = false },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      page = { default = 100, max = 500, items = "domains", iterator = "domains.each" },
      events = {},
      errors = {},
    },
    { id = "domains.register", method = "POST", path = "/domains", params = {},
      query = {},
      body = {
        { name = "domain", type = "string", required = true },
        { name = "period", type = "integer", required = true, min = 1, max = 10 },
        { name = "cloudflare", type = "boolean", required = true },
        { name = "auto_renew", type = "boolean", required = true },
        { name = "ssl_mode", type = "string", required = false, enum = {"flexible", "full", "strict"}, only_when = { cloudflare = true } },
        { name = "nameservers", type = "array", items = "string", required = "conditional", min_items = 2, required_when = { cloudflare = false }, forbidden_when = { cloudflare = true } },
        { name = "dns_records", type = "array", items = "object", required = false, only_when = { cloudflare = true } },
      },
      body_source = "table",
      wrapped = true, charges = true,
      events = {"domain.registered", "domain.failed"},
      errors = {"DOMAIN_NOT_AVAILABLE", "INSUFFICIENT_BALANCE", "VALIDATION_ERROR"},
    },
    { id = "domains.queue", method = "GET", path = "/domains/queue/{id}", params = {"id"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.get", method = "GET", path = "/domains/{id}", params = {"id"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.renew", method = "POST", path = "/domains/{id}/renew", params = {"id"},
      query = {},
      body = {
        { name = "period", type = "integer", required = true },
      },
      body_source = "table",
      wrapped = true, charges = true,
      events = {},
      errors = {},
    },
    { id = "domains.set_auto_renew", method = "POST", path = "/domains/{id}/auto-renew", params = {"id"},
      query = {},
      body = {
        { name = "auto_renew", type = "boolean", required = true },
      },
      body_source = "table",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.dns", method = "GET", path = "/domains/{id}/dns", params = {"id"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.add_dns", method = "POST", path = "/domains/{id}/dns", params = {"id"},
      query = {},
      body = {
        { name = "type", type = "string", required = true, examples = {"A", "AAAA", "CNAME", "MX", "TXT"} },
        { name = "name", type = "string", required = true },
        { name = "content", type = "string", required = true },
        { name = "ttl", type = "integer", required = false },
        { name = "proxied", type = "boolean", required = false },
      },
      body_source = "table",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.update_dns", method = "PUT", path = "/domains/{id}/dns/{recordId}", params = {"id", "recordId"},
      query = {},
      body = {
        { name = "content", type = "string", required = false },
      },
      body_source = "curl",
      wrapped = nil, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.delete_dns", method = "DELETE", path = "/domains/{id}/dns/{recordId}", params = {"id", "recordId"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = nil, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.enable_cloudflare", method = "POST", path = "/domains/{id}/cloudflare", params = {"id"},
      query = {},
      body = {
        { name = "enabled", type = "boolean", required = false },
      },
      body_source = "curl",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "domains.set_nameservers", method = "POST", path = "/domains/{id}/ns-servers", params = {"id"},
      query = {},
      body = {
        { name = "nameservers", type = "array", items = "string", required = false },
      },
      body_source = "curl",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "whites.tiers", method = "GET", path = "/whites/tiers", params = {},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "whites.list", method = "GET", path = "/whites", params = {},
      query = {
        { name = "limit", type = "integer", required = false, default = 100, max = 500 },
        { name = "offset", type = "integer", required = false },
        { name = "status", type = "string", required = false, enum = {"queued", "processing", "done", "failed"} },
        { name = "tier_key", type = "string", required = false, enum = {"v2_tier1", "v2_tier2", "v2_tier3"} },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      page = { default = 100, max = 500, items = "whites", iterator = "whites.each" },
      events = {},
      errors = {},
    },
    { id = "whites.create", method = "POST", path = "/whites", params = {},
      query = {},
      body = {
        { name = "name", type = "string", required = true, min_length = 2, max_length = 20 },
        { name = "tier_key", type = "string", required = true, enum = {"v2_tier1", "v2_tier2", "v2_tier3"} },
        { name = "niche", type = "string", required = true, max_length = 25 },
        { name = "country", type = "string", required = true, format = "ISO 3166-1 alpha-2" },
        { name = "language", type = "string", required = true, format = "ISO 639-1" },
        { name = "quality", type = "string", required = false, enum = {"standard", "premium"}, default = "standard" },
        { name = "languages", type = "array", items = "string", required = false },
        { name = "domain", type = "string", required = false },
        { name = "email", type = "string", required = false },
        { name = "phone", type = "string", required = false },
        { name = "address", type = "string", required = false },
        { name = "legal_name", type = "string", required = false },
        { name = "style_hint", type = "string", required = false },
        { name = "keywords", type = "array", items = "string", required = false },
        { name = "banned_words", type = "array", items = "string", required = false },
        { name = "blog_count", type = "integer", required = false, min = 3, max = 20, only_when = { tier_key = "v2_tier3" } },
        { name = "contacts_mode", type = "string", required = false, enum = {"same", "template"} },
        { name = "contacts_template", type = "string", required = false, only_when = { contacts_mode = "template" } },
        { name = "facebook", type = "string", required = false },
        { name = "instagram", type = "string", required = false },
        { name = "linkedin", type = "string", required = false },
        { name = "youtube", type = "string", required = false },
        { name = "tiktok", type = "string", required = false },
      },
      body_source = "table",
      wrapped = true, charges = true,
      events = {"white.completed", "white.failed"},
      errors = {"INSUFFICIENT_BALANCE", "INVALID_TIER", "VALIDATION_ERROR"},
    },
    { id = "whites.get", method = "GET", path = "/whites/{id}", params = {"id"},
      query = {},
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {},
    },
    { id = "whites.download", method = "GET", path = "/whites/{id}/download", params = {"id"},
      query = {
        { name = "format", type = "string", required = false, default = "php" },
      },
      body = {},
      body_source = "none",
      wrapped = true, charges = false,
      events = {},
      errors = {"NOT_READY"},
    },
    { id = "whites.config", method = "POST", path = "/whites/{id}/config", params = {"id"},
      query = {},
      body = {
        { name = "company", type = "string", required = false },
        { name = "domain", type = "string", required = false },
        { name = "email", type = "string", required = false },
        { name = "phone", type = "string", required = false },
        { name = "address", type = "string", required = false },
        { name = "legal", type = "string", required = false },
      },
      body_source = "curl",
      wrapped = nil, charges = false,
      events = {},
      errors = {},
    },
  },
  events = {
    ["sms.received"] = { kind = "inbound", endpoints = {},
      fields = {"piv_num_id", "text", "code", "country", "received_at"} },
    ["sms.status_updated"] = { kind = "async_result", endpoints = {"numbers.send_sms"},
      fields = {"piv_num_id", "message_id", "old_status", "new_status", "error_code", "error_message"} },
    ["number.restore_completed"] = { kind = "async_result", endpoints = {"numbers.restore"},
      fields = {"restored", "failed", "total_restored", "total_failed", "total_refunded"} },
    ["verify.completed"] = { kind = "async_result", endpoints = {"numbers.verify"},
      fields = {"task_id", "piv_num_id", "status", "captured_phone", "captured_message", "sms_message_id", "sms_status"} },
    ["verify.failed"] = { kind = "async_result", endpoints = {"numbers.verify"},
      fields = {"task_id", "piv_num_id", "status", "error_code", "error_message"} },
    ["proxy.expires_soon"] = { kind = "scheduled", endpoints = {},
      fields = {"order_id", "country", "quantity", "expires_at"} },
    ["domain.registered"] = { kind = "async_result", endpoints = {"domains.register"},
      fields = {"domain_id", "domain_name", "registered_at", "expires_at", "cloudflare_enabled"} },
    ["domain.failed"] = { kind = "async_result", endpoints = {"domains.register"},
      fields = {"domain_id", "domain_name", "error"} },
    ["domain.expires_soon"] = { kind = "scheduled", endpoints = {},
      fields = {"domain_id", "domain_name", "expires_at", "auto_renew"} },
    ["white.completed"] = { kind = "async_result", endpoints = {"whites.create"},
      fields = {"job_id", "name", "tier_key", "country"} },
    ["white.failed"] = { kind = "async_result", endpoints = {"whites.create"},
      fields = {"job_id", "name", "error"} },
  },
  errors = {
    UNAUTHORIZED = 401,
    INSUFFICIENT_PERMISSIONS = 403,
    PERMISSION_DENIED = 403,
    VALIDATION_ERROR = 400,
    NUMBER_NOT_FOUND = 404,
    NUMBER_EXPIRED = 403,
    NUMBER_NOT_ACTIVE = 400,
    INSUFFICIENT_BALANCE = 402,
    INVALID_MESSAGE_FORMAT = 400,
    COUNTRY_NOT_AVAILABLE = 400,
    NO_NUMBERS_AVAILABLE = 400,
    NO_RESTORABLE_NUMBERS = 404,
    RATE_LIMITED = 429,
    INTERNAL_ERROR = 500,
    SMS_DISABLED = 400,
    PROXY_DEAD = 502,
    QUEUE_FULL = 503,
    SERVER_UNAVAILABLE = 503,
    NOT_FOUND = 404,
    DOMAIN_NOT_AVAILABLE = 400,
    INVALID_TIER = 400,
    NOT_READY = 409,
  },
}

M.endpoints = data.endpoints

--- Webhook events by event_type: {kind = "inbound"|"async_result"|"scheduled",
-- endpoints = ids whose outcome it reports, fields = data field names}.
M.events = data.events

--- Every documented error code with its HTTP status (the global table plus
-- the codes only endpoint sections list; QUIRKS 15).
M.errors = data.errors

--- Codes that appear only as a webhook `error_code`, never as an HTTP answer.
M.webhook_error_codes = { "VERIFY_TIMEOUT" }

--- Envelope codes that state the charge was already refunded (verify): a
-- definite answer, so the same call may be sent again, POST included.
M.refunded_codes = { PROXY_DEAD = true, QUEUE_FULL = true, SERVER_UNAVAILABLE = true }

--- Rate limiting as documented: status, code and the header with the wait.
M.rate_limit = { status = 429, code = "RATE_LIMITED", header = "retry-after" }

local by_id = {}
for _, ep in ipairs(M.endpoints) do
  by_id[ep.id] = ep
  ep.section, ep.name = ep.id:match("^([^.]+)%.(.+)$")
end

--- Returns the endpoint with this id ("numbers.get"), or nil.
function M.by_id(id)
  return by_id[id]
end

-- Routing table: each path split into segments, `{x}` segments capture.
-- Literal segments beat parameters ("/numbers/countries" is not
-- numbers.get), so candidates are ranked by how many literals they have.
local routes = {}
for _, ep in ipairs(M.endpoints) do
  local segs, literals = {}, 0
  for seg in ep.path:gmatch("[^/]+") do
    local p = seg:match("^{(.+)}$")
    segs[#segs + 1] = p and { param = p } or { literal = seg }
    if not p then literals = literals + 1 end
  end
  routes[#routes + 1] = { ep = ep, segs = segs, literals = literals }
end
table.sort(routes, function(a, b)
  if a.literals ~= b.literals then return a.literals > b.literals end
  return a.ep.id < b.ep.id
end)

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Finds the endpoint a request is for.
-- `path` is relative to base_url ("/numbers/x/renew") or a full path with
-- the /api/v1 prefix; a query string is ignored. Returns `ep, params`
-- (params: path parameter name -> percent-decoded value). When the path
-- exists under other methods only, returns `nil, allowed` (a sorted list of
-- methods, for a 405); when nothing matches, `nil`.
function M.route(method, path)
  path = path:gsub("%?.*$", "")
  if path:sub(1, #M.base_path + 1) == M.base_path .. "/" then
    path = path:sub(#M.base_path + 1)
  end
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = seg end
  local allowed, seen = {}, {}
  -- The ranking holds only among routes that accept this method: "GET
  -- /numbers/purchase" is numbers.get with id "purchase", not a 405.
  for pass = 1, 2 do
    for _, r in ipairs(routes) do
      if #r.segs == #segs and (pass == 2 or r.ep.method == method) then
        local params, ok = {}, true
        for i, s in ipairs(r.segs) do
          if s.literal then
            if s.literal ~= segs[i] then ok = false; break end
          else
            params[s.param] = unescape(segs[i])
          end
        end
        if ok then
          if pass == 1 then return r.ep, params end
          if not seen[r.ep.method] then
            seen[r.ep.method] = true
            allowed[#allowed + 1] = r.ep.method
          end
        end
      end
    end
  end
  if #allowed > 0 then
    table.sort(allowed)
    return nil, allowed
  end
  return nil
end

--- Fills an endpoint's path with positional values (already strings),
-- percent-encoding each. Returns the path relative to base_url.
function M.expand(ep, values)
  local i = 0
  return (ep.path:gsub("{[^}]+}", function()
    i = i + 1
    return (tostring(values[i]):gsub("[^%w%-%._~]", function(c)
      return ("%%%02X"):format(c:byte())
    end))
  end))
end

return M
