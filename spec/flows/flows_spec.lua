-- Every flow end to end against an in-process sandbox over real HTTP, with
-- a real webhook listener: success, the failure path, and the polling
-- fallback where the API has a status to poll.
local pivday = require "pivday"
local flows = require "pivday.flows"
local helper = require "helper"
local t = helper.t

local SPEED = 200 -- sandbox seconds per real second: an 8 s verify takes 40 ms

local sb, api, hooks

local function balance() return assert(api.account.get()).balance end

local function approx(a, b) return math.abs(a - b) < 0.005 end

before_each(function()
  sb = assert(pivday.sandbox{ speed = SPEED })
  api = pivday.client{ base_url = sb.base_url, api_key = sb.api_key }
  hooks = assert(pivday.webhooks{ port = 0 })
  sb:set_webhook_url(hooks.local_url)
end)

after_each(function()
  hooks:close()
  sb:close()
end)

describe("flows.buy_and_verify", function()
  it("buys, verifies and returns the captured code with what it cost", function()
    local before = balance()
    local r = assert(flows.buy_and_verify{ api = api, hooks = hooks, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", timeout = t(10), progress = false })
    assert.matches("^%d%d%d%d+$", r.code)
    assert.matches(r.code, r.message, 1, true)
    assert.is_string(r.phone)
    assert.is_string(r.number.piv_num_id)
    assert.is_true(math.type(r.task_id) == "integer")
    assert.equal(0, r.refunded)
    assert.is_true(r.charged > r.number.cost, "the verify fee is counted")
    assert.is_true(approx(before - r.charged, balance()))
  end)

  it("reports a forced verify failure with its refund", function()
    sb:force{ what = "verify", outcome = "VERIFY_TIMEOUT" }
    local before = balance()
    local r, err = flows.buy_and_verify{ api = api, hooks = hooks, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", timeout = t(10), progress = false }
    assert.is_nil(r)
    assert.equal("VERIFY_TIMEOUT", err.code)
    assert.is_true(err.refunded > 0)
    assert.is_true(err.charged > err.refunded)
    assert.is_table(err.number)
    assert.is_true(approx(before - (err.charged - err.refunded), balance()))
  end)

  it("refuses at once without a listener, before buying anything", function()
    local r, err = flows.buy_and_verify{ api = api, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", progress = false }
    assert.is_nil(r)
    assert.equal("NO_LISTENER", err.code)
    assert.equal(0, err.charged)
    assert.equal(0, #assert(api.numbers.list()).numbers)
  end)

  it("resumes from its state file instead of buying a second number", function()
    local state = os.tmpname()
    os.remove(state)
    -- The first run buys, then verification fails at once, refunded, on
    -- every attempt the client makes (1 + max_retries).
    local client1 = pivday.client{ base_url = sb.base_url, api_key = sb.api_key, max_retries = 1,
      backoff_base = 0 }
    sb:force{ what = "verify", outcome = "PROXY_DEAD", count = 2 }
    local r, err = flows.buy_and_verify{ api = client1, hooks = hooks, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", timeout = t(10), state = state, progress = false }
    assert.is_nil(r)
    assert.equal("PROXY_DEAD", err.code)
    -- The re-run resumes with the same number and finishes.
    r = assert(flows.buy_and_verify{ api = api, hooks = hooks, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", timeout = t(10), state = state, progress = false })
    assert.equal(err.number.piv_num_id, r.number.piv_num_id)
    assert.equal(1, #assert(api.numbers.list()).numbers)
    -- A third run returns the recorded result without calling anything.
    local again = assert(flows.buy_and_verify{ api = api, hooks = hooks, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", state = state, progress = false })
    assert.equal(r.code, again.code)
    assert.equal(1, #assert(api.numbers.list()).numbers)
    os.remove(state)
    os.remove(state .. ".lock")
  end)

  it("finds the number an unknown-outcome purchase bought instead of buying again", function()
    local state = os.tmpname()
    os.remove(state)
    -- The purchase is processed (and charged) but no answer comes back.
    sb:fault{ match = "/numbers/purchase", drop = "after" }
    local r, err = flows.buy_and_verify{ api = api, hooks = hooks, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", timeout = t(10), state = state, progress = false }
    assert.truthy(r, err and tostring(err))
    assert.equal(1, #assert(api.numbers.list()).numbers)
    os.remove(state)
    os.remove(state .. ".lock")
  end)

  it("refuses a state file another run holds", function()
    local state = os.tmpname()
    local lock = assert(require("pivday.core").open_file(state .. ".lock", "a"))
    assert.is_true(lock:lock())
    local r, err = flows.buy_and_verify{ api = api, hooks = hooks, country_code = "SE",
      gv_url = "https://gv.google.com/verify?x=1", state = state, progress = false }
    lock:close()
    assert.is_nil(r)
    assert.equal("STATE_LOCKED", err.code)
    os.remove(state)
    os.remove(state .. ".lock")
  end)
end)

describe("flows.wait_sms_code", function()
  it("returns the code of the next SMS to the number", function()
    local n = assert(api.numbers.purchase{ country_code = "SE", duration_months = 1, auto_renew = false }).numbers[1]
    local got
    pivday.run(function()
      pivday.spawn(function()
        got = assert(flows.wait_sms_code{ hooks = hooks, piv_num_id = n.piv_num_id,
          timeout = t(5), progress = false })
      end)
      pivday.sleep(0.05)
      sb:inbound_sms{ piv_num_id = n.piv_num_id, text = "Your code is 482913" }
    end)
    assert.equal("482913", got.code)
    assert.equal("Your code is 482913", got.text)
  end)

  it("takes the code from the text with a pattern", function()
    local n = assert(api.numbers.purchase{ country_code = "SE", duration_months = 1, auto_renew = false }).numbers[1]
    sb:inbound_sms{ piv_num_id = n.piv_num_id, text = "PIN: AB-77 (valid 5 min)" }
    local got = assert(flows.wait_sms_code{ hooks = hooks, piv_num_id = n.piv_num_id,
      pattern = "PIN: (%u%u%-%d+)", timeout = t(5), progress = false })
    assert.equal("AB-77", got.code)
  end)

  it("times out with TIMEOUT", function()
    local n = assert(api.numbers.purchase{ country_code = "SE", duration_months = 1, auto_renew = false }).numbers[1]
    local r, err = flows.wait_sms_code{ hooks = hooks, piv_num_id = n.piv_num_id, timeout = 0.05, progress = false }
    assert.is_nil(r)
    assert.equal("TIMEOUT", err.code)
  end)
end)

describe("flows.restore", function()
  local function expired_numbers(count)
    local ids = {}
    for i = 1, count do
      ids[i] = assert(api.numbers.purchase{ country_code = "SE", duration_months = 1,
        auto_renew = false }).numbers[1].piv_num_id
    end
    sb:advance(31 * 86400)
    for _, id in ipairs(ids) do assert.equal("expired", assert(api.numbers.get(id)).status) end
    return ids
  end

  it("restores, reporting the one that failed and its refund", function()
    local ids = expired_numbers(2)
    sb:force{ what = "restore", outcome = { ids[2] } }
    local before = balance()
    local r = assert(flows.restore{ api = api, hooks = hooks, piv_num_ids = ids, timeout = t(10), progress = false })
    assert.equal(1, #r.restored)
    assert.equal(ids[1], r.restored[1].piv_num_id)
    assert.equal(1, #r.failed)
    assert.equal(ids[2], r.failed[1].piv_num_id)
    assert.is_true(r.refunded > 0 and r.charged > r.refunded)
    assert.is_true(approx(before - (r.charged - r.refunded), balance()))
  end)

  it("retries the failed ones once when asked", function()
    local ids = expired_numbers(2)
    sb:force{ what = "restore", outcome = { ids[2] } }
    local r = assert(flows.restore{ api = api, hooks = hooks, piv_num_ids = ids, retry_failed = true,
      timeout = t(10), progress = false })
    assert.equal(2, #r.restored)
    assert.equal(0, #r.failed)
  end)

  it("polls each number without a listener", function()
    local ids = expired_numbers(1)
    local r = assert(flows.restore{ api = api, piv_num_ids = ids, timeout = t(10),
      poll_interval = 0.02, progress = false })
    assert.equal(1, #r.restored)
    assert.equal("active", assert(api.numbers.get(ids[1])).status)
  end)
end)

describe("flows.register_domain", function()
  it("registers and returns the full domain", function()
    local before = balance()
    local r = assert(flows.register_domain{ api = api, hooks = hooks, domain = "pivday-flow-test.com",
      dns_records = { { type = "A", name = "@", content = "1.2.3.4" } }, timeout = t(10), progress = false })
    assert.equal("pivday-flow-test.com", r.domain.domain_name)
    assert.equal("active", r.domain.status)
    assert.is_true(r.charged > 0)
    assert.is_true(approx(before - r.charged, balance()))
  end)

  it("surfaces domain.failed with the refund when the name is taken meanwhile", function()
    sb:force{ what = "domain", outcome = "taken" }
    local before = balance()
    local r, err = flows.register_domain{ api = api, hooks = hooks, domain = "pivday-taken.com",
      timeout = t(10), progress = false }
    assert.is_nil(r)
    assert.equal("DOMAIN_FAILED", err.code)
    assert.equal(err.charged, err.refunded)
    assert.is_true(approx(before, balance()))
  end)

  it("polls the registration queue without a listener", function()
    local r = assert(flows.register_domain{ api = api, domain = "pivday-polled.net",
      timeout = t(10), poll_interval = 0.02, progress = false })
    assert.equal("pivday-polled.net", r.domain.domain_name)
  end)
end)

describe("flows.white", function()
  local fields = { name = "Tech Blog", tier_key = "v2_tier1", niche = "IT", country = "DE", language = "de" }
  local function with(extra)
    local o = {}
    for k, v in pairs(fields) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  it("generates and downloads the archive", function()
    local out = os.tmpname()
    local r = assert(flows.white(with{ api = api, hooks = hooks, download_to = out,
      timeout = t(10), progress = false }))
    local f = assert(io.open(out, "rb"))
    local head = f:read(2)
    f:close()
    os.remove(out)
    assert.equal("PK", head)
    assert.equal(r.bytes, r.bytes // 1)
    assert.is_true(r.charged > 0)
  end)

  it("reports white.failed with the refund", function()
    sb:force{ what = "white", outcome = "failed" }
    local r, err = flows.white(with{ api = api, hooks = hooks, timeout = t(10), progress = false })
    assert.is_nil(r)
    assert.equal("WHITE_FAILED", err.code)
    assert.equal(err.charged, err.refunded)
  end)

  it("polls without a listener", function()
    local r = assert(flows.white(with{ api = api, timeout = t(10), poll_interval = 0.02, progress = false }))
    assert.matches("^https?://", r.url)
  end)
end)

describe("flows.proxy_autorenew", function()
  it("renews an order when proxy.expires_soon arrives", function()
    local server = assert(api.proxy.servers())
    local sid
    for _, s in ipairs(server.servers or server) do
      if s.is_active ~= false and s.status ~= "inactive" then sid = s.id or s.server_id break end
    end
    local order = assert(api.proxy.purchase{ server_id = sid, quantity = 1, months = 1 })
    local id = (order.order or order).id
    local renewed = pivday.cond()
    local handle = flows.proxy_autorenew{ api = api, hooks = hooks, months = 1, progress = false,
      on_renew = function(oid, res) renewed:signal(res and oid) end }
    sb:emit("proxy.expires_soon", { order_id = id, expires_at = "2030-01-01T00:00:00Z", proxy_count = 1 })
    assert.equal(id, renewed:wait(t(5)))
    handle.stop()
    assert.equal(1, handle.renewed)
    assert.is_true(handle.charged > 0)
  end)
end)

describe("the spend guard", function()
  it("refuses charging calls past max_spend and sends nothing in a dry run", function()
    local guarded = pivday.client{ base_url = sb.base_url, api_key = sb.api_key, max_spend = 1 }
    assert(guarded.numbers.purchase{ country_code = "SE", duration_months = 1, auto_renew = false })
    local r, err = guarded.numbers.purchase{ country_code = "SE", duration_months = 1, auto_renew = false }
    assert.is_nil(r)
    assert.equal("SPEND_LIMIT", err.code)
    local lines = {}
    local dry = pivday.client{ base_url = sb.base_url, api_key = sb.api_key, dry_run = true,
      log = function(l) lines[#lines + 1] = l end }
    r, err = dry.numbers.purchase{ country_code = "SE", duration_months = 1, auto_renew = false }
    assert.equal("DRY_RUN", err.code)
    assert.matches("dry%-run: POST .*/numbers/purchase", lines[1])
    assert.equal(1, #assert(api.numbers.list()).numbers)
  end)
end)
