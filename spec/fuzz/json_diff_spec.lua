-- pivday.json.decode's C fast path (core.json_decode) against the cjson
-- reference: never more lenient, the same values. spec/fuzz/json_diff.lua
-- runs longer with any seed.
local diff = dofile("spec/fuzz/json_diff.lua")
local reference = require("pivday.json")._cjson_decode

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

  -- Keys and short values come from caches keyed on their length and
  -- first and last 8 bytes: strings alike there must still be told apart
  -- by the bytes between, and a cached string must not stand in for one
  -- with an escape.
  it("gives every short key and value its own bytes, across texts", function()
    local json = require "pivday.json"
    local core = require "pivday.core"
    local seen = 0
    for round = 1, 3 do
      for n = 1, 40 do
        for _, mid in ipairs { "x", "y", "\\u0041", "\\\"" } do
          local body = n > 16 and ("a"):rep(8) .. ("m"):rep(n - 16) .. ("z"):rep(8) or ("v"):rep(n)
          -- the middle byte changed (an escape spelled there decodes to one byte)
          local at = (n + 1) // 2
          local text = body:sub(1, at - 1) .. mid .. body:sub(at + 1)
          local want = assert(reference('"' .. text .. '"'))
          local doc = '{"' .. text .. '":"' .. text .. '","k' .. round .. '":["' .. text .. '"]}'
          local v = assert(core.json_decode(doc))
          assert.equal(want, v[want], doc)
          assert.equal(want, v["k" .. round][1], doc)
          assert.equal(want, json.decode(doc)[want])
          seen = seen + 1
        end
      end
    end
    assert.equal(3 * 40 * 4, seen)
  end)
end)

