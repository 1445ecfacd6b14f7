-- The sandbox service without the network: envelope, auth, every endpoint,
-- every documented error code, validation, pagination, money, lifecycles,
-- async jobs, control operations and the state file.
local H = require "sandbox.harness"
local json = require "pivday.json"
local policy = require "pivday.sandbox.policy"
local state_mod = require "pivday.sandbox.state"

local DAY, MONTH = policy.DAY, policy.MONTH
local DE_SERVER = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
local FR_SERVER = "d4e5f6a7-b8c9-0123-def0-234567890123"

local function ledger_sum(t)
  local sum = 0
  for _, row in ipairs(t.app.st:ledger(t.uid)) do sum = sum + row.amount end
  return sum
end

describe("sandbox envelope and routing", function()
  local t
  before_each(function() t = H.new() end)

  it("answers unknown routes with 404 NOT_FOUND in the envelope", function()
    local s, b = t.call("GET", "/nothing/here")
    H.err(s, b, 404, "NOT_FOUND", "No route for GET /nothing/here")
    s, b = t.request("GET", "/elsewhere")
    H.err(s, b, 404, "NOT_FOUND")
  end)

  it("names the allowed methods when only the method is wrong", function()
    local s, b, h = t.call("DELETE", "/numbers")
    H.err(s, b, 404, "NOT_FOUND", "allowed: GET")
    assert.equal("GET", h.allow)
  end)

  it("refuses malformed JSON and non-object bodies with 400", function()
    local s, b = t.call("POST", "/numbers/purchase", "{nope")
    H.err(s, b, 400, "VALIDATION_ERROR", "body: malformed JSON")
    s, b = t.call("POST", "/numbers/purchase", "[1,2]")
    H.err(s, b, 400, "VALIDATION_ERROR", "body: must be a JSON object")
  end)

  it("routes literal paths before parameters", function()
    local s, b = t.call("GET", "/numbers/countries")
    assert.equal(200, s)
    assert.is_true(b.data[1] ~= nil)
    s, b = t.call("GET", "/domains/search", nil, "q=free-name.com")
    assert.equal(200, s)
    assert.equal("free-name.com", b.data.domain)
  end)
end)

describe("sandbox auth", function()
  local t
  before_each(function() t = H.new() end)

  it("401 for a missing, malformed, unknown or revoked key", function()
    H.err(select(1, t.call("GET", "/account", nil, nil, { authorization = false })),
      select(2, t.call("GET", "/account", nil, nil, { authorization = false })), 401, "UNAUTHORIZED", "Missing")
    local s, b = t.call("GET", "/account", nil, nil, { authorization = "Token abc" })
    H.err(s, b, 401, "UNAUTHORIZED")
    s, b = t.call("GET", "/account", nil, nil, { authorization = "Bearer nope" })
    H.err(s, b, 401, "UNAUTHORIZED", "Invalid API key")
    t.ctl("update_key", { api_key = t.key, revoked = true })
    s, b = t.call("GET", "/account")
    H.err(s, b, 401, "UNAUTHORIZED", "revoked")
  end)

  it("403 INSUFFICIENT_PERMISSIONS for a key without the scope", function()
    local k = t.ctl("create_key", { scopes = { "numbers:read" } })
    local s, b = t.call("GET", "/numbers", nil, nil, { authorization = "Bearer " .. k.api_key })
    assert.equal(200, s)
    s, b = t.call("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false },
      nil, { authorization = "Bearer " .. k.api_key })
    H.err(s, b, 403, "INSUFFICIENT_PERMISSIONS", "numbers:purchase")
  end)

  it("403 PERMISSION_DENIED when the account has the feature disabled", function()
    t.ctl("update_account", { disabled = { "whites" } })
    local s, b = t.call("GET", "/whites/tiers")
    H.err(s, b, 403, "PERMISSION_DENIED", "whites")
    assert.equal(200, (t.call("GET", "/numbers")))
  end)

  it("rate limits per key with 429, Retry-After and the documented message", function()
    t.ctl("update_key", { rate_limit = { limit = 2, window = 12 } })
    assert.equal(200, (t.call("GET", "/account")))
    assert.equal(200, (t.call("GET", "/account")))
    local s, b, h = t.call("GET", "/account")
    H.err(s, b, 429, "RATE_LIMITED", "Rate limit exceeded, retry in 12s")
    assert.equal("12", h["retry-after"])
    t.real = 5
    s, b, h = t.call("GET", "/account")
    assert.equal("7", h["retry-after"])
    local other = t.ctl("create_key", {})
    assert.equal(200, (t.call("GET", "/account", nil, nil, { authorization = "Bearer " .. other.api_key })))
    t.real = 12
    assert.equal(200, (t.call("GET", "/account")))
  end)
end)

describe("sandbox account", function()
  it("shows the default account: 1000.00, masked e-mail, null team", function()
    local t = H.new()
    local s, b = t.call("GET", "/account")
    assert.equal(200, s)
    assert.is_true(b.success)
    assert.equal(1000, b.data.balance)
    assert.equal("s***@example.com", b.data.email)
    assert.equal(json.null, b.data.team_id)
    assert.is_false(b.data.is_team_member)
    assert.matches("^usr%-", b.data.user_id)
  end)
end)

describe("sandbox numbers", function()
  local t
  before_each(function() t = H.new() end)

  it("lists countries as a bare array with prices and capabilities", function()
    local _, b = t.call("GET", "/numbers/countries")
    local se, de
    for _, c in ipairs(b.data) do
      if c.country_code == "SE" then se = c elseif c.country_code == "DE" then de = c end
    end
    assert.same({ country_code = "SE", price_per_month = 4, base_price = 5, can_send_sms = true,
      can_receive_sms = true, sms_send_price = 0.25 }, se)
    assert.equal(json.null, de.sms_send_price)
    assert.is_false(de.can_send_sms)
  end)

  it("purchases: top-level cost and a numbers[] array, charged price x months", function()
    local s, b = t.call("POST", "/numbers/purchase",
      { country_code = "SE", duration_months = 3, auto_renew = true, custom_name = "Office" })
    assert.equal(200, s)
    assert.is_nil(b.data)
    assert.equal(12, b.cost)
    assert.equal(1, #b.numbers)
    local n = b.numbers[1]
    assert.equal("SE", n.country_code)
    assert.matches("^%+46", n.phone_number)
    assert.equal("Office", n.custom_name)
    assert.is_true(n.auto_renew)
    assert.is_nil(n.status)
    assert.equal(100000 - 1200, t.balance())
  end)

  it("validates purchase bodies naming field and rule", function()
    local cases = {
      { {}, "country_code: required" },
      { { country_code = 5, duration_months = 1, auto_renew = true }, "country_code: must be a string" },
      { { country_code = "SWE", duration_months = 1, auto_renew = true }, "country_code: must be a two-letter" },
      { { country_code = "SE", auto_renew = true }, "duration_months: required" },
      { { country_code = "SE", duration_months = 0, auto_renew = true }, "duration_months: must be between 1 and 12 (got 0)" },
      { { country_code = "SE", duration_months = 1.5, auto_renew = true }, "duration_months: must be an integer" },
      { { country_code = "SE", duration_months = 1 }, "auto_renew: required" },
      { { country_code = "SE", duration_months = 1, auto_renew = "yes" }, "auto_renew: must be a boolean" },
      { { country_code = "SE", duration_months = 1, auto_renew = true, custom_name = ("x"):rep(65) },
        "custom_name: must be at most 64 characters" },
    }
    for _, c in ipairs(cases) do
      local s, b = t.call("POST", "/numbers/purchase", c[1])
      H.err(s, b, 400, "VALIDATION_ERROR", c[2])
    end
    assert.equal(100000, t.balance())
  end)

  it("COUNTRY_NOT_AVAILABLE, NO_NUMBERS_AVAILABLE and INSUFFICIENT_BALANCE", function()
    local s, b = t.call("POST", "/numbers/purchase", { country_code = "ZZ", duration_months = 1, auto_renew = false })
    H.err(s, b, 400, "COUNTRY_NOT_AVAILABLE")
    s, b = t.call("POST", "/numbers/purchase", { country_code = "FR", duration_months = 1, auto_renew = false })
    H.err(s, b, 400, "NO_NUMBERS_AVAILABLE")
    t.ctl("force", { what = "purchase", outcome = "NO_NUMBERS_AVAILABLE" })
    s, b = t.call("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false })
    H.err(s, b, 400, "NO_NUMBERS_AVAILABLE")
    t.ctl("update_account", { balance = 1.20 })
    s, b = t.call("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false })
    H.err(s, b, 402, "INSUFFICIENT_BALANCE", "Not enough balance: required $4.00, available $1.20")
    assert.equal(120, t.balance())
  end)

  it("gets one number unwrapped, and 404 NUMBER_NOT_FOUND for others' numbers", function()
    local id = t.buy("GB")
    local s, b = t.call("GET", "/numbers/" .. id)
    assert.equal(200, s)
    assert.equal(id, b.data.piv_num_id)
    assert.equal("active", b.data.status)
    assert.equal(b.data.expires_at, b.data.next_renewal_date)
    local _, _, _, raw = t.call("GET", "/numbers/" .. id)
    assert.matches('"tags":%[%]', raw)
    local other = t.ctl("create_account", { balance = 10 })
    s, b = t.call("GET", "/numbers/" .. id, nil, nil, { authorization = "Bearer " .. other.api_key })
    H.err(s, b, 404, "NUMBER_NOT_FOUND")
    s, b = t.call("GET", "/numbers/nope")
    H.err(s, b, 404, "NUMBER_NOT_FOUND")
  end)

  it("paginates the list: default 50, cap 200, [] past the end, filters", function()
    for i = 1, 55 do t.buy(i % 2 == 0 and "GB" or "SE", 1, { custom_name = "n" .. i }) end
    local _, b = t.call("GET", "/numbers")
    assert.equal(50, #b.data.numbers)
    assert.same({ total = 55, limit = 50, offset = 0 }, b.data.pagination)
    _, b = t.call("GET", "/numbers", nil, "limit=1000&offset=50")
    assert.equal(5, #b.data.numbers)
    assert.same({ total = 55, limit = 200, offset = 50 }, b.data.pagination)
    local _, _, _, raw = t.call("GET", "/numbers", nil, "offset=100")
    assert.matches('"numbers":%[%]', raw)
    _, b = t.call("GET", "/numbers", nil, "country=GB")
    assert.equal(27, b.data.pagination.total)
    _, b = t.call("GET", "/numbers", nil, "search=n5")
    assert.equal(7, b.data.pagination.total)   -- n5 and n50..n55
  end)

  it("rejects bad pagination and filter values", function()
    H.err(select(1, t.call("GET", "/numbers", nil, "limit=0")), select(2, t.call("GET", "/numbers", nil, "limit=0")),
      400, "VALIDATION_ERROR", "limit: must be at least 1")
    local s, b = t.call("GET", "/numbers", nil, "offset=-1")
    H.err(s, b, 400, "VALIDATION_ERROR", "offset")
    s, b = t.call("GET", "/numbers", nil, "limit=ten")
    H.err(s, b, 400, "VALIDATION_ERROR", "limit: must be an integer")
    s, b = t.call("GET", "/numbers", nil, "status=gone")
    H.err(s, b, 400, "VALIDATION_ERROR", "status: must be one of active, expired, pending_restore")
  end)

  it("renews an active number, charging at call time", function()
    local id = t.buy("SE")
    local _, before = t.call("GET", "/numbers/" .. id)
    local s, b = t.call("POST", "/numbers/" .. id .. "/renew", { duration_months = 2 })
    assert.equal(200, s)
    assert.equal(8, b.data.cost)
    assert.equal(before.data.expires_at, b.data.old_expires_at)
    assert.equal(100000 - 400 - 800, t.balance())
    s, b = t.call("POST", "/numbers/" .. id .. "/renew", {})
    H.err(s, b, 400, "VALIDATION_ERROR", "duration_months: required")
    s, b = t.call("POST", "/numbers/nope/renew", { duration_months = 1 })
    H.err(s, b, 404, "NUMBER_NOT_FOUND")
    t.ctl("set_country", { country_code = "SE", available = false })
    s, b = t.call("POST", "/numbers/" .. id .. "/renew", { duration_months = 1 })
    H.err(s, b, 400, "COUNTRY_NOT_AVAILABLE")
  end)

  it("updates the custom name and the auto-renew flag", function()
    local id = t.buy("SE")
    local s, b = t.call("PATCH", "/numbers/" .. id, { custom_name = "Support line" })
    assert.equal(200, s)
    assert.equal("Support line", b.data.custom_name)
    assert.is_nil(b.data.created_at)
    s, b = t.call("PATCH", "/numbers/" .. id, { custom_name = 7 })
    H.err(s, b, 400, "VALIDATION_ERROR", "custom_name: must be a string")
    s, b = t.call("PATCH", "/numbers/" .. id .. "/auto-renewal", { auto_renew = true })
    assert.same({ piv_num_id = id, phone_number = b.data.phone_number, auto_renew = true }, b.data)
    s, b = t.call("POST", "/numbers/" .. id .. "/auto-renewal", { auto_renew = true })
    H.err(s, b, 404, "NOT_FOUND")
  end)

  it("sends SMS: queued, charged, then sms.status_updated queued->sent->delivered", function()
    local id = t.buy("SE")
    local s, b = t.call("POST", "/numbers/" .. id .. "/sms/send", { to_number = "+14155551234", message_body = "Hello" })
    assert.equal(200, s)
    assert.equal("queued", b.data.status)
    assert.equal("string", type(b.data.message_id))
    assert.equal(100000 - 400 - 25, t.balance())
    t.app:advance(60)
    local ev = t.events("sms.status_updated")
    assert.equal(2, #ev)
    assert.same({ piv_num_id = id, message_id = b.data.message_id, old_status = "queued", new_status = "sent",
      error_code = json.null, error_message = json.null }, ev[1].data)
    assert.equal("delivered", ev[2].data.new_status)
    local _, h = t.call("GET", "/numbers/" .. id .. "/sms")
    assert.equal("delivered", h.data.messages[1].status)
    assert.equal("outbound", h.data.messages[1].direction)
  end)

  it("reports a forced carrier failure with error_code and error_message", function()
    local id = t.buy("SE")
    t.ctl("force", { what = "sms", outcome = "failed" })
    t.call("POST", "/numbers/" .. id .. "/sms/send", { to_number = "+14155551234", message_body = "Hello" })
    t.app:advance(60)
    local ev = t.events("sms.status_updated")[2].data
    assert.equal("failed", ev.new_status)
    assert.equal(policy.sms_failure.code, ev.error_code)
  end)

  it("refuses SMS: E.164, empty, too long, control chars, SMS_DISABLED, expired, not active", function()
    local id = t.buy("SE")
    local path = "/numbers/" .. id .. "/sms/send"
    local s, b = t.call("POST", path, { to_number = "0712345", message_body = "x" })
    H.err(s, b, 400, "VALIDATION_ERROR", "to_number: must be an E.164 number")
    s, b = t.call("POST", path, { to_number = "+14155551234", message_body = "" })
    H.err(s, b, 400, "VALIDATION_ERROR", "message_body: must be at least 1 characters")
    s, b = t.call("POST", path, { to_number = "+14155551234", message_body = ("a"):rep(1601) })
    H.err(s, b, 400, "INVALID_MESSAGE_FORMAT", "1601 GSM-7 characters, the limit is 1600")
    assert.equal(200, (t.call("POST", path, { to_number = "+14155551234", message_body = ("a"):rep(1600) })))
    s, b = t.call("POST", path, { to_number = "+14155551234", message_body = ("ж"):rep(671) })
    H.err(s, b, 400, "INVALID_MESSAGE_FORMAT", "UCS-2")
    s, b = t.call("POST", path, { to_number = "+14155551234", message_body = "bell\7" })
    H.err(s, b, 400, "INVALID_MESSAGE_FORMAT", "control character")
    local de = t.buy("DE")
    s, b = t.call("POST", "/numbers/" .. de .. "/sms/send", { to_number = "+14155551234", message_body = "x" })
    H.err(s, b, 400, "SMS_DISABLED")
    t.app:advance(MONTH + 1)
    s, b = t.call("POST", path, { to_number = "+14155551234", message_body = "x" })
    H.err(s, b, 403, "NUMBER_EXPIRED")
    t.call("POST", "/numbers/restore", { piv_num_ids = { id } })
    s, b = t.call("POST", path, { to_number = "+14155551234", message_body = "x" })
    H.err(s, b, 400, "NUMBER_NOT_ACTIVE", "pending_restore")
  end)

  it("lists SMS history newest first with 50/200 pagination", function()
    local id = t.buy("SE")
    for i = 1, 3 do
      t.ctl("inbound_sms", { piv_num_id = id, text = "code " .. (1000 + i) })
      t.app:advance(1)
    end
    local _, b = t.call("GET", "/numbers/" .. id .. "/sms", nil, "limit=2")
    assert.equal(2, #b.data.messages)
    assert.equal("code 1003", b.data.messages[1].message_body)
    assert.equal("inbound", b.data.messages[1].direction)
    assert.equal("received", b.data.messages[1].status)
    assert.same({ total = 3, limit = 2, offset = 0 }, b.data.pagination)
    local ev = t.events("sms.received")
    assert.equal(3, #ev)
    assert.same({ "code", "country", "piv_num_id", "received_at", "text" }, (function()
      local k = {}
      for name in pairs(ev[1].data) do k[#k + 1] = name end
      table.sort(k)
      return k
    end)())
    assert.equal("1001", ev[1].data.code)
    assert.equal("SE", ev[1].data.country)
    t.ctl("inbound_sms", { piv_num_id = id, text = "no digits here" })
    assert.equal(json.null, t.events("sms.received")[4].data.code)
    local s, e = t.call("GET", "/numbers/nope/sms")
    H.err(s, e, 404, "NUMBER_NOT_FOUND")
  end)
end)

describe("sandbox verify", function()
  local t, id
  before_each(function()
    t = H.new()
    id = t.buy("SE")
  end)
  local fee = policy.prices.verify_fee_cents

  it("answers a top-level message, charges the fee, then verify.completed", function()
    local s, b = t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/abc" })
    assert.equal(200, s)
    assert.same({ success = true, message = "Verification initiated" }, b)
    assert.equal(100000 - 400 - fee, t.balance())
    t.app:advance(policy.delays.verify)
    local ev = t.events("verify.completed")[1].data
    assert.equal("integer", math.type(ev.task_id))
    assert.equal("integer", math.type(ev.sms_message_id))
    assert.equal(id, ev.piv_num_id)
    assert.equal("sms_sent", ev.status)
    assert.equal("queued", ev.sms_status)
    assert.equal(policy.verify.captured_phone, ev.captured_phone)
    assert.matches("Google verification code is %d+", ev.captured_message)
  end)

  it("verify.failed with error_code and a refund", function()
    t.ctl("force", { what = "verify", outcome = "VERIFY_TIMEOUT" })
    t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/abc" })
    t.app:advance(60)
    local ev = t.events("verify.failed")[1].data
    assert.same({ task_id = ev.task_id, piv_num_id = id, status = "failed", error_code = "VERIFY_TIMEOUT",
      error_message = "Verification timed out" }, ev)
    t.ctl("force", { what = "verify", outcome = "GOOGLE_SAYS_NO" })
    t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/abc" })
    t.app:advance(60)
    assert.equal("GOOGLE_SAYS_NO", t.events("verify.failed")[2].data.error_code)
    assert.equal(100000 - 400, t.balance())
    t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://evil.example/x" })
    t.app:advance(60)
    assert.equal("VERIFY_INVALID_URL", t.events("verify.failed")[3].data.error_code)
    assert.equal(100000 - 400, t.balance())
  end)

  it("PROXY_DEAD 502, QUEUE_FULL 503, SERVER_UNAVAILABLE 503, refunded at once", function()
    for code, status in pairs { PROXY_DEAD = 502, QUEUE_FULL = 503, SERVER_UNAVAILABLE = 503 } do
      t.ctl("force", { what = "verify", outcome = code })
      local s, b = t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/abc" })
      H.err(s, b, status, code, "refunded")
      assert.equal(100000 - 400, t.balance())
    end
    assert.equal(0, ledger_sum(t) - t.balance())
  end)

  it("NUMBER_NOT_ACTIVE, SMS_DISABLED, INSUFFICIENT_BALANCE, NUMBER_NOT_FOUND, gv_url required", function()
    local s, b = t.call("POST", "/numbers/" .. id .. "/verify", {})
    H.err(s, b, 400, "VALIDATION_ERROR", "gv_url: required")
    s, b = t.call("POST", "/numbers/nope/verify", { gv_url = "https://gv.google.com/" })
    H.err(s, b, 404, "NUMBER_NOT_FOUND")
    local de = t.buy("DE")
    s, b = t.call("POST", "/numbers/" .. de .. "/verify", { gv_url = "https://gv.google.com/" })
    H.err(s, b, 400, "SMS_DISABLED")
    t.ctl("update_account", { balance = 0.49 })
    s, b = t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/" })
    H.err(s, b, 402, "INSUFFICIENT_BALANCE", "required $0.50, available $0.49")
    t.app:advance(MONTH)
    s, b = t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/" })
    H.err(s, b, 400, "NUMBER_NOT_ACTIVE")
  end)
end)

describe("sandbox number lifecycle and restore", function()
  local t
  before_each(function() t = H.new() end)

  it("expires, restores within 7 days at price x 150 %, number.restore_completed", function()
    local a = t.buy("SE")
    local b_id = t.buy("GB")
    t.app:advance(MONTH)
    local _, n = t.call("GET", "/numbers/" .. a)
    assert.equal("expired", n.data.status)
    local before = t.balance()
    local s, r = t.call("POST", "/numbers/restore", { piv_num_ids = { a, b_id, "unknown-id" } })
    assert.equal(200, s)
    assert.is_nil(r.data)
    assert.equal(2, r.queued)
    assert.equal(1, r.skipped)
    assert.equal(6 + 4.5, r.total_charged)
    assert.same({ piv_num_id = a, phone_number = n.data.phone_number, status = "pending" }, r.numbers[1])
    assert.equal(before - 1050, t.balance())
    local _, p = t.call("GET", "/numbers/" .. a)
    assert.equal("pending_restore", p.data.status)
    t.app:advance(policy.delays.restore)
    local ev = t.events("number.restore_completed")[1].data
    assert.equal(2, ev.total_restored)
    assert.equal(0, ev.total_failed)
    assert.equal(0, ev.total_refunded)
    assert.equal("SE", ev.restored[1].country)
    assert.matches('"failed":%[%]', json.encode(ev))
    _, p = t.call("GET", "/numbers/" .. a)
    assert.equal("active", p.data.status)
  end)

  it("refunds the numbers that fail to restore", function()
    local a, b_id = t.buy("SE"), t.buy("GB")
    t.app:advance(MONTH)
    t.ctl("force", { what = "restore", outcome = { b_id } })
    local before = t.balance()
    t.call("POST", "/numbers/restore", { piv_num_ids = { a, b_id } })
    t.app:advance(60)
    local ev = t.events("number.restore_completed")[1].data
    assert.equal(1, ev.total_restored)
    assert.equal(1, ev.total_failed)
    assert.equal(4.5, ev.failed[1].refunded)
    assert.equal(4.5, ev.total_refunded)
    assert.equal(before - 600, t.balance())
    local _, n = t.call("GET", "/numbers/" .. b_id)
    assert.equal("expired", n.data.status)
  end)

  it("NO_RESTORABLE_NUMBERS after the 7-day window, for active ones, and INSUFFICIENT_BALANCE", function()
    local a = t.buy("SE")
    local s, b = t.call("POST", "/numbers/restore", { piv_num_ids = { a } })
    H.err(s, b, 404, "NO_RESTORABLE_NUMBERS")
    t.app:advance(MONTH + 2 * DAY)
    t.ctl("update_account", { balance = 5 })
    s, b = t.call("POST", "/numbers/restore", { piv_num_ids = { a } })
    H.err(s, b, 402, "INSUFFICIENT_BALANCE", "required $6.00, available $5.00")
    t.app:advance(5 * DAY)
    s, b = t.call("POST", "/numbers/restore", { piv_num_ids = { a } })
    H.err(s, b, 404, "NO_RESTORABLE_NUMBERS")
    s, b = t.call("POST", "/numbers/restore", { piv_num_ids = {} })
    H.err(s, b, 400, "VALIDATION_ERROR", "piv_num_ids: must have at least 1 items")
    s, b = t.call("POST", "/numbers/restore", { piv_num_ids = { 5 } })
    H.err(s, b, 400, "VALIDATION_ERROR", "piv_num_ids[0]: must be a string")
  end)

  it("auto-renews 24 h before expiry, or lets the number expire when short", function()
    local a = t.buy("SE", 1, { auto_renew = true })
    local _, n0 = t.call("GET", "/numbers/" .. a)
    t.app:advance(MONTH - DAY - 1)
    assert.equal(100000 - 400, t.balance())
    t.app:advance(1)
    assert.equal(100000 - 800, t.balance())
    local _, n1 = t.call("GET", "/numbers/" .. a)
    assert.equal("active", n1.data.status)
    assert.is_true(n1.data.expires_at > n0.data.expires_at)
    t.ctl("update_account", { balance = 1 })
    t.app:advance(MONTH + DAY)    -- the renewal 24 h before fails, then it expires
    local _, n2 = t.call("GET", "/numbers/" .. a)
    assert.equal("expired", n2.data.status)
    assert.equal(100, t.balance())
    assert.equal(0, ledger_sum(t) - t.balance())
  end)
end)

describe("sandbox accounts are isolated", function()
  it("lists and finds only the caller's objects", function()
    local t = H.new()
    t.buy("SE")
    local other = t.ctl("create_account", { balance = 100 })
    local auth = { authorization = "Bearer " .. other.api_key }
    local _, l = t.call("GET", "/numbers", nil, nil, auth)
    assert.equal(0, l.data.pagination.total)
    local _, p = t.call("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 1, months = 1 })
    local s, b = t.call("GET", "/proxy/orders/" .. p.data.order.id, nil, nil, auth)
    H.err(s, b, 404, "NOT_FOUND")
    assert.equal(10000, t.app.st:account(other.user_id).balance)
  end)
end)

describe("sandbox domain expiry", function()
  it("lets a domain expire when the auto-renewal cannot be paid", function()
    local t = H.new()
    local _, b = t.call("POST", "/domains", { domain = "short.com", period = 1, cloudflare = true, auto_renew = true })
    t.app:advance(60)
    t.ctl("update_account", { balance = 1 })
    t.app:advance(policy.YEAR)
    local _, g = t.call("GET", "/domains/" .. b.data.domain.id)
    assert.equal("expired", g.data.domain.status)
    assert.equal(100, t.balance())
    assert.equal(1, #t.events("domain.expires_soon"))
    assert.is_true(t.events("domain.expires_soon")[1].data.auto_renew)
  end)
end)

describe("sandbox proxies", function()
  local t
  before_each(function() t = H.new() end)

  it("lists active servers only, unpaginated", function()
    local _, b = t.call("GET", "/proxy/servers")
    assert.equal(3, #b.data.servers)
    assert.same({ id = DE_SERVER, name = "EU-DE-01", country = "DE", socks5_port = 1080, http_port = 3128,
      price_per_proxy = 0.5 }, b.data.servers[1])
    assert.is_nil(b.data.pagination)
  end)

  it("purchases one order with N items, price x quantity x months", function()
    local s, b = t.call("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 5, months = 2 })
    assert.equal(200, s)
    local o = b.data.order
    assert.equal(5, o.price_total)
    assert.equal(5, #o.items)
    assert.is_nil(o.price_per_proxy)
    assert.equal(100000 - 500, t.balance())
    local _, g = t.call("GET", "/proxy/orders/" .. o.id)
    assert.equal(0.5, g.data.order.price_per_proxy)
    assert.equal(o.items[1].login, g.data.order.items[1].login)
    local _, l = t.call("GET", "/proxy/orders")
    assert.is_nil(l.data.orders[1].items)
    assert.same({ total = 1, limit = 100, offset = 0 }, l.data.pagination)
  end)

  it("validates quantity 1-500 and months 1-12; NOT_FOUND for unknown or inactive servers", function()
    local cases = {
      { { server_id = DE_SERVER, quantity = 0, months = 1 }, "quantity: must be between 1 and 500 (got 0)" },
      { { server_id = DE_SERVER, quantity = 501, months = 1 }, "quantity: must be between 1 and 500" },
      { { server_id = DE_SERVER, quantity = 1, months = 13 }, "months: must be between 1 and 12 (got 13)" },
      { { server_id = DE_SERVER, quantity = 1 }, "months: required" },
      { { quantity = 1, months = 1 }, "server_id: required" },
    }
    for _, c in ipairs(cases) do
      local s, b = t.call("POST", "/proxy/purchase", c[1])
      H.err(s, b, 400, "VALIDATION_ERROR", c[2])
    end
    local s, b = t.call("POST", "/proxy/purchase", { server_id = FR_SERVER, quantity = 1, months = 1 })
    H.err(s, b, 404, "NOT_FOUND", "inactive")
    s, b = t.call("POST", "/proxy/purchase", { server_id = "nope", quantity = 1, months = 1 })
    H.err(s, b, 404, "NOT_FOUND")
    t.ctl("update_account", { balance = 1 })
    s, b = t.call("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 3, months = 1 })
    H.err(s, b, 402, "INSUFFICIENT_BALANCE", "required $1.50, available $1.00")
  end)

  it("renews, expires with proxy.expires_soon 3 days before, restores +1 month", function()
    local _, b = t.call("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 10, months = 1 })
    local id = b.data.order.id
    local s, r = t.call("POST", "/proxy/orders/" .. id .. "/renew", { months = 1 })
    assert.equal(200, s)
    assert.same({ order_id = id, cost = 5, new_expires_at = r.data.new_expires_at }, r.data)
    t.app:advance(2 * MONTH - 3 * DAY - 1)
    assert.equal(0, #t.events("proxy.expires_soon"))
    t.app:advance(1)
    local ev = t.events("proxy.expires_soon")
    assert.equal(1, #ev)
    assert.same({ order_id = id, country = "DE", quantity = 10, expires_at = r.data.new_expires_at }, ev[1].data)
    t.app:advance(3 * DAY)
    local _, g = t.call("GET", "/proxy/orders/" .. id)
    assert.equal("expired", g.data.order.status)
    s, r = t.call("POST", "/proxy/orders/" .. id .. "/renew", { months = 1 })
    H.err(s, r, 400, "VALIDATION_ERROR", "order: is expired")
    local login = g.data.order.items[1].login
    s, r = t.call("POST", "/proxy/orders/" .. id .. "/restore")
    assert.equal(200, s)
    assert.equal(5, r.data.total_cost)
    assert.equal(10, r.data.quantity)
    _, g = t.call("GET", "/proxy/orders/" .. id)
    assert.equal("active", g.data.order.status)
    assert.equal(login, g.data.order.items[1].login)
    s, r = t.call("POST", "/proxy/orders/" .. id .. "/restore")
    H.err(s, r, 400, "VALIDATION_ERROR", "only expired orders")
    local _, f = t.call("GET", "/proxy/orders", nil, "status=active")
    assert.equal(1, f.data.pagination.total)
    s, r = t.call("GET", "/proxy/orders/ord-nope")
    H.err(s, r, 404, "NOT_FOUND")
  end)

  it("exports login:password@host:port lines per format", function()
    local _, b = t.call("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 2, months = 1 })
    local o = b.data.order
    local _, e = t.call("GET", "/proxy/orders/" .. o.id .. "/export")
    assert.equal("socks5", e.data.format)
    assert.equal(2, e.data.count)
    assert.equal(("%s:%s@%s:1080"):format(o.items[1].login, o.items[1].password, o.items[1].host),
      e.data.content:match("^[^\n]+"))
    assert.equal("piv-day-proxy-" .. o.id .. "-socks5.txt", e.data.filename)
    _, e = t.call("GET", "/proxy/orders/" .. o.id .. "/export", nil, "format=both")
    assert.equal(4, e.data.count)
    local s, x = t.call("GET", "/proxy/orders/" .. o.id .. "/export", nil, "format=csv")
    H.err(s, x, 400, "VALIDATION_ERROR", "format: must be one of socks5, http, both")
  end)
end)

describe("sandbox domains", function()
  local t
  before_each(function() t = H.new() end)

  local function register(body)
    local req = { domain = "mysite.com", period = 1, cloudflare = true, auto_renew = false }
    for k, v in pairs(body or {}) do req[k] = v end
    return t.call("POST", "/domains", req)
  end

  it("searches availability with prices in USD", function()
    local _, b = t.call("GET", "/domains/search", nil, "q=MySite.com")
    assert.same({ domain = "mysite.com", available = true, create_price = 12.5, renew_price = 12.5, currency = "USD" }, b.data)
    _, b = t.call("GET", "/domains/search", nil, "q=google.com")
    assert.is_false(b.data.available)
    _, b = t.call("GET", "/domains/search", nil, "q=name.unknowntld")
    assert.is_false(b.data.available)
    assert.equal(json.null, b.data.create_price)
    local s, e = t.call("GET", "/domains/search")
    H.err(s, e, 400, "VALIDATION_ERROR", "q: required")
  end)

  it("registers: queue pending (domain a string) -> completed (domain an object), domain.registered", function()
    local s, b = register { ssl_mode = "full", dns_records = { { type = "A", name = "@", content = "1.2.3.4", proxied = true } } }
    assert.equal(200, s)
    assert.equal("purchasing", b.data.domain.status)
    assert.equal("full", b.data.domain.ssl_mode)
    assert.equal(100000 - 1250, t.balance())
    local qid, did = b.data.queue_id, b.data.domain.id
    local _, q = t.call("GET", "/domains/queue/" .. qid)
    assert.same({ queue_id = qid, domain = "mysite.com", status = "pending" }, q.data)
    local _, l = t.call("GET", "/domains", nil, "status=pending")
    assert.equal(1, l.data.pagination.total)
    t.app:advance(policy.delays.domain_register)
    _, q = t.call("GET", "/domains/queue/" .. qid)
    assert.equal("completed", q.data.status)
    assert.equal(did, q.data.domain.id)
    assert.equal("active", q.data.domain.status)
    assert.equal("1.2.3.4", q.data.domain.dns_records[1].content)
    assert.is_nil(q.data.domain.dns_records[1].id)
    assert.is_nil(q.data.domain.nameservers)
    local ev = t.events("domain.registered")[1].data
    assert.same({ domain_id = did, domain_name = "mysite.com", registered_at = q.data.domain.registered_at,
      expires_at = q.data.domain.expires_at, cloudflare_enabled = true }, ev)
    s, b = register {}
    H.err(s, b, 400, "DOMAIN_NOT_AVAILABLE")
  end)

  it("enforces the Cloudflare / nameservers rules", function()
    local cases = {
      { { nameservers = { "ns1.a.com", "ns2.a.com" } }, "nameservers: forbidden when cloudflare is true" },
      { { cloudflare = false }, "nameservers: required when cloudflare is false (at least 2)" },
      { { cloudflare = false, nameservers = { "ns1.a.com" } }, "nameservers: must have at least 2 items" },
      { { cloudflare = false, nameservers = { "ns1.a.com", "ns2.a.com" }, ssl_mode = "full" },
        "ssl_mode: forbidden when cloudflare is false" },
      { { cloudflare = false, nameservers = { "ns1.a.com", "ns2.a.com" }, dns_records = {} },
        "dns_records: forbidden when cloudflare is false" },
      { { period = 11 }, "period: must be between 1 and 10 (got 11)" },
      { { period = 0 }, "period: must be between 1 and 10" },
      { { domain = "not a domain" }, "domain: must be a domain name" },
      { { ssl_mode = "none" }, "ssl_mode: must be one of flexible, full, strict" },
      { { dns_records = { { type = "A", name = "@" } } }, "dns_records[0].content: required" },
      { { cloudflare = "yes" }, "cloudflare: must be a boolean" },
    }
    for _, c in ipairs(cases) do
      local s, b = register(c[1])
      H.err(s, b, 400, "VALIDATION_ERROR", c[2])
    end
    local s, b = register { domain = "mysite.abc" }
    H.err(s, b, 400, "DOMAIN_NOT_AVAILABLE", ".abc")
    s, b = register { domain = "example.com" }
    H.err(s, b, 400, "DOMAIN_NOT_AVAILABLE")
    t.ctl("force", { what = "domain", outcome = "unavailable" })
    s, b = register {}
    H.err(s, b, 400, "DOMAIN_NOT_AVAILABLE")
    assert.equal(100000, t.balance())
  end)

  it("domain.failed refunds the fee when the name was taken meanwhile", function()
    t.ctl("force", { what = "domain", outcome = "taken" })
    local _, b = register { domain = "race.com", period = 2 }
    assert.equal(100000 - 2500, t.balance())
    t.app:advance(60)
    assert.equal(100000, t.balance())
    local ev = t.events("domain.failed")[1].data
    assert.same({ domain_id = b.data.domain.id, domain_name = "race.com", error = "Domain is no longer available" }, ev)
    local _, q = t.call("GET", "/domains/queue/" .. b.data.queue_id)
    assert.equal("failed", q.data.status)
    assert.equal("race.com", q.data.domain)
  end)

  it("shows nameservers only without Cloudflare; ns-servers and cloudflare switch", function()
    local _, b = register { domain = "plain.net", cloudflare = false, nameservers = { "ns1.host.com", "ns2.host.com" } }
    t.app:advance(60)
    local id = b.data.domain.id
    local _, g = t.call("GET", "/domains/" .. id)
    assert.same({ { nameserver = "ns1.host.com", order_index = 1 }, { nameserver = "ns2.host.com", order_index = 2 } },
      g.data.domain.nameservers)
    local s, r = t.call("POST", "/domains/" .. id .. "/ns-servers", { nameservers = { "a.ns.com", "b.ns.com", "c.ns.com" } })
    assert.equal(200, s)
    assert.equal(3, r.data.nameservers[3].order_index)
    s, r = t.call("POST", "/domains/" .. id .. "/dns", { type = "A", name = "@", content = "1.2.3.4" })
    H.err(s, r, 400, "VALIDATION_ERROR", "Cloudflare")
    s, r = t.call("POST", "/domains/" .. id .. "/cloudflare", { enabled = false })
    H.err(s, r, 400, "VALIDATION_ERROR", "enabled: must be true")
    s, r = t.call("POST", "/domains/" .. id .. "/cloudflare", { enabled = true })
    assert.same({ domain_id = id, ssl_mode = "flexible" }, r.data)
    _, g = t.call("GET", "/domains/" .. id)
    assert.is_nil(g.data.domain.nameservers)
    s, r = t.call("POST", "/domains/" .. id .. "/ns-servers", { nameservers = { "a.ns.com", "b.ns.com" } })
    H.err(s, r, 400, "VALIDATION_ERROR", "Cloudflare is enabled")
    local _, l = t.call("GET", "/domains", nil, "cloudflare=true&auto_renew=false&search=plain")
    assert.equal(1, l.data.pagination.total)
    s, r = t.call("GET", "/domains", nil, "cloudflare=yes")
    H.err(s, r, 400, "VALIDATION_ERROR", "cloudflare: must be one of true, false")
  end)

  it("manages DNS records: add, partial PUT, DELETE, list with ids", function()
    local _, b = register {}
    t.app:advance(60)
    local id = b.data.domain.id
    local s, r = t.call("POST", "/domains/" .. id .. "/dns", { type = "MX", name = "@", content = "mx.mysite.com", ttl = 3600 })
    assert.equal(200, s)
    local rec = r.data.record
    assert.matches("^rec%-", rec.id)
    assert.equal(json.null, rec.priority)
    assert.is_false(rec.proxied)
    s, r = t.call("PUT", "/domains/" .. id .. "/dns/" .. rec.id, { content = "mx2.mysite.com" })
    assert.equal(200, s)
    assert.equal("mx2.mysite.com", r.data.record.content)
    assert.equal("MX", r.data.record.type)
    assert.equal(3600, r.data.record.ttl)
    local _, l = t.call("GET", "/domains/" .. id .. "/dns")
    assert.equal(rec.id, l.data.records[1].id)
    s, r = t.call("POST", "/domains/" .. id .. "/dns", { type = "BOGUS", name = "@", content = "x" })
    H.err(s, r, 400, "VALIDATION_ERROR", "type: must be one of A, AAAA")
    s, r = t.call("POST", "/domains/" .. id .. "/dns", { type = "A", name = "@", content = "x", ttl = 5 })
    H.err(s, r, 400, "VALIDATION_ERROR", "ttl: must be 1 (automatic) or between 60 and 86400")
    s, r = t.call("DELETE", "/domains/" .. id .. "/dns/" .. rec.id)
    assert.equal(200, s)
    s, r = t.call("DELETE", "/domains/" .. id .. "/dns/" .. rec.id)
    H.err(s, r, 404, "NOT_FOUND")
    local _, _, _, raw = t.call("GET", "/domains/" .. id .. "/dns")
    assert.matches('"records":%[%]', raw)
  end)

  it("renews through the queue, switches auto-renew, expires_soon 7 days before, auto-renews", function()
    local _, b = register { auto_renew = true }
    t.app:advance(policy.delays.domain_register)
    local id = b.data.domain.id
    local _, g = t.call("GET", "/domains/" .. id)
    local expires = g.data.domain.expires_at
    local s, r = t.call("POST", "/domains/" .. id .. "/renew", { period = 2 })
    assert.equal(200, s)
    assert.equal(expires, r.data.expires_at)
    t.app:advance(policy.delays.domain_renew)
    local _, q = t.call("GET", "/domains/queue/" .. r.data.queue_id)
    assert.equal("completed", q.data.status)
    assert.is_true(q.data.domain.expires_at > expires)
    s, r = t.call("POST", "/domains/" .. id .. "/auto-renew", { auto_renew = false })
    assert.same({ id = id, auto_renew = false }, r.data)
    local paid = t.balance()
    t.app:advance(3 * policy.YEAR - 7 * DAY)
    local ev = t.events("domain.expires_soon")
    assert.equal(1, #ev)
    assert.same({ domain_id = id, domain_name = "mysite.com", expires_at = q.data.domain.expires_at, auto_renew = false },
      ev[1].data)
    t.call("POST", "/domains/" .. id .. "/auto-renew", { auto_renew = true })
    t.app:advance(6 * DAY)
    assert.equal(paid - 1250, t.balance())
    _, g = t.call("GET", "/domains/" .. id)
    assert.equal("active", g.data.domain.status)
    s, r = t.call("POST", "/domains/" .. id .. "/renew", { period = 11 })
    H.err(s, r, 400, "VALIDATION_ERROR", "period: must be between 1 and 10")
    s, r = t.call("GET", "/domains/dom-nope")
    H.err(s, r, 404, "NOT_FOUND")
  end)
end)

describe("sandbox whites", function()
  local t
  before_each(function() t = H.new() end)

  local function create(body)
    local req = { name = "Tech Blog DE", tier_key = "v2_tier1", niche = "IT Consulting", country = "DE", language = "de" }
    for k, v in pairs(body or {}) do req[k] = v end
    return t.call("POST", "/whites", req)
  end

  it("lists tiers", function()
    local _, b = t.call("GET", "/whites/tiers")
    assert.equal(3, #b.data.tiers)
    assert.equal(json.null, b.data.tiers[1].extra_article_price)
    assert.equal(1.5, b.data.tiers[3].extra_article_price)
  end)

  it("prices tier + extra articles + premium + extra languages", function()
    local s, b = create { tier_key = "v2_tier3", blog_count = 8, quality = "premium", languages = { "de", "en" } }
    assert.equal(200, s)
    assert.equal("queued", b.data.status)
    assert.equal(0, b.data.white.status)
    assert.equal("integer", math.type(b.data.white.status))
    -- 10.00 + 5 x 1.50 + 50 % of 10.00 + 1 x 1.00
    assert.equal(100000 - 2350, t.balance())
  end)

  it("goes 0 -> 5 -> 10 with white.completed, then download works and serves a zip", function()
    local _, b = create {}
    local id = b.data.white.id
    local s, d = t.call("GET", "/whites/" .. id .. "/download")
    H.err(s, d, 409, "NOT_READY")
    t.app:advance(policy.delays.white_start)
    local _, g = t.call("GET", "/whites/" .. id)
    assert.equal(5, g.data.white.status)
    local _, l = t.call("GET", "/whites", nil, "status=processing")
    assert.equal(1, l.data.pagination.total)
    t.app:advance(policy.delays.white_generate)
    _, g = t.call("GET", "/whites/" .. id)
    assert.equal(10, g.data.white.status)
    assert.same({ job_id = id, name = "Tech Blog DE", tier_key = "v2_tier1", country = "DE" },
      t.events("white.completed")[1].data)
    s, d = t.call("GET", "/whites/" .. id .. "/download")
    assert.equal(200, s)
    assert.equal("php", d.data.format)
    assert.matches("%.zip$", d.data.filename)
    local path, qs = d.data.url:match("^http://[^/]+(/download/[^?]+)%?(.*)$")
    local zs, zh, zip = t.app:handle { method = "GET", path = path, query = qs, headers = {}, body = "", peer = "127.0.0.1" }
    assert.equal(200, zs)
    assert.equal("application/zip", zh["content-type"])
    assert.equal("PK\3\4", zip:sub(1, 4))
    t.app:advance(policy.lifecycle.download_ttl + 1)
    zs = t.app:handle { method = "GET", path = path, query = qs, headers = {}, body = "", peer = "127.0.0.1" }
    assert.equal(403, zs)
  end)

  it("white.failed refunds the price", function()
    t.ctl("force", { what = "white", outcome = "failed" })
    local _, b = create {}
    t.app:advance(60)
    assert.equal(100000, t.balance())
    local _, g = t.call("GET", "/whites/" .. b.data.white.id)
    assert.equal(policy.white_status.failed, g.data.white.status)
    assert.same({ job_id = b.data.white.id, name = "Tech Blog DE", error = "Generation failed" }, t.events("white.failed")[1].data)
    local s, d = t.call("GET", "/whites/" .. b.data.white.id .. "/download")
    H.err(s, d, 409, "NOT_READY", "failed")
  end)

  it("validates: name 2-20, niche <= 25, blog_count 3-20 for v2_tier3 only, INVALID_TIER", function()
    local cases = {
      { { name = "A" }, "name: must be 2 to 20 characters (got 1)" },
      { { name = ("x"):rep(21) }, "name: must be 2 to 20 characters (got 21)" },
      { { niche = ("n"):rep(26) }, "niche: must be 1 to 25 characters (got 26)" },
      { { tier_key = "v2_tier3", blog_count = 2 }, "blog_count: must be between 3 and 20 (got 2)" },
      { { tier_key = "v2_tier3", blog_count = 21 }, "blog_count: must be between 3 and 20" },
      { { blog_count = 5 }, "blog_count: only allowed with tier_key v2_tier3" },
      { { country = "Germany" }, "country: must be an ISO 3166-1 alpha-2 code" },
      { { language = "deu" }, "language: must be an ISO 639-1 code" },
      { { quality = "gold" }, "quality: must be one of standard, premium" },
      { { email = "nope" }, "email: must be a full e-mail address" },
      { { facebook = "facebook.com/x" }, "facebook: must be a full http(s) URL" },
      { { contacts_mode = "template" }, "contacts_template: required when contacts_mode is template" },
    }
    for _, c in ipairs(cases) do
      local s, b = create(c[1])
      H.err(s, b, 400, "VALIDATION_ERROR", c[2])
    end
    assert.equal(200, (create { name = "Шпак" }))   -- 4 characters, 8 bytes
    local s, b = create { tier_key = "v9" }
    H.err(s, b, 400, "INVALID_TIER", "v9")
  end)

  it("config updates contacts and domain without charge", function()
    local _, b = create {}
    local id = b.data.white.id
    local before = t.balance()
    local s, r = t.call("POST", "/whites/" .. id .. "/config", { company = "My Brand", domain = "newdomain.com", legal = "GmbH" })
    assert.equal(200, s)
    assert.equal("newdomain.com", r.data.white.domain)
    assert.equal(before, t.balance())
    s, r = t.call("POST", "/whites/" .. id .. "/config", {})
    H.err(s, r, 400, "VALIDATION_ERROR", "send at least one of")
    s, r = t.call("POST", "/whites/job-nope/config", { company = "x" })
    H.err(s, r, 404, "NOT_FOUND")
  end)
end)

describe("sandbox money", function()
  it("keeps balance == ledger sum to the cent across charges and refunds", function()
    local t = H.new()
    local id = t.buy("SE", 2)
    t.call("POST", "/numbers/" .. id .. "/sms/send", { to_number = "+14155551234", message_body = "x" })
    t.ctl("force", { what = "verify", outcome = "VERIFY_REJECTED" })
    t.call("POST", "/numbers/" .. id .. "/verify", { gv_url = "https://gv.google.com/" })
    t.ctl("force", { what = "white", outcome = "failed" })
    t.call("POST", "/whites", { name = "ab", tier_key = "v2_tier2", niche = "n", country = "DE", language = "de" })
    t.call("POST", "/proxy/purchase", { server_id = DE_SERVER, quantity = 3, months = 1 })
    t.app:advance(120)
    -- 8.00 + 0.25 + (0.50 - 0.50) + (6.00 - 6.00) + 1.50
    assert.equal(100000 - 800 - 25 - 150, t.balance())
    assert.equal(ledger_sum(t), t.balance())
    local _, a = t.call("GET", "/account")
    assert.equal(990.25, a.data.balance)
  end)
end)

describe("sandbox control", function()
  local t
  before_each(function() t = H.new() end)

  it("refuses control calls from non-loopback peers", function()
    local s, b = t.request("POST", "/_sandbox/reset", nil, nil, { peer = "10.0.0.5" })
    H.err(s, b, 403, "PERMISSION_DENIED", "loopback")
    s, b = t.request("POST", "/_sandbox/reset")
    assert.equal(200, s)
    assert.equal(t.key, b.data.api_key)
  end)

  it("injects status faults for the next N matching requests", function()
    t.request("POST", "/_sandbox/faults", { match = "/account", status = 500, times = 2 })
    H.err(select(1, t.call("GET", "/account")), select(2, t.call("GET", "/account")), 500, "INTERNAL_ERROR")
    assert.equal(200, (t.call("GET", "/account")))
    t.request("POST", "/_sandbox/faults", { match = "/numbers*", status = 429, retry_after = 3 })
    local s, b, h = t.call("GET", "/numbers/countries")
    H.err(s, b, 429, "RATE_LIMITED", "retry in 3s")
    assert.equal("3", h["retry-after"])
    t.request("POST", "/_sandbox/faults", { match = "/numbers", method = "GET", status = 503 })
    s, b = t.call("GET", "/numbers")
    H.err(s, b, 503, "SERVER_UNAVAILABLE")
    s, b = t.request("POST", "/_sandbox/faults", { match = "/x", status = 500, drop = "before" })
    H.err(s, b, 400, "VALIDATION_ERROR", "exactly one of")
  end)

  it("drops before (nothing charged) or after (charged, no answer)", function()
    t.ctl("fault", { match = "/numbers/purchase", drop = "before" })
    assert.equal("DROP", t.call("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false }))
    assert.equal(100000, t.balance())
    t.ctl("fault", { match = "/numbers/purchase", drop = "after" })
    assert.equal("DROP", t.call("POST", "/numbers/purchase", { country_code = "SE", duration_months = 1, auto_renew = false }))
    assert.equal(100000 - 400, t.balance())
    local _, l = t.call("GET", "/numbers")
    assert.equal(1, l.data.pagination.total)
    local log = t.ctl("requests", {})
    assert.equal("drop after", log[#log - 1].fault)
    assert.equal("numbers.purchase", log[#log - 1].endpoint)
  end)

  it("delays through the injected sleep", function()
    local slept
    t.app.sleep = function(s) slept = s end
    t.ctl("fault", { match = "/account", delay = 2.5 })
    assert.equal(200, (t.call("GET", "/account")))
    assert.equal(2.5, slept)
  end)

  it("emits arbitrary events and keeps accounts apart", function()
    local other = t.ctl("create_account", { balance = 12.34, email = "o@x.org" })
    assert.equal(12.34, other.balance)
    local s, b = t.request("POST", "/_sandbox/events", { event_type = "white.completed", data = { job_id = "j" }, api_key = other.api_key })
    assert.equal(200, s)
    assert.equal("white.completed", b.data.event_type)
    local ev = t.events("white.completed")[1]
    assert.equal(other.user_id, ev.user_id)
    local _, a = t.call("GET", "/account", nil, nil, { authorization = "Bearer " .. other.api_key })
    assert.equal(12.34, a.data.balance)
    assert.equal("o***@x.org", a.data.email)
  end)

  it("advances the clock over HTTP and reports it", function()
    local _, c0 = t.request("GET", "/_sandbox/clock")
    local _, c1 = t.request("POST", "/_sandbox/clock/advance", { seconds = 3600 })
    assert.equal(c0.data.epoch + 3600, t.app:now())
    assert.matches("Z$", c1.data.now)
    local s, b = t.request("POST", "/_sandbox/clock/advance", { seconds = -1 })
    H.err(s, b, 400, "VALIDATION_ERROR", "seconds: must be >= 0")
  end)

  it("answers 404 for unknown control routes and validates force", function()
    local s, b = t.request("GET", "/_sandbox/nope")
    H.err(s, b, 404, "NOT_FOUND")
    s, b = t.request("POST", "/_sandbox/force", { what = "verify", outcome = "maybe" })
    H.err(s, b, 400, "VALIDATION_ERROR", "outcome: must be an error code")
    s, b = t.request("POST", "/_sandbox/force", { what = "white", outcome = "MAYBE" })
    H.err(s, b, 400, "VALIDATION_ERROR", "outcome: must be one of failed")
    s, b = t.request("POST", "/_sandbox/force", { what = "nothing", outcome = "x" })
    H.err(s, b, 400, "VALIDATION_ERROR", "what: must be one of")
  end)
end)

describe("sandbox webhooks", function()
  local function with_transport(results, speed)
    local sent, slept = {}, {}
    local t = H.new { webhooks = {
      send = function(url, body, headers, timeout)
        sent[#sent + 1] = { url = url, body = body, headers = headers, timeout = timeout }
        local r = table.remove(results, 1)
        if type(r) == "string" then return nil, r end
        return r
      end,
      sleep = function(s) slept[#slept + 1] = s end,
    } }
    if speed then t.app.clock:set_speed(speed) end
    t.ctl("update_key", { webhook_url = "http://127.0.0.1:9/hook" })
    return t, sent, slept
  end

  it("POSTs {event_type, timestamp, data} with the documented User-Agent", function()
    local t, sent = with_transport { 200 }
    t.ctl("emit", { event_type = "sms.received", data = { piv_num_id = "x", text = "t" } })
    assert.equal(1, #sent)
    assert.equal("piv.day-webhook/1.0", sent[1].headers["user-agent"])
    assert.equal("application/json", sent[1].headers["content-type"])
    assert.equal(5, sent[1].timeout)
    local p = json.decode(sent[1].body)
    assert.equal("sms.received", p.event_type)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", p.timestamp)
    assert.equal("t", p.data.text)
    assert.equal("delivered", t.ctl("deliveries", {})[1].status)
  end)

  it("retries 3 times after 1/2/4 s (scaled by speed), then failed; resend starts again", function()
    local t, sent, slept = with_transport({ 500, "TIMEOUT", 404, 503, 204 }, 10)
    t.ctl("emit", { event_type = "white.failed", data = {} })
    assert.equal(4, #sent)
    assert.same({ 0.1, 0.2, 0.4 }, slept)
    local d = t.ctl("deliveries", {})[1]
    assert.equal("failed", d.status)
    assert.equal(4, #d.attempts)
    assert.equal("TIMEOUT", d.attempts[2].error)
    assert.equal(500, d.attempts[1].status)
    local r = t.ctl("resend", { id = d.id })
    assert.equal("delivered", r.status)
    assert.equal(5, #sent)
    local s, b = t.request("POST", "/_sandbox/deliveries/" .. d.id .. "/resend")
    H.err(s, b, 404, "NOT_FOUND", "only failed deliveries")
  end)

  it("delivers nothing for accounts without a URL or with revoked keys", function()
    local t, sent = with_transport { 200, 200 }
    t.ctl("update_key", { revoked = true })
    t.ctl("emit", { event_type = "sms.received", data = {} })
    assert.equal(0, #sent)
    assert.equal(1, #t.events("sms.received"))
  end)
end)

describe("sandbox state file", function()
  local path = os.tmpname()
  after_each(function() os.remove(path) os.remove(path .. ".tmp") end)

  it("survives a save and load, jobs and money included", function()
    local t = H.new()
    local id = t.buy("SE")
    t.call("POST", "/whites", { name = "ab", tier_key = "v2_tier1", niche = "n", country = "DE", language = "de" })
    assert.is_true(t.app.st:save(path, t.app:now()))
    local f = io.open(path .. ".tmp")
    assert.is_nil(f)
    local st = assert(state_mod.load(path))
    local t2 = H.new { state = st }
    assert.equal(t.key, t2.key)
    assert.equal(t.balance(), t2.app.st:account(t2.uid).balance)
    local _, n = t2.call("GET", "/numbers/" .. id)
    assert.equal("active", n.data.status)
    t2.app:advance(60)
    assert.equal(1, #t2.events("white.completed"))
    local _, _, _, raw = t2.call("GET", "/numbers/" .. id)
    assert.matches('"tags":%[%]', raw)
  end)

  it("reports a corrupt or foreign file instead of resetting", function()
    local f = assert(io.open(path, "w"))
    f:write("{not json")
    f:close()
    local st, err = state_mod.load(path)
    assert.is_nil(st)
    assert.matches("corrupt", err)
    f = assert(io.open(path, "w"))
    f:write('{"hello": 1}')
    f:close()
    st, err = state_mod.load(path)
    assert.is_nil(st)
    assert.matches("not a sandbox state file", err)
    st, err = state_mod.load(path .. ".missing")
    assert.is_nil(st)
    assert.is_nil(err)
  end)
end)
