-- `make demo` from a clean clone: builds from nothing and runs the flagship
-- flow against the embedded sandbox.
local helper = require "helper"

describe("make demo", function()
  it("runs buy -> verify from a clean clone and prints balance, number, code", function()
    local dir = os.tmpname()
    os.remove(dir)
    local out, rc = helper.sh(("git clone -q . %s 2>&1 && make -C %s demo 2>&1")
      :format(helper.q(dir), helper.q(dir)))
    os.execute("rm -rf " .. helper.q(dir))
    assert.equal(0, rc, out)
    assert.matches("SANDBOX", out)
    assert.matches("balance before: 1000%.00", out)
    assert.matches('phone_number = "%+%d+"', out)
    assert.matches('code = "%d+"', out)
    assert.matches("balance after: 99%d%.%d%d", out)
  end)
end)
