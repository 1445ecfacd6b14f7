-- pivday.json: lua-cjson with Lua 5.4 integers, [] for marked empty lists
-- and exact large integers.
local json = require "pivday.json"

describe("pivday.json", function()
  describe("decode", function()
    it("gives integers for integral numbers and floats otherwise", function()
      local v = assert(json.decode("[1, 1.0, 1e2, -7, 0, 1.5, 1e300]"))
      local types = {}
      for i = 1, #v do types[i] = math.type(v[i]) end
      assert.same({ "integer", "integer", "integer", "integer", "integer", "float", "float" }, types)
      assert.equal(100, v[3])
      assert.equal(1.5, v[6])
    end)

    it("decodes object keys the same however often they repeat (the decoder caches recent keys)", function()
      -- Keys that share their first and last 8 bytes, escaped and raw
      -- quotes and backslashes, control characters, the empty key, keys
      -- longer than the cache takes: each decoded several times, in
      -- different orders, so every one is met both cached and not.
      local keys = {
        { '"abcdefghXabcdefgh"', "abcdefghXabcdefgh" }, { '"abcdefghYabcdefgh"', "abcdefghYabcdefgh" },
        { '"abcdefgh"', "abcdefgh" }, { '"abcdefghi"', "abcdefghi" }, { '"a"', "a" },
        { '"a\\"b"', 'a"b' }, { '"a\\\\"', "a\\" }, { '"a\\u0041"', "aA" }, { '"\1x"', "\1x" },
        { '""', "" }, { '"' .. ("k"):rep(32) .. '"', ("k"):rep(32) }, { '"' .. ("k"):rep(31) .. '"', ("k"):rep(31) },
        { '"' .. ("k"):rep(33) .. '"', ("k"):rep(33) }, { '"event_type"', "event_type" },
      }
      for round = 1, 3 do
        for i = 1, #keys do
          local k = keys[(i * round) % #keys + 1]
          local v = assert(json.decode("{" .. k[1] .. ":" .. i .. ',"z":{' .. k[1] .. ":true}}"))
          assert.equal(i, v[k[2]], k[1])
          assert.is_true(v.z[k[2]], k[1])
          local n = 0
          for _ in pairs(v) do n = n + 1 end
          assert.equal(2, n, k[1])
        end
      end
      assert.is_nil(json.decode('{"abc'))
      assert.is_nil(json.decode('{"abc":1,"abc'))
    end)

    it("decodes nested integers too (ids, counts, pagination)", function()
      local v = assert(json.decode('{"data":{"pagination":{"total":450,"limit":200,"offset":0},"items":[{"task_id":12}]}}'))
      assert.equal("integer", math.type(v.data.pagination.total))
      assert.equal("integer", math.type(v.data.items[1].task_id))
    end)

    it("decodes a top-level scalar", function()
      assert.equal(42, json.decode(" 42 "))
      assert.equal("integer", math.type(json.decode("42")))
      assert.equal("x", json.decode('"x"'))
      assert.is_true(json.decode("true"))
    end)

    it("decodes null as json.null, in objects and lists", function()
      assert.equal(json.null, json.decode("null"))
      local v = assert(json.decode('{"a":null,"l":["x",null,"y"]}'))
      assert.equal(json.null, v.a)
      assert.equal(3, #v.l)
      assert.equal(json.null, v.l[2])
    end)

    it("decodes unicode escapes to UTF-8", function()
      assert.equal("é☃", json.decode('"\\u00e9\\u2603"'))
    end)

    it("returns nil and a message for malformed text", function()
      for _, bad in ipairs { "{bad", "", "[1,]", "{'a':1}", "NaN", "[1] x" } do
        local v, msg = json.decode(bad)
        assert.is_nil(v, bad)
        assert.is_string(msg, bad)
      end
    end)

    it("refuses nesting deeper than 200", function()
      local v, msg = json.decode(("["):rep(300) .. ("]"):rep(300))
      assert.is_nil(v)
      assert.matches("nested", msg)
    end)

    it("raises on a non-string argument (misuse)", function()
      assert.has_error(function() json.decode(5) end)
      assert.has_error(function() json.decode(nil) end)
    end)
  end)

  describe("encode", function()
    it("writes integers without a fraction", function()
      assert.equal("[1,-2,0]", json.encode({ 1, -2, 0 }))
      assert.equal("1", json.encode(1.0))
      assert.equal("1.5", json.encode(1.5))
    end)

    it("writes large integers exactly", function()
      assert.equal("123456789012345678", json.encode(123456789012345678))
      assert.equal("[-9007199254740993]", json.encode({ -9007199254740993 }))
      assert.equal('{"id":100000000000001}', json.encode({ id = 100000000000001 }))
    end)

    it("writes an unmarked empty table as {} and json.array() as []", function()
      assert.equal("{}", json.encode({}))
      assert.equal("[]", json.encode(json.array()))
      assert.equal('{"piv_num_ids":[]}', json.encode({ piv_num_ids = json.array {} }))
    end)

    it("json.array marks without changing contents and reports the mark", function()
      local t = { 1, 2 }
      assert.equal(t, json.array(t))
      assert.is_true(json.is_array(t))
      assert.is_false(json.is_array({}))
      assert.equal("[1,2]", json.encode(t))
    end)

    it("writes json.null as null and nil holes in lists as null", function()
      assert.equal('{"a":null}', json.encode({ a = json.null }))
      assert.equal("[1,null,3]", json.encode({ 1, nil, 3 }))
    end)

    it("escapes strings, including NUL and quotes", function()
      local s = json.encode('a"b\\c\0d\n')
      assert.equal('a"b\\c\0d\n', json.decode(s))
      assert.not_matches("%z", s)
    end)

    it("does not let a user string collide with its internal placeholders", function()
      local tricky = "\0pd:[]"
      assert.equal(tricky, json.decode(json.encode(tricky)))
      local tricky2 = "\0pd:i:123"
      assert.equal(tricky2, json.decode(json.encode({ tricky2 }))[1])
    end)

    it("does not modify the table it encodes", function()
      local inner = json.array()
      local t = { big = 123456789012345678, list = inner }
      json.encode(t)
      assert.equal(123456789012345678, t.big)
      assert.equal(inner, t.list)
      assert.is_nil(next(inner))
    end)

    it("raises on values JSON cannot hold", function()
      assert.has_error(function() json.encode({ f = print }) end)
      assert.has_error(function() json.encode(0 / 0) end)
      assert.has_error(function() json.encode(math.huge) end)
    end)

    it("round-trips an API-shaped payload", function()
      local v = {
        success = true,
        data = { numbers = { { piv_num_id = "vzPA1", tags = { "support" }, auto_renew = false, cost = 4.25 } },
                 pagination = { total = 1, limit = 10, offset = 0 } },
      }
      assert.same(v, json.decode(json.encode(v)))
    end)

    it("writes large integral floats exactly", function()
      assert.equal("[9007199254740992,123456789012345]", json.encode{ 2.0 ^ 53, 123456789012345 })
    end)

    it("marks decoded lists so that a decoded [] encodes back as []", function()
      local v = json.decode('{"a":[],"b":"[]","c":[ ],"d":[1,[]],"e":"x\\"[]"}')
      assert.is_true(json.is_array(v.a))
      assert.equal("[]", v.b)
      assert.equal("x\"[]", v.e)
      assert.equal("[]", json.encode(v.c))
      assert.equal("[1,[]]", json.encode(v.d))
      assert.equal("[]", json.encode(json.decode("[]")))
      assert.equal("[]", json.encode(json.decode(" [ ] ")))
    end)
  end)
end)
