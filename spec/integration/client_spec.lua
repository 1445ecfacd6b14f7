-- pivday.client (issue 4).
--
-- Part 1 drives the client through a scripted fake transport and a fake
-- clock: envelope handling, error mapping, retry decisions, validation, the
-- key, pagination and the concurrency limit, without any network.
-- Part 2 runs the same promises end to end against the in-process sandbox.
local client = require "pivday.client"
local catalogue = require "pivday.catalogue"
local json = require "pivday.json"
local Error = require "pivday.error"

local KEY = "pdk_live_SECRET_0123456789"

-- A fake world: a monotonic clock that only moves when the client sleeps,
-- and a transport that answers from a script and records each request.
local function fake(opts)
  opts = opts or {}
  local w = { clock = 0, requests = {}, script = {}, slept = {}, logs = {} }
  w.rt = {
    now = function() return w.clock end,
    sleep = function(s) w.slept[#w.slept + 1] = s; w.clock = w.clock + s end,
    cond = function() return { wait = function() error("unexpected wait") end, signal = function() end } end,
  }
  local function transport(req)
    w.requests[#w.requests + 1] = req
    local step = table.remove(w.script, 1)
    assert(step, "unexpected request " .. req.method .. " " .. req.url)
    if type(step) == "function" then return step(req) end
    return table.unpack(step, 1, 2)
  end
  local o = {
    api_key = KEY, base_url = "http://sandbox.test/api/v1", transport = transport, runtime = w.rt,
    log = function(line) w.logs[#w.logs + 1] = line end, debug = true,
  }
  for k, v in pairs(opts) do o[k] = v end
  w.api = client.new(o)
  -- Queues answers: reply(status, body_table_or_string, headers).
  function w.reply(status, body, headers)
    if type(body) == "table" then body = json.encode(body) end
    w.script[#w.script + 1] = { { status = status, headers = headers or {}, body = body or "" } }
  end
  function w.fail(kind, code, sent)
    w.script[#w.script + 1] = { nil, Error.new { kind = kind, code = code, message = code .. " (fake)", sent = sent } }
  end
  function w.ok(data) w.reply(200, { success = true, data = data }) end
  function w.api_error(status, code, message, headers)
    w.reply(status, { success = false, error = { code = code, message = message or code } }, headers)
  end
  return w
end

local PURCHASE = { country_code = "SE", duration_months = 1, auto_renew = false }

describe("pivday.client with a fake transport", function()
  before_each(function() client._reset_holds() end)

  describe("methods", function()
    it("exists for every catalogue endpoint, named by its id, plus the five iterators", function()
      local w = fake()
      for _, ep in ipairs(catalogue.endpoints) do
        local section, name = ep.id:match("^(.-)%.(.+)$")
        assert.is_function(w.api[section][name], ep.id)
      end
      for _, it_name in ipairs { "numbers.each", "numbers.each_sms", "proxy.each_order", "domains.each", "whites.each" } do
        local section, name = it_name:match("^(.-)%.(.+)$")
        assert.is_function(w.api[section][name], it_name)
      end
    end)

    it("builds method, URL, headers and body from the catalogue", function()
      local w = fake()
      w.ok({})
      assert(w.api.domains.update_dns("dom 1", "rec/2", { content = "5.6.7.8" }))
      local r = w.requests[1]
      assert.equal("PUT", r.method)
      assert.equal("http://sandbox.test/api/v1/domains/dom%201/dns/rec%2F2", r.url)
      assert.equal("Bearer " .. KEY, r.headers.Authorization)
      assert.equal("application/json", r.headers["Content-Type"])
      assert.same({ content = "5.6.7.8" }, json.decode(r.body))
      assert.is_false(r.no_resend)
    end)

    it("sends GET parameters as a sorted, encoded query and no body", function()
      local w = fake()
      w.ok({ domains = {}, pagination = { total = 0, limit = 20, offset = 0 } })
      assert(w.api.domains.list { status = "active", search = "a b&c", cloudflare = true, limit = 20 })
      local r = w.requests[1]
      assert.equal("http://sandbox.test/api/v1/domains?cloudflare=true&limit=20&search=a%20b%26c&status=active", r.url)
      assert.is_nil(r.body)
    end)

    it("marks every POST no_resend and encodes empty lists as []", function()
      local w = fake()
      w.ok({})
      assert(w.api.domains.set_nameservers("d1", { nameservers = {} }))
      assert.is_true(w.requests[1].no_resend)
      assert.equal('{"nameservers":[]}', w.requests[1].body)
    end)

    it("sends no body for proxy.restore, like the reference's curl", function()
      local w = fake()
      w.ok({ order_id = "o1", quantity = 10, total_cost = 5.0, expires_at = "2026-03-01T00:00:00Z" })
      assert(w.api.proxy.restore("o1"))
      assert.is_nil(w.requests[1].body)
      assert.is_nil(w.requests[1].headers["Content-Type"])
    end)

    it("raises at the caller's line for wrong Lua argument types", function()
      local w = fake()
      -- (not tail calls: a tail call leaves no caller line to point at)
      local cases = {
        function() local r = w.api.numbers.get() return r end,
        function() local r = w.api.numbers.get({}) return r end,
        function() local r = w.api.numbers.get("") return r end,
        function() local r = w.api.numbers.renew("n1", 5) return r end,
        function() local r = w.api.numbers.purchase("SE") return r end,
        function() local r = w.api.account.get({}, {}) return r end,
        function() local r = w.api.numbers.each_sms(nil) return r end,
      }
      for i, f in ipairs(cases) do
        local ok, msg = pcall(f)
        assert.is_false(ok, "case " .. i)
        assert.matches("client_spec.lua:%d+: bad argument #%d to '[%w_.]+'", msg, nil, false, "case " .. i)
      end
      assert.equal(0, #w.requests)
    end)
  end)

  describe("local validation", function()
    local cases = {
      { "numbers.purchase", {}, { country_code = "SE", duration_months = 1 }, "auto_renew is required" },
      { "numbers.purchase", {}, { country_code = 46, duration_months = 1, auto_renew = false }, "country_code must be a string, got integer" },
      { "numbers.purchase", {}, { country_code = "SE", duration_months = 1.5, auto_renew = false }, "duration_months must be an integer, got number" },
      { "numbers.purchase", {}, { country_code = "SE", duration_months = 0, auto_renew = false }, "duration_months must be at least 1, got 0" },
      { "numbers.purchase", {}, { country_code = "SE", duration_months = 1, auto_renew = "no" }, "auto_renew must be a boolean, got string" },
      { "numbers.restore", {}, { piv_num_ids = "n1" }, "piv_num_ids must be an array, got string" },
      { "numbers.restore", {}, { piv_num_ids = { "a", 2 } }, "piv_num_ids%[2%] must be a string, got integer" },
      { "proxy.purchase", {}, { server_id = "s", quantity = 501, months = 1 }, "quantity must be at most 500, got 501" },
      { "proxy.purchase", {}, { server_id = "s", quantity = 1, months = 13 }, "months must be at most 12, got 13" },
      { "domains.register", {}, { domain = "a.com", period = 11, cloudflare = true, auto_renew = true }, "period must be at most 10" },
      { "domains.register", {}, { domain = "a.com", period = 1, cloudflare = false, auto_renew = true }, "nameservers is required when cloudflare = false" },
      { "domains.register", {}, { domain = "a.com", period = 1, cloudflare = false, auto_renew = true, nameservers = { "ns1" } }, "nameservers needs at least 2 items, got 1" },
      { "domains.register", {}, { domain = "a.com", period = 1, cloudflare = true, auto_renew = true, nameservers = { "a", "b" } }, "nameservers must not be sent when cloudflare = true" },
      { "domains.register", {}, { domain = "a.com", period = 1, cloudflare = false, auto_renew = true, nameservers = { "a", "b" }, ssl_mode = "full" }, "ssl_mode is only allowed when cloudflare = true" },
      { "domains.register", {}, { domain = "a.com", period = 1, cloudflare = true, auto_renew = true, ssl_mode = "tight" }, "ssl_mode must be one of flexible, full, strict" },
      { "whites.create", {}, { name = "x", tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" }, "name must be at least 2 characters, got 1" },
      { "whites.create", {}, { name = ("é"):rep(21), tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" }, "name must be at most 20 characters, got 21" },
      { "whites.create", {}, { name = "ab", tier_key = "v2_tier1", niche = ("n"):rep(26), country = "DE", language = "de" }, "niche must be at most 25 characters" },
      { "whites.create", {}, { name = "ab", tier_key = "t1", niche = "n", country = "DE", language = "de" }, "tier_key must be one of v2_tier1, v2_tier2, v2_tier3" },
      { "whites.create", {}, { name = "ab", tier_key = "v2_tier2", niche = "n", country = "DE", language = "de", blog_count = 5 }, "blog_count is only allowed when tier_key = v2_tier3" },
      { "whites.create", {}, { name = "ab", tier_key = "v2_tier3", niche = "n", country = "DE", language = "de", blog_count = 2 }, "blog_count must be at least 3" },
      { "numbers.list", {}, { limit = 201 }, "limit must be at most 200, got 201" },
      { "numbers.list", {}, { status = "gone" }, "status must be one of active, expired, pending_restore" },
      { "proxy.export", { "o1" }, { format = "xml" }, "format must be one of socks5, http, both" },
      { "domains.search", {}, {}, "q is required" },
      { "domains.list", {}, { search = { "x" } }, "query parameter \"search\" must be a string or number, got table" },
      { "numbers.renew", { "n1" }, { duration_months = json.null }, "duration_months must be an integer, got null" },
    }
    for _, c in ipairs(cases) do
      it(("%s: %s"):format(c[1], c[4]), function()
        local w = fake()
        local section, name = c[1]:match("^(.-)%.(.+)$")
        local args = { table.unpack(c[2]) }
        args[#args + 1] = c[3]
        local res, err = w.api[section][name](table.unpack(args))
        assert.is_nil(res)
        assert.is_true(Error.is(err))
        assert.equal("local", err.kind)
        assert.equal("VALIDATION_ERROR", err.code)
        assert.matches(c[4], err.message)
        assert.matches("^" .. c[1]:gsub("%.", "%%."), err.message)
        assert.equal(0, err.attempts)
        assert.equal(0, #w.requests, "nothing may be sent")
      end)
    end

    it("accepts the valid form of each conditional rule", function()
      local w = fake()
      for _ = 1, 3 do w.ok({ queue_id = "q", domain = { id = "d" } }) end
      assert(w.api.domains.register { domain = "a.com", period = 1, cloudflare = true, auto_renew = true, ssl_mode = "full",
        dns_records = { { type = "A", name = "@", content = "1.2.3.4", proxied = true } } })
      assert(w.api.domains.register { domain = "a.com", period = 1, cloudflare = false, auto_renew = false, nameservers = { "a", "b" } })
      assert(w.api.whites.create { name = "ab", tier_key = "v2_tier3", niche = "n", country = "DE", language = "de", blog_count = 3 })
    end)

    it("passes unknown fields by default and refuses them with validate = \"strict\"", function()
      local w = fake()
      w.ok({})
      assert(w.api.domains.add_dns("d", { type = "MX", name = "@", content = "mx.a.com", priority = 10 }))
      assert.equal(10, json.decode(w.requests[1].body).priority)
      local s = fake { validate = "strict" }
      local res, err = s.api.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false, duration_month = 2 }
      assert.is_nil(res)
      assert.matches("unknown field \"duration_month\"", err.message)
    end)

    it("can be switched off", function()
      local w = fake { validate = false }
      w.api_error(400, "VALIDATION_ERROR", "country_code is required")
      local _, err = w.api.numbers.purchase {}
      assert.equal("api", err.kind)
      assert.equal(1, #w.requests)
    end)
  end)

  describe("the envelope", function()
    it("returns data as it is, nested keys kept", function()
      local w = fake()
      w.ok({ order = { id = "ord-1", items = { { login = "u1" } } } })
      local r = assert(w.api.proxy.order("ord-1"))
      assert.equal("ord-1", r.order.id)
      assert.equal("u1", r.order.items[1].login)
    end)

    it("returns a bare data array (countries) as a sequence", function()
      local w = fake()
      w.ok({ { country_code = "SE", sms_send_price = json.null }, { country_code = "GB", sms_send_price = 0.2 } })
      local r = assert(w.api.numbers.countries())
      assert.equal(2, #r)
      assert.is_nil(r[1].sms_send_price)
      assert.equal(0.2, r[2].sms_send_price)
    end)

    it("returns top-level fields without success for purchase, restore and verify", function()
      local w = fake()
      w.reply(200, { success = true, cost = 5.0, numbers = { { piv_num_id = "n1", custom_name = json.null } } })
      w.reply(200, { success = true, queued = 2, skipped = 0, total_charged = 9.0, numbers = { { piv_num_id = "n1", status = "pending" } } })
      w.reply(200, { success = true, message = "Verification initiated" })
      local p = assert(w.api.numbers.purchase(PURCHASE))
      assert.same({ cost = 5, numbers = { { piv_num_id = "n1" } } }, p)
      local r = assert(w.api.numbers.restore { piv_num_ids = { "n1", "n2" } })
      assert.equal(2, r.queued)
      assert.is_nil(r.success)
      assert.same({ message = "Verification initiated" }, assert(w.api.numbers.verify("n1", { gv_url = "https://gv.google.com/x" })))
    end)

    it("returns true for 2xx answers with nothing of note (DNS update/delete, whites config)", function()
      local w = fake()
      w.reply(204, "")
      w.reply(200, "OK")
      w.reply(200, { success = true })
      w.reply(200, { success = true, data = { id = "rec-1" } })
      assert.is_true(w.api.domains.delete_dns("d", "r"))
      assert.is_true(w.api.whites.config("w", { company = "X" }))
      assert.is_true(w.api.domains.update_dns("d", "r", { content = "x" }))
      assert.same({ id = "rec-1" }, w.api.domains.update_dns("d", "r", { content = "y" }))
    end)

    it("turns JSON null into missing fields recursively and keeps lists sequences", function()
      local w = fake()
      w.ok({ domain = { id = "d", nameservers = json.null, dns_records = { { name = "@", priority = json.null } },
        tags = { "a", json.null, "b" } } })
      local r = assert(w.api.domains.get("d"))
      assert.is_nil(r.domain.nameservers)
      assert.is_nil(r.domain.dns_records[1].priority)
      assert.equal("@", r.domain.dns_records[1].name)
      assert.equal(3, #r.domain.tags)
      assert.equal(json.null, r.domain.tags[2])
    end)

    it("keeps integers integers", function()
      local w = fake()
      w.ok({ numbers = {}, pagination = { total = 450, limit = 200, offset = 0 } })
      local r = assert(w.api.numbers.list {})
      assert.equal("integer", math.type(r.pagination.total))
    end)

    it("exposes what a call took through meta, not in the data", function()
      local w = fake()
      w.reply(200, { success = true, data = { user_id = "u" } }, { ["x-request-id"] = "req-42" })
      local r = assert(w.api.account.get())
      local m = client.meta(r)
      assert.equal(200, m.status)
      assert.equal(1, m.attempts)
      assert.equal("req-42", m.request_id)
      assert.is_number(m.elapsed)
      assert.is_nil(r.status)
      assert.is_nil(client.meta(true))
      assert.is_nil(client.meta({}))
    end)

    it("maps a non-JSON or non-envelope answer to a protocol BAD_RESPONSE", function()
      local w = fake { max_retries = 0 }
      w.reply(502, "<html><body>Bad gateway from nginx</body></html>")
      local _, err = w.api.account.get()
      assert.equal("protocol", err.kind)
      assert.equal("BAD_RESPONSE", err.code)
      assert.equal(502, err.status)
      assert.matches("Bad gateway from nginx", err.message)
      w.reply(200, { hello = "world" })
      _, err = w.api.account.get()
      assert.equal("BAD_RESPONSE", err.code)
      assert.equal(200, err.status)
    end)
  end)

  describe("errors", function()
    -- Every documented code, with its status, comes back as kind "api".
    local codes = {}
    for code, status in pairs(catalogue.errors) do codes[#codes + 1] = { code, status } end
    table.sort(codes, function(a, b) return a[1] < b[1] end)
    for _, c in ipairs(codes) do
      it(("maps %s (%d)"):format(c[1], c[2]), function()
        local w = fake { max_retries = 0 }
        w.api_error(c[2], c[1], "message for " .. c[1], c[2] == 429 and { ["retry-after"] = "3" } or nil)
        local res, err = w.api.numbers.get("n1")
        assert.is_nil(res)
        assert.is_true(Error.is(err))
        assert.equal("api", err.kind)
        assert.equal(c[1], err.code)
        assert.equal(c[2], err.status)
        assert.equal("message for " .. c[1], err.message)
        assert.equal("GET", err.method)
        assert.equal("/numbers/n1", err.path)
        assert.equal(1, err.attempts)
        assert.equal(("%s (%d): message for %s"):format(c[1], c[2], c[1]), tostring(err))
        assert.equal(require("pivday.errors")[c[1]], err.code)
      end)
    end

    it("passes an undocumented code through verbatim", function()
      local w = fake()
      w.api_error(418, "TEAPOT_MODE", "short and stout")
      local _, err = w.api.account.get()
      assert.equal("TEAPOT_MODE", err.code)
      assert.is_false(err.retryable)
    end)

    it("reads Retry-After into retry_after", function()
      local w = fake { max_retries = 0 }
      w.api_error(429, "RATE_LIMITED", "Rate limit exceeded, retry in 12s", { ["retry-after"] = "12" })
      local _, err = w.api.account.get()
      assert.equal(12, err.retry_after)
      assert.is_true(err.retryable)
    end)

    it("assert() raises the error table itself", function()
      local w = fake()
      w.api_error(404, "NUMBER_NOT_FOUND", "no such number")
      -- _G.assert: the plain Lua assert scripts use (busted's is luassert)
      local ok, raised = pcall(function() local r = _G.assert(w.api.numbers.get("nope")) return r end)
      assert.is_false(ok)
      assert.is_true(Error.is(raised))
      assert.equal("NUMBER_NOT_FOUND", raised.code)
    end)

    it("pivday.errors constants are read-only and a misspelt one raises", function()
      local errors = require "pivday.errors"
      assert.equal("NUMBER_NOT_FOUND", errors.NUMBER_NOT_FOUND)
      assert.equal("NOT_READY", errors.NOT_READY)
      assert.equal("VERIFY_TIMEOUT", errors.VERIFY_TIMEOUT)
      assert.has_error(function() return errors.NUMBR_NOT_FOUND end, nil)
      assert.has_error(function() errors.NEW = "x" end)
      for code in pairs(catalogue.errors) do assert.equal(code, errors[code]) end
    end)
  end)

  describe("retries", function()
    it("retries a GET on a 5xx without envelope, with growing backoff", function()
      local w = fake()
      w.reply(500, "Internal Server Error")
      w.reply(503, "")
      w.ok({ user_id = "u" })
      local r = assert(w.api.account.get())
      assert.equal("u", r.user_id)
      assert.equal(3, client.meta(r).attempts)
      assert.equal(2, #w.slept)
      assert.is_true(w.slept[1] >= 0.125 and w.slept[1] <= 0.25)
      assert.is_true(w.slept[2] >= 0.25 and w.slept[2] <= 0.5)
    end)

    it("retries GET/PUT/PATCH/DELETE on timeouts and dropped connections", function()
      local w = fake()
      w.fail("timeout", "TIMEOUT", true)
      w.fail("transport", "RECV_ERROR", true)
      w.ok({ piv_num_id = "n1", custom_name = "x" })
      assert(w.api.numbers.update("n1", { custom_name = "x" }))
      assert.equal(3, #w.requests)
    end)

    it("never re-sends a POST after a 5xx, a timeout or a dropped connection", function()
      for _, how in ipairs { "500", "html502", "timeout", "reset" } do
        local w = fake()
        if how == "500" then w.api_error(500, "INTERNAL_ERROR", "boom")
        elseif how == "html502" then w.reply(502, "<html>bad gateway</html>")
        elseif how == "timeout" then w.fail("timeout", "TIMEOUT", true)
        else w.fail("transport", "RECV_ERROR", true) end
        local res, err = w.api.numbers.purchase(PURCHASE)
        assert.is_nil(res, how)
        assert.equal(1, #w.requests, how)
        assert.equal(1, err.attempts, how)
        assert.is_true(err.outcome_unknown, how)
        assert.is_false(err.retryable, how)
        assert.matches("may have reached the server", err.message)
        assert.equal("POST", err.method)
      end
    end)

    it("retries any method when the connection failed before sending", function()
      local w = fake()
      w.fail("transport", "COULDNT_CONNECT", false)
      w.fail("transport", "COULDNT_RESOLVE_HOST", nil) -- transport did not say: known pre-send code
      w.reply(200, { success = true, cost = 5, numbers = {} })
      assert(w.api.numbers.purchase(PURCHASE))
      assert.equal(3, #w.requests)
    end)

    it("does not guess: an unknown transport failure on a POST is outcome_unknown", function()
      local w = fake()
      w.fail("transport", "SEND_ERROR", nil)
      local _, err = w.api.numbers.purchase(PURCHASE)
      assert.equal(1, #w.requests)
      assert.is_true(err.outcome_unknown)
    end)

    it("retries POSTs on the refunded verify codes", function()
      for _, c in ipairs { { 502, "PROXY_DEAD" }, { 503, "QUEUE_FULL" }, { 503, "SERVER_UNAVAILABLE" } } do
        local w = fake()
        w.api_error(c[1], c[2], "refunded")
        w.reply(200, { success = true, message = "Verification initiated" })
        local r = assert(w.api.numbers.verify("n1", { gv_url = "https://gv.google.com/x" }))
        assert.equal("Verification initiated", r.message)
        assert.equal(2, #w.requests, c[2])
      end
    end)

    it("marks the refunded codes retryable and not outcome_unknown when retries run out", function()
      local w = fake { max_retries = 1 }
      w.api_error(503, "QUEUE_FULL", "full")
      w.api_error(503, "QUEUE_FULL", "full")
      local _, err = w.api.numbers.verify("n1", { gv_url = "u" })
      assert.equal("QUEUE_FULL", err.code)
      assert.is_true(err.retryable)
      assert.is_nil(err.outcome_unknown)
      assert.equal(2, err.attempts)
    end)

    it("honours a Retry-After sent with a retryable 5xx", function()
      local w = fake()
      w.api_error(503, "QUEUE_FULL", "full", { ["retry-after"] = "2" })
      w.reply(200, { success = true, message = "Verification initiated" })
      assert(w.api.numbers.verify("n1", { gv_url = "u" }))
      assert.same({ 2 }, w.slept)
    end)

    it("does not retry definite 4xx answers", function()
      local w = fake()
      w.api_error(402, "INSUFFICIENT_BALANCE", "Not enough balance: required $5.00, available $1.20")
      local _, err = w.api.numbers.purchase(PURCHASE)
      assert.equal(1, #w.requests)
      assert.is_false(err.retryable)
      assert.is_nil(err.outcome_unknown)
    end)

    it("waits Retry-After on a 429, POST included, then succeeds", function()
      local w = fake()
      w.api_error(429, "RATE_LIMITED", "Rate limit exceeded, retry in 12s", { ["retry-after"] = "12" })
      w.reply(200, { success = true, cost = 5, numbers = {} })
      assert(w.api.numbers.purchase(PURCHASE))
      assert.equal(2, #w.requests)
      assert.equal(12, w.clock)
    end)

    it("caps Retry-After at retry_after_cap", function()
      local w = fake { retry_after_cap = 5 }
      w.api_error(429, "RATE_LIMITED", "slow down", { ["retry-after"] = "3600" })
      w.ok({})
      assert(w.api.account.get())
      assert.equal(5, w.clock)
    end)

    it("holds back other calls to the same host during a 429 pause", function()
      local w = fake()
      w.api_error(429, "RATE_LIMITED", "slow down", { ["retry-after"] = "7" })
      local _, err = fake { max_retries = 0, runtime = w.rt, transport = function(req)
        w.requests[#w.requests + 1] = req
        local s = table.remove(w.script, 1)
        return table.unpack(s, 1, 2)
      end }.api.account.get()
      assert.equal("RATE_LIMITED", err.code)
      -- The pause is host-wide: another client's call now waits it out first.
      w.ok({ user_id = "u" })
      assert(w.api.account.get())
      assert.equal(7, w.clock)
      assert.equal(2, #w.requests)
    end)

    it("bounds attempts by max_retries and reports them", function()
      local w = fake { max_retries = 2 }
      for _ = 1, 3 do w.reply(500, "nope") end
      local _, err = w.api.account.get()
      assert.equal(3, err.attempts)
      assert.equal(3, #w.requests)
      local lines = 0
      for _, l in ipairs(w.logs) do if l:find("account.get GET /account -> 500", 1, true) then lines = lines + 1 end end
      assert.equal(3, lines)
    end)

    it("stops at the deadline across retries and waits", function()
      local w = fake { deadline = 10 }
      w.api_error(429, "RATE_LIMITED", "slow down", { ["retry-after"] = "30" })
      local _, err = w.api.account.get()
      assert.equal("RATE_LIMITED", err.code) -- waiting 30 s would pass the deadline
      assert.equal(1, #w.requests)
      assert.equal(0, w.clock)
    end)

    it("gives each attempt at most the time left before the deadline", function()
      local w = fake { deadline = 10, timeout = 30 }
      w.script[1] = function(req) w.clock = w.clock + 9.5; return nil, Error.new { kind = "timeout", code = "TIMEOUT", message = "t", sent = true } end
      w.script[2] = function(req)
        w.clock = w.clock + req.timeout
        return nil, Error.new { kind = "timeout", code = "TIMEOUT", message = "t", sent = true }
      end
      local _, err = w.api.account.get()
      assert.equal(10, w.requests[1].timeout)
      assert.equal("TIMEOUT", err.code)
      assert.equal("timeout", err.kind)
      if #w.requests == 2 then assert.is_true(w.requests[2].timeout <= 0.5) end
    end)

    it("passes timeout and connect_timeout to the transport", function()
      local w = fake { timeout = 7, connect_timeout = 2 }
      w.ok({})
      assert(w.api.account.get())
      assert.equal(7, w.requests[1].timeout)
      assert.equal(2, w.requests[1].connect_timeout)
    end)
  end)

  describe("the API key", function()
    it("is never in tostring(api), errors or debug lines", function()
      local w = fake()
      w.api_error(401, "UNAUTHORIZED", "key " .. KEY .. " was revoked")
      local _, err = w.api.account.get()
      assert.equal("pivday.Client(http://sandbox.test/api/v1)", tostring(w.api))
      assert.not_matches(KEY, tostring(err), 1, true)
      assert.matches("<redacted>", err.message)
      for _, l in ipairs(w.logs) do assert.is_nil(l:find(KEY, 1, true)) end
      for k, v in pairs(w.api) do
        assert.is_nil(tostring(k):find(KEY, 1, true))
        assert.is_nil(tostring(v):find(KEY, 1, true))
      end
    end)

    -- Resolution reads the environment and $HOME, so it runs in a child
    -- process with a controlled environment.
    local function child(env, body)
      local lpath = package.path:gsub("'", "")
      local cpath = package.cpath:gsub("'", "")
      local code = ([[
package.path = '%s'
package.cpath = '%s'
local client = require "pivday.client"
local api = client.new{ base_url = "http://h.test/api/v1", runtime = { now = os.clock, sleep = function() end,
  cond = function() end }, transport = function(req)
    return { status = 200, headers = {}, body = '{"success":true,"data":{"auth":"' .. req.headers.Authorization .. '"}}' }
  end }
local r, err = api.account.get()
io.write(r and r.auth or (err.code .. "|" .. err.message))
]]):format(lpath, cpath)
      local script = os.tmpname()
      local f = assert(io.open(script, "w")); f:write(code); f:close()
      local p = assert(io.popen(("env -u PIVDAY_API_KEY -u XDG_CONFIG_HOME %s lua5.4 %s 2>&1"):format(env, script)))
      local out = p:read("a")
      p:close()
      os.remove(script)
      return out
    end

    local home
    before_each(function()
      home = os.tmpname()
      os.remove(home)
      assert(os.execute("mkdir -p " .. home .. "/.config/pivday"))
    end)
    after_each(function() os.execute("rm -rf " .. home) end)

    it("comes from PIVDAY_API_KEY", function()
      assert.equal("Bearer from-env", child("PIVDAY_API_KEY=from-env HOME=" .. home, ""))
    end)

    it("comes from ~/.config/pivday/key when it is mode 600", function()
      local f = assert(io.open(home .. "/.config/pivday/key", "w")); f:write("  from-file\n"); f:close()
      os.execute("chmod 600 " .. home .. "/.config/pivday/key")
      assert.equal("Bearer from-file", child("HOME=" .. home, ""))
    end)

    it("refuses a key file readable by group or others", function()
      local f = assert(io.open(home .. "/.config/pivday/key", "w")); f:write("from-file\n"); f:close()
      os.execute("chmod 644 " .. home .. "/.config/pivday/key")
      local out = child("HOME=" .. home, "")
      assert.matches("^INSECURE_KEY_FILE|", out)
      assert.matches("chmod 600", out)
      assert.not_matches("from%-file", out)
    end)

    it("is a clear error at the first call when missing, naming both sources", function()
      local out = child("HOME=" .. home, "")
      assert.matches("^MISSING_API_KEY|", out)
      assert.matches("PIVDAY_API_KEY", out)
      assert.matches("/.config/pivday/key", out, 1, true)
    end)
  end)

  describe("pagination", function()
    -- Serves `total` numbers from the fake, honouring limit/offset.
    local function serve_numbers(w, total, fail_at)
      local function handler(req)
        local q = {}
        for k, v in req.url:gmatch("[?&]([^=]+)=([^&]*)") do q[k] = v end
        local limit, offset = tonumber(q.limit), tonumber(q.offset) or 0
        if fail_at and offset >= fail_at then
          return { status = 503, headers = {}, body = '{"success":false,"error":{"code":"SERVER_UNAVAILABLE","message":"down"}}' }
        end
        local items = json.array()
        for i = offset + 1, math.min(total, offset + limit) do items[#items + 1] = { piv_num_id = "n" .. i } end
        return { status = 200, headers = {}, body = json.encode { success = true,
          data = { numbers = items, pagination = { total = total, limit = limit, offset = offset } } } }
      end
      for i = 1, 20 do w.script[i] = handler end
    end

    it("walks 450 numbers in pages of the maximum size, lazily", function()
      local w = fake()
      serve_numbers(w, 450)
      local iter = w.api.numbers.each { status = "active" }
      assert.equal(0, #w.requests, "nothing is fetched before the first step")
      local seen = {}
      for n in iter do seen[#seen + 1] = n.piv_num_id end
      assert.equal(450, #seen)
      assert.equal("n1", seen[1])
      assert.equal("n450", seen[450])
      assert.equal(3, #w.requests)
      assert.matches("limit=200&offset=0&status=active", w.requests[1].url, 1, true)
      assert.matches("limit=200&offset=400", w.requests[3].url, 1, true)
    end)

    it("fetches only the pages it needs when the loop breaks early", function()
      local w = fake()
      serve_numbers(w, 450)
      for n in w.api.numbers.each {} do
        if n.piv_num_id == "n3" then break end
      end
      assert.equal(1, #w.requests)
    end)

    it("stops on an empty first page", function()
      local w = fake()
      serve_numbers(w, 0)
      local count = 0
      for _ in w.api.numbers.each {} do count = count + 1 end
      assert.equal(0, count)
      assert.equal(1, #w.requests)
    end)

    it("raises the error of a failing page", function()
      local w = fake { max_retries = 0 }
      serve_numbers(w, 450, 200)
      local count = 0
      local ok, err = pcall(function()
        for _ in w.api.numbers.each {} do count = count + 1 end
      end)
      assert.is_false(ok)
      assert.is_true(Error.is(err))
      assert.equal("SERVER_UNAVAILABLE", err.code)
      assert.equal(200, count)
    end)

    it("raises a validation error when the iterator is made", function()
      local w = fake()
      local ok, err = pcall(w.api.numbers.each, { limit = 1000 })
      assert.is_false(ok)
      assert.equal("VALIDATION_ERROR", err.code)
      assert.matches("^numbers.each: limit must be at most 200", err.message)
    end)

    it("has an iterator for each paginated list, with path parameters first", function()
      local w = fake()
      w.ok({ messages = { { id = "42" } }, pagination = { total = 1, limit = 200, offset = 0 } })
      local got = {}
      for m in w.api.numbers.each_sms("n1") do got[#got + 1] = m.id end
      assert.same({ "42" }, got)
      assert.matches("/numbers/n1/sms?limit=200&offset=0", w.requests[1].url, 1, true)
      for _, c in ipairs { { "proxy", "each_order", "orders", "/proxy/orders?limit=500" },
                           { "domains", "each", "domains", "/domains?limit=500" },
                           { "whites", "each", "whites", "/whites?limit=500" } } do
        w.ok({ [c[3]] = {}, pagination = { total = 0 } })
        for _ in w.api[c[1]][c[2]]() do end
        assert.matches(c[4], w.requests[#w.requests].url, 1, true)
      end
    end)
  end)

  describe("concurrency", function()
    -- A tiny cooperative scheduler: the transport and condition variables
    -- yield, and every coroutine is resumed in turn.
    it("keeps at most `concurrency` requests in flight and queues the rest in order", function()
      local inflight, max_inflight, started = 0, 0, {}
      local clock = 0
      local rt = {
        now = function() return clock end,
        sleep = function(s) clock = clock + s; coroutine.yield() end,
        cond = function()
          local c = {}
          function c.wait() coroutine.yield() return true end
          function c.signal() end
          return c
        end,
      }
      local api = client.new { api_key = KEY, base_url = "http://c.test/api/v1", runtime = rt, concurrency = 3,
        transport = function(req)
          inflight = inflight + 1
          max_inflight = math.max(max_inflight, inflight)
          started[#started + 1] = req.url:match("numbers/([^/?]+)")
          for _ = 1, 3 do coroutine.yield() end
          inflight = inflight - 1
          return { status = 200, headers = {}, body = '{"success":true,"data":{"ok":true}}' }
        end }
      local cos, results = {}, {}
      for i = 1, 10 do
        cos[i] = coroutine.create(function() results[i] = api.numbers.get("n" .. i) end)
      end
      local alive = true
      while alive do
        alive = false
        for _, co in ipairs(cos) do
          if coroutine.status(co) == "suspended" then
            assert(coroutine.resume(co))
            alive = true
          end
        end
      end
      assert.equal(3, max_inflight)
      for i = 1, 10 do assert.is_true(results[i].ok) end
      assert.same({ "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10" }, started)
    end)
  end)

  describe("construction", function()
    it("refuses bad options at the caller's line", function()
      for _, o in ipairs { { base_url = "ftp://x" }, { concurrency = 0 }, { timeout = "5" }, { api_key = 5 },
                           { transport = 5 }, { validate = "yes" }, { max_retries = -1 } } do
        local ok, msg = pcall(client.new, o)
        assert.is_false(ok)
        assert.matches("bad option", msg)
      end
      assert.has_error(function() client.new("key") end)
    end)

    it("strips a trailing slash from base_url", function()
      local w = fake { base_url = "http://s.test/api/v1/" }
      w.ok({})
      assert(w.api.account.get())
      assert.equal("http://s.test/api/v1/account", w.requests[1].url)
    end)
  end)
end)

describe("pivday.time", function()
  local time = require "pivday.time"
  it("parses the API's UTC timestamps", function()
    assert.equal(1779453296, time.parse("2026-05-22T12:34:56Z"))
    assert.equal("integer", math.type(time.parse("2026-05-22T12:34:56Z")))
    assert.equal(0, time.parse("1970-01-01T00:00:00Z"))
    assert.equal(-1, time.parse("1969-12-31T23:59:59Z"))
    assert.equal(951782400, time.parse("2000-02-29T00:00:00Z"))
  end)
  it("takes offsets and fractional seconds", function()
    assert.equal(1779453296, time.parse("2026-05-22T14:34:56+02:00"))
    assert.equal(1779453296, time.parse("2026-05-22T07:04:56-0530"))
    assert.equal(1779453296.25, time.parse("2026-05-22T12:34:56.250Z"))
    assert.equal(1779453296, time.parse("2026-05-22 12:34:56.000z"))
  end)
  it("returns nil and a message for bad input", function()
    for _, bad in ipairs { "2026-05-22", "2026-05-22T12:34:56", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
                           "2026-05-22T24:00:00Z", "2026-05-22T12:34:56+25:00", "2026-05-22T12:34:56.Z", "yesterday" } do
      local v, msg = time.parse(bad)
      assert.is_nil(v, bad)
      assert.is_string(msg, bad)
    end
    assert.has_error(function() time.parse(5) end)
  end)
  it("formats epoch seconds back", function()
    assert.equal("2026-05-22T12:34:56Z", time.format(1779453296))
    assert.equal("2026-05-22T12:34:56Z", time.format(1779453296.9))
    assert.equal("1969-12-31T23:59:59Z", time.format(-1))
    assert.equal("2000-02-29T00:00:00Z", time.format(951782400))
    for _, t in ipairs { 0, 86399, 86400, 1e9, 4102444800, -2208988800 } do
      assert.equal(t, time.parse(time.format(t)))
    end
    assert.has_error(function() time.format("now") end)
    assert.has_error(function() time.format(0 / 0) end)
  end)
end)

---------------------------------------------------------------------------
-- Part 2: end to end, against the in-process sandbox over real HTTP.
---------------------------------------------------------------------------

describe("pivday.client against the sandbox", function()
  local pivday = require "pivday"
  local sb, api

  -- The sandbox's control API (issue 3), in one place.
  local function ctl(name, args)
    local f = sb[name]
    assert(type(f) == "function", "the sandbox object has no control method '" .. name .. "'")
    return f(sb, args or {})
  end

  local function new_api(o)
    local opts = { api_key = sb.api_key, base_url = sb.base_url, backoff_base = 0.01, backoff_max = 0.05 }
    for k, v in pairs(o or {}) do opts[k] = v end
    return pivday.client(opts)
  end

  -- Requests the sandbox logged for one endpoint (optionally since index `from`).
  local function logged(endpoint, from)
    local n = 0
    local log = ctl("requests", {})
    for i = from or 1, #log do
      local r = log[i]
      local ep = catalogue.route(r.method, r.path)
      if ep and ep.id == endpoint then n = n + 1 end
    end
    return n
  end

  local function balance()
    return assert(api.account.get()).balance
  end

  setup(function()
    sb = pivday.sandbox {}
    api = new_api()
  end)

  teardown(function()
    if sb then sb:close() end
  end)

  before_each(function()
    client._reset_holds()
    ctl("reset")
    ctl("clear_faults")
  end)

  -- Shapes from endpoints.json's example responses: every documented key
  -- is there with its JSON type (a documented null may be missing).
  local SOURCE = "../shared/api/endpoints.json"
  local examples
  do
    local f = io.open(SOURCE)
    if f then
      local src = json.decode(f:read("a"))
      f:close()
      examples = {}
      for _, e in ipairs(src.endpoints) do examples[e.id] = e end
    end
  end

  -- Fields every example shows with a value that may still be null:
  -- sms_send_price is typed number|null, custom_name is optional at purchase.
  local NULLABLE = { sms_send_price = true, custom_name = true }

  local function shape_problems(schema, v, where, out)
    if type(schema) == "string" and v == nil and NULLABLE[where:match("([%w_]+)$")] then
      return out
    elseif type(schema) == "string" then
      local ok = false
      for alt in schema:gmatch("[^|]+") do
        if alt == "null" and (v == nil or v == json.null) then ok = true
        elseif alt == "string" and type(v) == "string" then ok = true
        elseif alt == "boolean" and type(v) == "boolean" then ok = true
        elseif alt == "integer" and math.type(v) == "integer" then ok = true
        elseif alt == "number" and type(v) == "number" then ok = true
        elseif (alt == "object" or alt == "array") and type(v) == "table" then ok = true end
      end
      if not ok then out[#out + 1] = ("%s: %s expected, got %s"):format(where, schema, v == nil and "nothing" or type(v)) end
    elseif type(schema) == "table" and (schema[1] ~= nil or next(schema) == nil) then
      if type(v) ~= "table" then
        out[#out + 1] = where .. ": list expected"
      elseif schema[1] ~= nil then
        for i, x in ipairs(v) do shape_problems(schema[1], x, where .. "[" .. i .. "]", out) end
      end
    elseif type(schema) == "table" then
      if type(v) ~= "table" then
        out[#out + 1] = where .. ": object expected, got " .. (v == nil and "nothing" or type(v))
      else
        for k, s in pairs(schema) do shape_problems(s, v[k], where .. "." .. k, out) end
      end
    end
    return out
  end

  local covered = {}
  -- Checks a payload against the documented example(s) of endpoint `id`.
  local function check(id, result, err)
    assert(result, ("%s failed: %s"):format(id, tostring(err)))
    covered[id] = true
    local e = examples and examples[id]
    if not e or e.response_wrapped_in_data == json.null then return result end
    local best
    for _, ex in ipairs(e.response_schema_from_examples) do
      local schema = ex
      if e.response_wrapped_in_data then
        schema = ex.data
      else
        schema = {}
        for k, s in pairs(ex) do if k ~= "success" then schema[k] = s end end
      end
      local problems = shape_problems(schema, result, id, {})
      if #problems == 0 then return result end
      best = best or problems
    end
    error(("%s: the payload does not have the documented shape:\n  %s"):format(id, table.concat(best, "\n  ")), 2)
  end

  it("calls every endpoint once and gets its documented shape", function()
    local DAY = 86400
    check("account.get", api.account.get())
    local countries = check("numbers.countries", api.numbers.countries())
    local cc
    for _, c in ipairs(countries) do if c.can_send_sms then cc = c.country_code break end end
    assert(cc, "no country that can send SMS")

    local bought = check("numbers.purchase", api.numbers.purchase { country_code = cc, duration_months = 1, auto_renew = true,
      custom_name = "Office line" })
    local nid = bought.numbers[1].piv_num_id
    local nid2 = assert(api.numbers.purchase { country_code = cc, duration_months = 1, auto_renew = false }).numbers[1].piv_num_id
    check("numbers.list", api.numbers.list { limit = 10 })
    check("numbers.get", api.numbers.get(nid))
    check("numbers.renew", api.numbers.renew(nid, { duration_months = 1 }))
    check("numbers.update", api.numbers.update(nid, { custom_name = "Support line" }))
    check("numbers.set_auto_renew", api.numbers.set_auto_renew(nid, { auto_renew = false }))
    check("numbers.send_sms", api.numbers.send_sms(nid, { to_number = "+14155551234", message_body = "Hello from piv.day" }))
    check("numbers.sms", api.numbers.sms(nid, { limit = 20 }))
    check("numbers.verify", api.numbers.verify(nid, { gv_url = "https://gv.google.com/verify?x=1" }))

    local server = check("proxy.servers", api.proxy.servers()).servers[1]
    local order = check("proxy.purchase", api.proxy.purchase { server_id = server.id, quantity = 2, months = 1 }).order
    check("proxy.orders", api.proxy.orders { limit = 20 })
    check("proxy.order", api.proxy.order(order.id))
    check("proxy.export", api.proxy.export(order.id, { format = "socks5" }))

    check("domains.search", api.domains.search { q = "pivday-spec-one.com" })
    local reg = check("domains.register", api.domains.register { domain = "pivday-spec-one.com", period = 1, cloudflare = true,
      auto_renew = true, ssl_mode = "full", dns_records = { { type = "A", name = "@", content = "1.2.3.4", proxied = true } } })
    local reg2 = assert(api.domains.register { domain = "pivday-spec-two.com", period = 1, cloudflare = false,
      auto_renew = false, nameservers = { "ns1.myhost.com", "ns2.myhost.com" } })
    check("domains.queue", api.domains.queue(reg.queue_id))

    check("whites.tiers", api.whites.tiers())
    local white = check("whites.create", api.whites.create { name = "Tech Blog DE", tier_key = "v2_tier1", niche = "IT Consulting",
      country = "DE", language = "de", domain = "techblog-de.com" }).white
    local _, nr = api.whites.download(white.id)
    assert.equal("NOT_READY", nr and nr.code)
    assert.equal(409, nr.status)

    -- Let the async work finish and the 1-month rentals expire (restorable
    -- for 7 days).
    ctl("advance", { seconds = 33 * DAY })

    check("numbers.restore", api.numbers.restore { piv_num_ids = { nid2 } })
    check("proxy.restore", api.proxy.restore(order.id))
    check("proxy.renew", api.proxy.renew(order.id, { months = 1 }))

    local did = reg.domain.id
    check("domains.list", api.domains.list { limit = 20, cloudflare = true })
    check("domains.get", api.domains.get(did))
    check("domains.renew", api.domains.renew(did, { period = 1 }))
    check("domains.set_auto_renew", api.domains.set_auto_renew(did, { auto_renew = false }))
    local rec = check("domains.add_dns", api.domains.add_dns(did, { type = "A", name = "www", content = "1.2.3.4", ttl = 1, proxied = true })).record
    check("domains.dns", api.domains.dns(did))
    check("domains.update_dns", api.domains.update_dns(did, rec.id, { content = "5.6.7.8" }))
    check("domains.delete_dns", api.domains.delete_dns(did, rec.id))
    check("domains.set_nameservers", api.domains.set_nameservers(reg2.domain.id, { nameservers = { "ns1.example.com", "ns2.example.com" } }))
    check("domains.enable_cloudflare", api.domains.enable_cloudflare(reg2.domain.id, { enabled = true }))

    check("whites.list", api.whites.list { limit = 20 })
    check("whites.get", api.whites.get(white.id))
    check("whites.download", api.whites.download(white.id, { format = "php" }))
    check("whites.config", api.whites.config(white.id, { company = "My Brand", domain = "newdomain.com", email = "info@newdomain.com",
      phone = "+49 30 123456", address = "Berliner Str. 1, Berlin", legal = "My Brand GmbH" }))

    local missing = {}
    for _, ep in ipairs(catalogue.endpoints) do
      if not covered[ep.id] then missing[#missing + 1] = ep.id end
    end
    assert.same({}, missing)
  end)

  it("keeps integers integers and turns nulls into missing fields", function()
    local r = assert(api.numbers.countries())
    for _, c in ipairs(r) do
      if not c.can_send_sms then assert.is_nil(c.sms_send_price) end
    end
    local list = assert(api.numbers.list {})
    assert.equal("integer", math.type(list.pagination.total))
    assert.equal("integer", math.type(list.pagination.limit))
  end)

  describe("documented errors come back typed, with their status", function()
    local function expect(code, status, res, err)
      assert.is_nil(res)
      assert.is_true(Error.is(err), tostring(err))
      assert.equal("api", err.kind)
      assert.equal(code, err.code)
      assert.equal(status, err.status)
      assert.equal(catalogue.errors[code], err.status)
    end

    it("UNAUTHORIZED", function()
      expect("UNAUTHORIZED", 401, new_api { api_key = "not-a-key" }.account.get())
    end)

    it("NUMBER_NOT_FOUND", function()
      expect("NUMBER_NOT_FOUND", 404, api.numbers.get("no-such-number"))
    end)

    it("VALIDATION_ERROR from the server (local checks off)", function()
      expect("VALIDATION_ERROR", 400, new_api { validate = false }.numbers.purchase { country_code = "SE" })
    end)

    it("INSUFFICIENT_BALANCE", function()
      local acct = ctl("create_account", { balance = 0 })
      local poor = new_api { api_key = acct.api_key }
      local _, err = poor.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false }
      expect("INSUFFICIENT_BALANCE", 402, nil, err)
      assert.matches("required %$%d+%.%d%d, available %$0%.00", err.message)
    end)

    it("NO_NUMBERS_AVAILABLE (forced)", function()
      ctl("force", { what = "purchase", outcome = "NO_NUMBERS_AVAILABLE" })
      expect("NO_NUMBERS_AVAILABLE", 400, api.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false })
    end)

    it("COUNTRY_NOT_AVAILABLE", function()
      expect("COUNTRY_NOT_AVAILABLE", 400, api.numbers.purchase { country_code = "ZZ", duration_months = 1, auto_renew = false })
    end)

    it("NO_RESTORABLE_NUMBERS", function()
      expect("NO_RESTORABLE_NUMBERS", 404, api.numbers.restore { piv_num_ids = { "no-such-number" } })
    end)

    it("NOT_FOUND (proxy server)", function()
      expect("NOT_FOUND", 404, api.proxy.purchase { server_id = "no-such-server", quantity = 1, months = 1 })
    end)

    it("INVALID_TIER (local checks off)", function()
      expect("INVALID_TIER", 400, new_api { validate = false }.whites.create { name = "ab", tier_key = "v9", niche = "n",
        country = "DE", language = "de" })
    end)

    it("PROXY_DEAD, QUEUE_FULL, SERVER_UNAVAILABLE are retryable and refunded", function()
      local n = assert(api.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false }).numbers[1].piv_num_id
      local once = new_api { max_retries = 0 }
      for _, c in ipairs { { "PROXY_DEAD", 502 }, { "QUEUE_FULL", 503 }, { "SERVER_UNAVAILABLE", 503 } } do
        local before = balance()
        ctl("force", { what = "verify", outcome = c[1] })
        local res, err = once.numbers.verify(n, { gv_url = "https://gv.google.com/x" })
        expect(c[1], c[2], res, err)
        assert.is_true(err.retryable)
        assert.is_nil(err.outcome_unknown)
        assert.equal(before, balance())
      end
    end)

    it("sends JSON bodies with their content type, whatever was sent before", function()
      local seen = {}
      local srv = assert(pivday.http.server { handler = function(req)
        seen[#seen + 1] = req.method .. " " .. tostring(req.headers["content-type"]) .. " "
          .. tostring(req.headers.authorization)
        return 200, { ["content-type"] = "application/json" }, '{"success":true,"data":{"ok":true}}'
      end })
      local plain = pivday.client { api_key = "k-123", base_url = srv.url .. "/api/v1" }
      assert(plain.account.get())
      assert(plain.numbers.send_sms("n-1", { to_number = "+46700000000", message_body = "hi" }))
      assert(plain.account.get())
      srv:close()
      assert.same({ "GET nil Bearer k-123", "POST application/json Bearer k-123", "GET nil Bearer k-123" }, seen)
    end)

    it("gives what a call took through meta, one attempt or several", function()
      local r = assert(api.account.get())
      local m = pivday.meta(r)
      assert.equal(200, m.status)
      assert.equal(1, m.attempts)
      assert.is_true(m.elapsed > 0 and m.elapsed < 10)
      assert.equal("application/json", m.headers["content-type"]:match("^[^;]+"))
      assert.equal(m, pivday.meta(r)) -- made once
      ctl("fault", { match = "/account", status = 500, times = 1 })
      local r2 = assert(api.account.get())
      local m2 = pivday.meta(r2)
      assert.equal(200, m2.status)
      assert.equal(2, m2.attempts)
      assert.is_table(m2.headers)
      assert.is_true(m2.elapsed > 0 and m2.elapsed < 10)
    end)

    it("keeps meta for the latest 256 results, not for older ones", function()
      local first = assert(api.account.get())
      local results = {}
      for i = 1, 256 do results[i] = assert(api.account.get()) end
      assert.is_nil(pivday.meta(first)) -- 256 newer results came since
      assert.equal(200, pivday.meta(results[1]).status)
      assert.equal(200, pivday.meta(results[256]).status)
    end)

    it("is retried through a refunded verify failure, POST included", function()
      local n = assert(api.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false }).numbers[1].piv_num_id
      ctl("force", { what = "verify", outcome = "QUEUE_FULL" })
      local r = assert(api.numbers.verify(n, { gv_url = "https://gv.google.com/x" }))
      assert.equal(2, pivday.meta(r).attempts)
    end)

    it("assert() raises the error table itself", function()
      local ok, err = pcall(function() local r = _G.assert(api.numbers.get("no-such-number")) return r end)
      assert.is_false(ok)
      assert.is_true(Error.is(err))
      assert.equal("NUMBER_NOT_FOUND (404): ", tostring(err):sub(1, 24))
    end)
  end)

  describe("retries", function()
    it("429: waits Retry-After, then succeeds", function()
      ctl("fault", { match = "/account", status = 429, retry_after = 1 })
      local t0 = pivday.now()
      local r = assert(api.account.get())
      assert.is_true(pivday.now() - t0 >= 0.95)
      assert.equal(2, pivday.meta(r).attempts)
    end)

    it("429: holds back the other calls to the host meanwhile", function()
      ctl("fault", { match = "/account", status = 429, retry_after = 1 })
      local t0 = pivday.now()
      local done = {}
      pivday.run(function()
        pivday.gather(
          function() assert(api.account.get()); done[#done + 1] = pivday.now() - t0 end,
          function() pivday.sleep(0.1); assert(api.numbers.countries()); done[#done + 1] = pivday.now() - t0 end)
      end)
      assert.equal(2, #done)
      for _, t in ipairs(done) do assert.is_true(t >= 0.95, "a call went out during the pause") end
    end)

    it("500 on a GET: retried, then succeeds", function()
      ctl("fault", { match = "/numbers/countries", status = 500, times = 2 })
      local r = assert(api.numbers.countries())
      assert.equal(3, pivday.meta(r).attempts)
    end)

    it("a dropped connection on a GET: retried, then succeeds", function()
      local from = #ctl("requests", {}) + 1
      ctl("fault", { match = "/account", drop = "before" })
      local r = assert(api.account.get())
      -- Either we retried or libcurl re-sent it on a fresh connection (it
      -- may, for a GET): the server saw both.
      assert.is_true(pivday.meta(r).attempts <= 2)
      assert.equal(2, logged("account.get", from))
    end)

    it("500 on numbers.purchase: an error, one request, charged at most once", function()
      local before = balance()
      local from = #ctl("requests", {}) + 1
      ctl("fault", { match = "/numbers/purchase", status = 500 })
      local res, err = api.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false }
      assert.is_nil(res)
      assert.equal("INTERNAL_ERROR", err.code)
      assert.is_true(err.outcome_unknown)
      assert.equal(1, err.attempts)
      assert.equal(1, logged("numbers.purchase", from))
      assert.is_true(balance() >= before)
    end)

    it("a connection dropped after the purchase was processed: one request, charged once, outcome_unknown", function()
      -- A warm keep-alive connection first: this is where libcurl would
      -- otherwise re-send the POST on its own.
      assert(api.account.get())
      local before = balance()
      local from = #ctl("requests", {}) + 1
      ctl("fault", { match = "/numbers/purchase", drop = "after" })
      local res, err = api.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false }
      assert.is_nil(res)
      assert.is_true(err.outcome_unknown)
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.matches("may have reached the server", err.message)
      assert.equal(1, logged("numbers.purchase", from))
      local price
      for _, c in ipairs(assert(api.numbers.countries())) do if c.country_code == "SE" then price = c.price_per_month end end
      assert.is_true(math.abs((before - balance()) - price) < 0.005, "charged exactly once")
    end)

    it("times out an attempt after `timeout`", function()
      ctl("fault", { match = "/account", delay = 2 })
      local quick = new_api { timeout = 0.3, max_retries = 0 }
      local t0 = pivday.now()
      local res, err = quick.account.get()
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal("TIMEOUT", err.code)
      assert.is_true(pivday.now() - t0 < 1.5)
    end)

    it("stops at the deadline across retries", function()
      ctl("fault", { match = "/account", delay = 0.4, times = 10 })
      local bounded = new_api { timeout = 0.3, deadline = 1, max_retries = 10 }
      local t0 = pivday.now()
      local res, err = bounded.account.get()
      assert.is_nil(res)
      assert.equal("TIMEOUT", err.code)
      assert.is_true(pivday.now() - t0 < 1.5)
    end)
  end)

  describe("pagination and concurrency", function()
    it("gives up waiting for a rate-limit pause at the deadline, without sending", function()
      -- An endpoint the tests above leave alone: their delayed /account
      -- answers may still be logged late on a slow run (valgrind).
      local one = new_api { deadline = 0.3, max_retries = 0 }
      ctl("fault", { match = "/numbers/countries", status = 429, retry_after = 5 })
      local from = #ctl("requests", {}) + 1
      local _, err1 = one.numbers.countries() -- the 429: the host is paused for 5 s
      assert.equal("RATE_LIMITED", err1.code)
      local res, err = one.numbers.countries()
      assert.is_nil(res)
      assert.equal("TIMEOUT", err.code)
      assert.matches("waiting for the rate limit pause", err.message)
      assert.equal(0, err.attempts)
      assert.equal(1, logged("numbers.countries", from)) -- the second never went out
      client._reset_holds()
    end)

    it("walks 450 numbers bought concurrently, three pages of 200", function()
      ctl("set_country", { country_code = "SE", price_per_month = 0.01 })
      local limited = new_api { concurrency = 8 }
      pivday.run(function()
        local fns = {}
        for i = 1, 450 do
          fns[i] = function()
            return assert(limited.numbers.purchase { country_code = "SE", duration_months = 1, auto_renew = false })
          end
        end
        pivday.gather(table.unpack(fns))
      end)
      local from = #ctl("requests", {}) + 1
      local seen, count = {}, 0
      for n in api.numbers.each {} do
        assert.is_nil(seen[n.piv_num_id], "duplicate " .. n.piv_num_id)
        seen[n.piv_num_id] = true
        count = count + 1
      end
      assert.equal(450, count)
      assert.equal(3, logged("numbers.list", from))
    end)

    it("gives a queued call's slot back when its task is cancelled", function()
      ctl("fault", { match = "/account", delay = 0.4 })
      local one = new_api { concurrency = 1 }
      local third
      pivday.run(function()
        local first = pivday.spawn(function() return assert(one.account.get()) end)
        pivday.sleep(0.05)
        -- Queued behind `first`, then cancelled by the timeout.
        local r, err = pivday.timeout(0.1, function() return one.numbers.countries() end)
        assert.is_nil(r)
        assert.equal("TIMEOUT", err.code)
        assert.is_true(first:join())
        local t0 = pivday.now()
        assert(one.numbers.countries())
        third = pivday.now() - t0
      end)
      assert.is_true(third < 0.3, "the slot was lost")
    end)

    it("queues calls beyond `concurrency`", function()
      ctl("fault", { match = "/account", delay = 0.2, times = 8 })
      local two = new_api { concurrency = 2 }
      local t0 = pivday.now()
      pivday.run(function()
        local fns = {}
        for i = 1, 8 do fns[i] = function() return assert(two.account.get()) end end
        pivday.gather(table.unpack(fns))
      end)
      local took = pivday.now() - t0
      assert.is_true(took >= 0.75, ("8 calls of 0.2 s, 2 at a time, took %.2f s"):format(took))
    end)
  end)

  describe("the key", function()
    it("is absent from tostring(api), errors and debug output", function()
      local lines = {}
      local dbg = new_api { debug = true, log = function(l) lines[#lines + 1] = l end, max_retries = 1 }
      assert(dbg.account.get())
      ctl("fault", { match = "/numbers/countries", status = 500, times = 2 })
      local _, err = dbg.numbers.countries()
      local _, err2 = dbg.numbers.get("missing")
      assert.is_true(#lines >= 4)
      local key = sb.api_key
      for _, s in ipairs { tostring(dbg), tostring(err), tostring(err2), table.concat(lines, "\n") } do
        assert.is_nil(s:find(key, 1, true))
      end
      assert.matches("numbers.countries GET /numbers/countries %-> 500 %d+ms attempt 1/2", lines[2])
    end)
  end)
end)
