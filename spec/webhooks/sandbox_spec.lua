-- End to end: the in-process sandbox delivers its webhooks to our listener,
-- and flows await them.
local pivday = require "pivday"
local helper = require "helper"
local t = helper.t

describe("pivday.webhooks with the sandbox", function()

  local sb, api, hooks

  before_each(function()
    hooks = assert(pivday.webhooks{ port = 0 })
    sb = assert(pivday.sandbox{ port = 0, webhook_url = hooks.local_url })
    api = pivday.client{ base_url = sb.base_url, api_key = sb.api_key }
  end)

  after_each(function()
    sb:close()
    hooks:close()
  end)

  local function buy()
    local p = assert(api.numbers.purchase{ country_code = "SE", duration_months = 1, auto_renew = false })
    return p.numbers[1].piv_num_id
  end

  it("purchase -> verify -> verify.completed awaited", function()
    local id = buy()
    local w = hooks:expect({ "verify.completed", "verify.failed" }, { piv_num_id = id })
    assert(api.numbers.verify(id, { gv_url = "https://gv.google.com/x" }))
    sb:advance(60)
    local ev, err = w:wait(t(10))
    assert.is_nil(err)
    assert.equal("verify.completed", ev.event_type)
    assert.equal(id, ev.data.piv_num_id)
    assert.equal("integer", math.type(ev.data.task_id))
  end)

  it("a forced failure arrives as verify.failed with its code", function()
    local id = buy()
    sb:force{ what = "verify", outcome = "VERIFY_TIMEOUT" }
    local w = hooks:expect({ "verify.completed", "verify.failed" }, { piv_num_id = id })
    assert(api.numbers.verify(id, { gv_url = "https://gv.google.com/x" }))
    sb:advance(60)
    local ev = assert(w:wait(t(10)))
    assert.equal("verify.failed", ev.event_type)
    assert.equal("VERIFY_TIMEOUT", ev.data.error_code)
  end)

  it("an SMS that arrived before wait() is still matched", function()
    local id = buy()
    sb:inbound_sms{ piv_num_id = id, text = "Your code is 424242" }
    pivday.sleep(0.2) -- delivered and acknowledged before anyone waits
    local ev = assert(hooks:wait("sms.received", { piv_num_id = id }, t(5)))
    assert.equal("424242", ev.data.code)
  end)

  it("the sandbox's retry after a lost answer reaches handlers once", function()
    -- A listener that is down for the first attempt: the sandbox retries
    -- after 1 s; we come up in between.
    local port = hooks.port
    local path = hooks.path
    hooks:close()
    local n = 0
    sb:emit("white.completed", { job_id = "j1", name = "W" })
    pivday.sleep(0.3)
    hooks = assert(pivday.webhooks{ port = port, path = path })
    hooks:on("white.completed", function() n = n + 1 end)
    local deadline = pivday.now() + t(5)
    while n == 0 and pivday.now() < deadline do pivday.sleep(0.05) end
    assert.equal(1, n)
    local d = sb:deliveries{}
    assert.equal("delivered", d[#d].status)
    assert.is_true(#d[#d].attempts >= 2)
  end)

  it("`pivday trigger` makes the sandbox emit to the listener", function()
    local trigger = require "pivday.cli.trigger"
    local out = io.stdout
    local sink = assert(io.open("/dev/null", "w"))
    io.stdout = sink -- luacheck: ignore
    local ok, code = pcall(trigger.main, { "domain.failed", "--set", "data.domain_name=x.test",
      "--set", "data.extra.n=3", "--sandbox-url", sb.url })
    io.stdout = out -- luacheck: ignore
    sink:close()
    assert.is_true(ok, tostring(code))
    assert.equal(0, code)
    local ev = assert(hooks:wait("domain.failed", { domain_name = "x.test" }, t(5)))
    assert.equal(3, ev.data.extra.n)
    assert.equal("Domain is no longer available", ev.data.error)
  end)
end)
