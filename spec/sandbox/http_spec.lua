-- The sandbox over real HTTP on 127.0.0.1: every endpoint, every documented
-- error code with its status, validation, pagination, money, lifecycles
-- through the clock, webhooks to a real listener (payloads, retry timing,
-- give-up, resend, deadline), faults and the state file across a restart.
local pivday = require "pivday"
local json = require "pivday.json"
local catalogue = require "pivday.catalogue"
local policy = require "pivday.sandbox.policy"
local reply = require "pivday.sandbox.reply"
local sandbox = require "pivday.sandbox"
local helper = require "helper"
local t = helper.t

local DAY, MONTH = policy.DAY, policy.MONTH
local DE_SERVER = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"

-- A client for one sandbox: api(method, path, body, query, key) -> status,
-- decoded body, headers.
local function client(sb)
  local function api(method, path, body, query, key)
    local url = sb.base_url .. path .. (query and ("?" .. query) or "")
    local res = assert(pivday.http.request {
      method = method, url = url, timeout = t(10), no_resend = true,
      headers = { authorization = "Bearer " .. (key or sb.api_key), ["content-type"] = "application/json" },
      body = body and (type(body) == "string" and body or json.encode(body)) or nil,
    })
    return res.status, json.decode(res.body), res.headers, res.body
  end
  return api
end

-- A webhook receiver answering with statuses from `script` (200 after it
-- runs out); records every request with its arrival time.
local function receiver(script, delay)
  local got = {}
  local srv = assert(pivday.http.server { handler = function(req)
    got[#got + 1] = { at = pivday.now(), req = req, body = json.decode(req.body) }
    if delay then pivday.sleep(delay) end
    return table.remove(script or {}, 1) or 200, {}, "ok"
  end })
  return srv, got
end

local function wait_for(cond, seconds)
  local deadline = pivday.now() + t(seconds or 5)
  while not cond() and pivday.now() < deadline do pivday.sleep(0.01) end
  return cond()
end

local function err(status, body, want_status, want_code)
  assert(body and body.success == false, "expected an error envelope, got " .. tostring(status))
  assert.equal(want_code, body.error.code)
  assert.equal(want_status, status)
end

describe("sandbox over HTTP", function()
  local sb, api
  before_each(function()
    sb = assert(sandbox.new { speed = 0 })
    api = client(sb)
  end)
  after_each(function() sb:close() end)

  it("serves every catalogue endpoint with 2xx (checked in the request log)", function()
    local s, b = api("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false })
    assert.equal(200, s)
    local num = b.numbers[1].piv_num_id
    local _, exp = api("POST", "/numbers/purchase", { country_code = "GB", duration_months = 1, auto_renew = false })
    local _, p = api("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 2, months = 1 })
    local order = p.data.order.id
    local _, d = api("POST", "/domains", { domain = "every.com", period = 1, cloudflare = true, auto_renew = false })
    local _, w = api("POST", "/whites", { name = "Every", tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" })
    sb:advance(60)
    local dom, white = d.data.domain.id, w.data.white.id
    local _, r = api("POST", "/domains/" .. dom .. "/dns", { type = "A", name = "@", content = "1.2.3.4" })
    local rec = r.data.record.id
    local calls = {
      { "GET", "/account" }, { "GET", "/numbers/countries" }, { "GET", "/numbers" }, { "GET", "/numbers/" .. num },
      { "POST", "/numbers/" .. num .. "/renew", { duration_months = 1 } },
      { "PATCH", "/numbers/" .. num, { custom_name = "n" } },
      { "PATCH", "/numbers/" .. num .. "/auto-renewal", { auto_renew = false } },
      { "GET", "/numbers/" .. num .. "/sms" },
      { "POST", "/numbers/" .. num .. "/sms/send", { to_number = "+14155551234", message_body = "hi" } },
      { "POST", "/numbers/" .. num .. "/verify", { gv_url = "https://gv.google.com/x" } },
      { "GET", "/proxy/servers" }, { "GET", "/proxy/orders" }, { "GET", "/proxy/orders/" .. order },
      { "POST", "/proxy/orders/" .. order .. "/renew", { months = 1 } },
      { "GET", "/proxy/orders/" .. order .. "/export", nil, "format=http" },
      { "GET", "/domains/search", nil, "q=free.com" }, { "GET", "/domains" },
      { "GET", "/domains/queue/" .. d.data.queue_id }, { "GET", "/domains/" .. dom },
      { "POST", "/domains/" .. dom .. "/renew", { period = 1 } },
      { "POST", "/domains/" .. dom .. "/auto-renew", { auto_renew = true } },
      { "GET", "/domains/" .. dom .. "/dns" },
      { "PUT", "/domains/" .. dom .. "/dns/" .. rec, { content = "5.6.7.8" } },
      { "DELETE", "/domains/" .. dom .. "/dns/" .. rec },
      { "POST", "/domains/" .. dom .. "/cloudflare", { enabled = true } },
      { "GET", "/whites/tiers" }, { "GET", "/whites" }, { "GET", "/whites/" .. white },
      { "GET", "/whites/" .. white .. "/download" },
      { "POST", "/whites/" .. white .. "/config", { company = "Co" } },
    }
    for _, c in ipairs(calls) do
      local status, body = api(c[1], c[2], c[3], c[4])
      assert(status == 200 and body.success, c[1] .. " " .. c[2] .. " -> " .. tostring(status))
    end
    -- those that need another state: ns-servers (Cloudflare off), the restores
    local _, d2 = api("POST", "/domains", { domain = "plain.org", period = 1, cloudflare = false, auto_renew = false,
      nameservers = { "ns1.x.com", "ns2.x.com" } })
    sb:advance(MONTH)
    local ns_s, ns_b = api("POST", "/domains/" .. d2.data.domain.id .. "/ns-servers", { nameservers = { "a.b.com", "c.d.com" } })
    assert(ns_s == 200, json.encode(ns_b))
    assert.equal(200, (api("POST", "/numbers/restore", { piv_num_ids = { exp.numbers[1].piv_num_id } })))
    sb:advance(MONTH)   -- the order was renewed once
    assert.equal(200, (api("POST", "/proxy/orders/" .. order .. "/restore")))
    local seen = {}
    for _, e in ipairs(sb:requests()) do
      if e.endpoint and e.status == 200 then seen[e.endpoint] = true end
    end
    for _, ep in ipairs(catalogue.endpoints) do
      assert(seen[ep.id], "no successful call of " .. ep.id)
    end
  end)

  it("reaches every documented error code with its status", function()
    local function buy(country)
      local _, b = api("POST", "/numbers/purchase", { country_code = country, duration_months = 1, auto_renew = false })
      return b.numbers[1].piv_num_id
    end
    local se, de = buy("SE"), buy("DE")
    local _, w = api("POST", "/whites", { name = "Busy", tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" })
    local other = sb:create_account { balance = 0 }
    local readonly = sb:create_key { scopes = { "account:read" } }
    local seen = {}
    local function expect(code, status, method, path, body, query, key)
      local s, b, h = api(method, path, body, query, key)
      err(s, b, status, code)
      seen[code] = true
      return h
    end
    expect("UNAUTHORIZED", 401, "GET", "/account", nil, nil, "wrong")
    expect("INSUFFICIENT_PERMISSIONS", 403, "GET", "/numbers", nil, nil, readonly.api_key)
    sb:update_account { user_id = other.user_id, disabled = { "proxy" } }
    expect("PERMISSION_DENIED", 403, "GET", "/proxy/servers", nil, nil, other.api_key)
    expect("VALIDATION_ERROR", 400, "POST", "/numbers/purchase", "{")
    expect("NUMBER_NOT_FOUND", 404, "GET", "/numbers/nope")
    expect("INSUFFICIENT_BALANCE", 402, "POST", "/numbers/purchase",
      { country_code = "SE", duration_months = 1, auto_renew = false }, nil, other.api_key)
    expect("INVALID_MESSAGE_FORMAT", 400, "POST", "/numbers/" .. se .. "/sms/send",
      { to_number = "+14155551234", message_body = ("x"):rep(2000) })
    expect("COUNTRY_NOT_AVAILABLE", 400, "POST", "/numbers/purchase", { country_code = "ZZ", duration_months = 1, auto_renew = false })
    expect("NO_NUMBERS_AVAILABLE", 400, "POST", "/numbers/purchase", { country_code = "FR", duration_months = 1, auto_renew = false })
    expect("NO_RESTORABLE_NUMBERS", 404, "POST", "/numbers/restore", { piv_num_ids = { se } })
    sb:fault { match = "/account", status = 500 }
    expect("INTERNAL_ERROR", 500, "GET", "/account")
    expect("SMS_DISABLED", 400, "POST", "/numbers/" .. de .. "/verify", { gv_url = "https://gv.google.com/" })
    for code, status in pairs { PROXY_DEAD = 502, QUEUE_FULL = 503, SERVER_UNAVAILABLE = 503 } do
      sb:force { what = "verify", outcome = code }
      expect(code, status, "POST", "/numbers/" .. se .. "/verify", { gv_url = "https://gv.google.com/" })
    end
    expect("NOT_FOUND", 404, "POST", "/proxy/purchase", { server_id = "nope", quantity = 1, months = 1 })
    expect("DOMAIN_NOT_AVAILABLE", 400, "POST", "/domains", { domain = "google.com", period = 1, cloudflare = true, auto_renew = false })
    expect("INVALID_TIER", 400, "POST", "/whites", { name = "ab", tier_key = "gold", niche = "n", country = "DE", language = "de" })
    expect("NOT_READY", 409, "GET", "/whites/" .. w.data.white.id .. "/download")
    sb:update_key { rate_limit = { limit = 1, window = 30 } }
    api("GET", "/account")
    local h = expect("RATE_LIMITED", 429, "GET", "/account")
    assert.matches("^%d+$", h["retry-after"])
    sb:update_key { rate_limit = json.null }
    sb:advance(MONTH)
    expect("NUMBER_EXPIRED", 403, "POST", "/numbers/" .. se .. "/sms/send", { to_number = "+14155551234", message_body = "x" })
    api("POST", "/numbers/restore", { piv_num_ids = { se } })
    expect("NUMBER_NOT_ACTIVE", 400, "POST", "/numbers/" .. se .. "/sms/send", { to_number = "+14155551234", message_body = "x" })
    for code in pairs(reply.STATUS) do
      assert(seen[code], "documented code never produced: " .. code)
    end
  end)

  it("sends [] for empty lists and integers where the API has integers", function()
    local _, _, _, raw = api("GET", "/numbers")
    assert.matches('"numbers":%[%]', raw)
    _, _, _, raw = api("GET", "/whites")
    assert.matches('"whites":%[%]', raw)
    local _, b = api("POST", "/whites", { name = "ab", tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" })
    assert.equal("integer", math.type(b.data.white.status))
    _, raw = nil, select(4, api("GET", "/whites"))
    assert.matches('"status":0', raw)
    _, b = api("GET", "/numbers", nil, "limit=999")
    assert.equal(200, b.data.pagination.limit)
    _, b = api("GET", "/proxy/orders", nil, "limit=999&offset=3")
    assert.same({ total = 0, limit = 500, offset = 3 }, b.data.pagination)
  end)

  it("keeps money to the cent across charge and refund cycles", function()
    local _, n = api("POST", "/numbers/purchase", { country_code = "CA", duration_months = 3, auto_renew = false })
    local id = n.numbers[1].piv_num_id
    for _ = 1, 7 do api("POST", "/numbers/" .. id .. "/sms/send", { to_number = "+14155551234", message_body = "x" }) end
    sb:force { what = "verify", outcome = "VERIFY_TIMEOUT", count = 3 }
    for _ = 1, 3 do api("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/" }) end
    sb:force { what = "domain", outcome = "taken" }
    api("POST", "/domains", { domain = "cents.xyz", period = 3, cloudflare = true, auto_renew = false })
    sb:advance(120)
    local _, a = api("GET", "/account")
    -- 1000 - 3 x 2.50 - 7 x 0.15 (verify and domain refunded)
    assert.equal(991.45, a.data.balance)
    local l = sb:ledger()
    local sum = 0
    for _, row in ipairs(l.rows) do sum = sum + math.floor(row.amount * 100 + 0.5) end
    assert.equal(99145, sum)
  end)

  it("runs lifecycles through the control clock", function()
    local _, p = api("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 1, months = 1 })
    local s = pivday.http.request { method = "POST", url = sb.url .. "/_sandbox/clock/advance",
      body = json.encode { seconds = MONTH - 3 * DAY } }
    assert.equal(200, s.status)
    local ev = sb:events { event_type = "proxy.expires_soon" }
    assert.equal(1, #ev)
    assert.equal(p.data.order.id, ev[1].data.order_id)
    sb:advance(3 * DAY)
    local _, o = api("GET", "/proxy/orders/" .. p.data.order.id)
    assert.equal("expired", o.data.order.status)
  end)

  it("drops the connection before or after processing", function()
    sb:fault { match = "/numbers/purchase", drop = "before" }
    local body = json.encode { country_code = "SE", duration_months = 1, auto_renew = false }
    local req = { method = "POST", url = sb.base_url .. "/numbers/purchase", body = body, no_resend = true,
      headers = { authorization = "Bearer " .. sb.api_key } }
    local res, e = pivday.http.request(req)
    assert.is_nil(res)
    assert.equal("transport", e.kind)
    local _, a = api("GET", "/account")
    assert.equal(1000, a.data.balance)
    sb:fault { match = "/numbers/purchase", drop = "after" }
    res = pivday.http.request(req)
    assert.is_nil(res)
    _, a = api("GET", "/account")
    assert.equal(996, a.data.balance)
  end)

  it("refuses the control API to nobody on loopback and serves it as JSON", function()
    local res = assert(pivday.http.request { url = sb.url .. "/_sandbox/clock" })
    assert.equal(200, res.status)
    assert.is_true(json.decode(res.body).success)
    res = assert(pivday.http.request { url = sb.url .. "/_sandbox/nope" })
    assert.equal(404, res.status)
  end)
end)

describe("sandbox webhooks over HTTP", function()
  local sb, api, hook, got
  after_each(function()
    if sb then sb:close() end
    if hook then hook:close() end
    sb, hook = nil, nil
  end)

  it("delivers async events with the documented payload fields", function()
    hook, got = receiver()
    sb = assert(sandbox.new { speed = 1000, webhook_url = hook.url .. "/hook" })
    api = client(sb)
    local _, n = api("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false })
    local id = n.numbers[1].piv_num_id
    api("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/x" })
    api("POST", "/whites", { name = "Hooked", tier_key = "v2_tier2", niche = "n", country = "DE", language = "de" })
    api("POST", "/domains", { domain = "hooked.com", period = 1, cloudflare = false, auto_renew = false,
      nameservers = { "ns1.a.com", "ns2.a.com" } })
    sb:inbound_sms { piv_num_id = id, text = "Your code is 482913" }
    local want = {
      ["verify.completed"] = { "task_id", "piv_num_id", "status", "captured_phone", "captured_message", "sms_message_id", "sms_status" },
      ["white.completed"] = { "job_id", "name", "tier_key", "country" },
      ["domain.registered"] = { "domain_id", "domain_name", "registered_at", "expires_at", "cloudflare_enabled" },
      ["sms.received"] = { "piv_num_id", "text", "code", "country", "received_at" },
      ["sms.status_updated"] = { "piv_num_id", "message_id", "old_status", "new_status", "error_code", "error_message" },
    }
    local function have_all()
      local types = {}
      for _, g in ipairs(got) do types[g.body.event_type] = g.body end
      for ev in pairs(want) do if not types[ev] then return false end end
      return types
    end
    local types = wait_for(have_all, 10)
    assert(types, "not every event arrived")
    for ev, fields in pairs(want) do
      for _, f in ipairs(fields) do
        assert(types[ev].data[f] ~= nil, ev .. " lacks " .. f)
      end
    end
    assert.equal("482913", types["sms.received"].data.code)
    assert.equal("integer", math.type(types["verify.completed"].data.task_id))
    local r = got[1].req
    assert.equal("POST", r.method)
    assert.equal("/hook", r.path)
    assert.equal("piv.day-webhook/1.0", r.headers["user-agent"])
    assert.matches("application/json", r.headers["content-type"])
  end)

  it("retries after 1/2/4 s scaled by speed, gives up, and resends on request", function()
    hook, got = receiver { 500, 500, 500, 500 }
    sb = assert(sandbox.new { speed = 10, webhook_url = hook.url })
    sb:emit("white.failed", { job_id = "j", name = "n", error = "e" })
    assert(wait_for(function() return sb:deliveries()[1].status == "failed" end, 5))
    assert.equal(4, #got)
    local gaps = { got[2].at - got[1].at, got[3].at - got[2].at, got[4].at - got[3].at }
    for i, want in ipairs { 0.1, 0.2, 0.4 } do
      assert(gaps[i] >= want * 0.9 and gaps[i] < want + t(0.25),
        ("retry %d after %.3f s, want about %.1f s"):format(i, gaps[i], want))
    end
    local d = sb:deliveries()[1]
    assert.equal(4, #d.attempts)
    assert.equal(500, d.attempts[4].status)
    sb:resend(d.id)
    assert(wait_for(function() return sb:deliveries()[1].status == "delivered" end, 5))
    assert.equal(5, #got)
  end)

  it("counts a slow answer past the deadline as a failure", function()
    hook, got = receiver(nil, 1)
    sb = assert(sandbox.new { speed = 100, webhook_url = hook.url, webhook_timeout = 0.2,
      webhook_backoff = { 0.01 } })
    sb:emit("sms.received", { piv_num_id = "x" })
    assert(wait_for(function() return sb:deliveries()[1].status == "failed" end, 5))
    local d = sb:deliveries()[1]
    assert.equal(2, #d.attempts)
    assert.equal("TIMEOUT", d.attempts[1].error)
  end)
end)

describe("sandbox state across a restart", function()
  local path = os.tmpname()
  after_each(function() os.remove(path) end)

  it("keeps key, balance, numbers and pending jobs", function()
    os.remove(path)
    local sb = assert(sandbox.new { state = path, speed = 0 })
    local api = client(sb)
    local _, n = api("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false })
    api("POST", "/whites", { name = "Later", tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" })
    local key = sb.api_key
    sb:close()
    local sb2 = assert(sandbox.new { state = path, speed = 0 })
    api = client(sb2)
    assert.equal(key, sb2.api_key)
    local _, a = api("GET", "/account")
    assert.equal(996 - 3, a.data.balance)
    local s = api("GET", "/numbers/" .. n.numbers[1].piv_num_id)
    assert.equal(200, s)
    sb2:advance(60)
    local _, w = api("GET", "/whites", nil, "status=done")
    assert.equal(1, w.data.pagination.total)
    sb2:close()
  end)

  it("refuses a corrupt state file with a clear message", function()
    local f = assert(io.open(path, "w"))
    f:write("garbage")
    f:close()
    local sb, e = sandbox.new { state = path }
    assert.is_nil(sb)
    assert.matches("corrupt", e)
    f = assert(io.open(path))
    assert.equal("garbage", f:read("a"))
    f:close()
  end)
end)

describe("sandbox downloads over HTTP", function()
  it("serves the white archive at the signed URL while it is valid", function()
    local sb = assert(sandbox.new { speed = 0, rate_limit = { limit = 100, window = 60 } })
    local api = client(sb)
    local _, w = api("POST", "/whites", { name = "Zip", tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" })
    sb:advance(60)
    local _, d = api("GET", "/whites/" .. w.data.white.id .. "/download", nil, "format=html")
    assert.equal("html", d.data.format)
    local res = assert(pivday.http.request { url = d.data.url })
    assert.equal(200, res.status)
    assert.equal("application/zip", res.headers["content-type"])
    assert.equal("PK\3\4", res.body:sub(1, 4))
    assert.truthy(res.body:find("index.html", 1, true))
    sb:advance(policy.lifecycle.download_ttl + 1)
    res = assert(pivday.http.request { url = d.data.url })
    assert.equal(403, res.status)
    assert.same({ limit = 100, window = 60 }, sb:update_key {}.rate_limit)
    sb:close()
  end)
end)

describe("pivday sandbox (main)", function()
  local path = os.tmpname()
  after_each(function() os.remove(path) end)

  it("prints base_url and api_key, serves, and saves the state on SIGTERM", function()
    os.remove(path)
    local out, main = os.tmpname(), os.tmpname()
    local f = assert(io.open(main, "w"))
    f:write('os.exit(require("pivday.sandbox").main({...}))\n')
    f:close()
    local script = ([[
      export LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;'
      lua5.4 %s --port 0 --state %s --speed 5 >%s 2>/dev/null &
      pid=$!
      for i in $(seq 1 100); do grep -q api_key %s && break; sleep 0.05; done
      base=$(awk '/^base_url:/{print $2}' %s); key=$(awk '/^api_key:/{print $2}' %s)
      curl -s -o /dev/null -w 'account=%%{http_code}\n' -H "Authorization: Bearer $key" "$base/account"
      kill -TERM $pid; wait $pid; echo "rc=$?"
      cat %s
    ]]):format(main, path, out, out, out, out, out)
    local text = helper.sh((script:gsub("%s+$", "")))
    os.remove(out)
    os.remove(main)
    assert.matches("account=200", text)
    assert.matches("rc=0", text)
    assert.matches("base_url: http://127%.0%.0%.1:%d+/api/v1", text)
    local key = text:match("api_key: (%S+)")
    f = assert(io.open(path))
    local saved = json.decode(f:read("a"))
    f:close()
    assert.equal(key, saved.default_key)
  end)

  it("refuses bad arguments with status 2", function()
    local sink = { text = "" }
    function sink:write(...) self.text = self.text .. table.concat({ ... }) end
    assert.equal(2, sandbox.main({ "--port", "x" }, sink, sink))
    assert.equal(2, sandbox.main({ "--speed=-1" }, sink, sink))
    assert.equal(2, sandbox.main({ "--rate-limit", "fast" }, sink, sink))
    assert.equal(2, sandbox.main({ "extra" }, sink, sink))
    assert.equal(0, sandbox.main({ "--help" }, sink, sink))
    assert.matches("%-%-port needs a number", sink.text)
    assert.matches("usage: pivday sandbox", sink.text)
  end)
end)
