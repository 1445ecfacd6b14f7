-- The REPL under --sandbox: `api` ready, SANDBOX shown, events printed.
local helper = require "helper"

local function repl(input)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(input)
  f:close()
  local out, rc = helper.sh(helper.bin .. " --sandbox < " .. name .. " 2>&1")
  os.remove(name)
  return out, rc
end

describe("pivday --sandbox REPL", function()
  it("has api ready against the sandbox and says so", function()
    local out, rc = repl("api.account.get().balance\n")
    assert.equal(0, rc)
    assert.matches("SANDBOX", out)
    assert.matches("\n1000\n", out)
  end)

  it("prints webhook events as they arrive", function()
    local out, rc = repl(table.concat({
      "hooks = pivday.webhooks{port = 0}",
      "n = api.numbers.purchase{country_code = 'SE', duration_months = 1, auto_renew = false}.numbers[1]",
      "sandbox:inbound_sms{piv_num_id = n.piv_num_id, text = 'Your code is 7731'}",
      "pivday.sleep(0.5)",
    }, "\n") .. "\n")
    assert.equal(0, rc)
    assert.matches('%[event%] sms.received {.*"code":"7731"', out)
  end)

  it("never reaches the live service, whatever the environment says", function()
    local out = helper.sh("PIVDAY_API_KEY=live-key PIVDAY_BASE_URL=http://127.0.0.1:1/api/v1 "
      .. helper.bin .. " --sandbox -e 'print(pivday.client{}.base_url)' 2>/dev/null")
    assert.matches("^http://127%.0%.0%.1:%d+/api/v1\n$", out)
    assert.not_matches(":1/api", out)
  end)
end)
