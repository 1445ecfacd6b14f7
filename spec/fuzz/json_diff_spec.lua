-- pivday.json.decode's C fast path (core.json_decode) against the cjson
-- reference: never more lenient, the same values. spec/fuzz/json_diff.lua
-- runs longer with any seed.
local diff = dofile("spec/fuzz/json_diff.lua")

describe("pivday.json.decode, C decoder vs cjson", function()
  it("agrees on 20,000 generated and mutated texts", function()
    local counts = diff.run(20000, 20261203)
    assert.is_true((counts.fast or 0) > 2000)      -- both accepted: compared
    assert.is_true((counts.fallback or 0) > 100)   -- cjson-only texts went to cjson
    assert.is_true((counts.refused or 0) > 2000)
  end)

  it("gives the reference's value and message on texts only cjson takes", function()
    for _, s in ipairs { "1.", "[1.]", "[1]\0trailing", '"a\nb"', '{"a":"x\r\ny"}' } do
      assert.is_true(diff.check(s))
    end
  end)
end)
