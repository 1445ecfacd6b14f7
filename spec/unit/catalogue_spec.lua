-- The catalogue against the machine-readable API description it is taken
-- from (../shared/api/endpoints.json, relative to the repository root).
local catalogue = require "pivday.catalogue"
local json = require "pivday.json"

local SOURCE = "../shared/api/endpoints.json"

local function load_source()
  local f = io.open(SOURCE, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return assert(json.decode(text))
end

local function nn(v) -- JSON null -> nil
  if v == json.null then return nil end
  return v
end

-- Expected catalogue field for a JSON field description.
local function expected_field(f, where)
  local t, items = f.type, nil
  if t:sub(-2) == "[]" then t, items = "array", t:sub(1, -3) end
  local req = nn(f.required)
  local out = { name = f.name, type = t, items = items,
                required = (req == true or req == "conditional") and req or false }
  if where == "query" then
    out.default, out.max, out.enum = nn(f.default), nn(f.max), nn(f.enum)
  end
  local c = nn(f.constraints) or {}
  for _, k in ipairs { "min", "max", "min_length", "max_length", "min_items", "enum", "default", "format" } do
    if nn(c[k]) ~= nil then out[k] = c[k] end
  end
  for _, k in ipairs { "only_when", "required_when", "forbidden_when" } do
    if c[k] then
      local name, v = c[k]:match("^%s*(%S+)%s*==%s*(%S+)%s*$")
      if v == "true" then v = true elseif v == "false" then v = false end
      out[k] = { [name] = v }
    end
  end
  return out
end

describe("pivday.catalogue", function()
  local src = load_source()

  it("has the base URL and 38 endpoints with unique ids", function()
    assert.equal("https://app.piv.day/api/v1", catalogue.base_url)
    assert.equal(38, #catalogue.endpoints)
    local seen = {}
    for _, ep in ipairs(catalogue.endpoints) do
      assert.is_nil(seen[ep.id], ep.id)
      seen[ep.id] = true
      assert.equal(ep, catalogue.by_id(ep.id))
    end
  end)

  it("marks exactly the charging calls", function()
    local charging = {}
    for _, ep in ipairs(catalogue.endpoints) do
      if ep.charges then charging[#charging + 1] = ep.id end
    end
    table.sort(charging)
    assert.same({ "domains.register", "domains.renew", "numbers.purchase", "numbers.renew",
      "numbers.restore", "numbers.send_sms", "numbers.verify", "proxy.purchase",
      "proxy.renew", "proxy.restore", "whites.create" }, charging)
  end)

  it("describes the five paginated lists", function()
    local pages = {}
    for _, ep in ipairs(catalogue.endpoints) do
      if ep.page then pages[ep.id] = { ep.page.default, ep.page.max, ep.page.items, ep.page.iterator } end
    end
    assert.same({
      ["numbers.list"] = { 50, 200, "numbers", "numbers.each" },
      ["numbers.sms"] = { 50, 200, "messages", "numbers.each_sms" },
      ["proxy.orders"] = { 100, 500, "orders", "proxy.each_order" },
      ["domains.list"] = { 100, 500, "domains", "domains.each" },
      ["whites.list"] = { 100, 500, "whites", "whites.each" },
    }, pages)
  end)

  describe("route", function()
    local cases = {
      { "GET", "/numbers/countries", "numbers.countries", {} },
      { "GET", "/api/v1/numbers/abc", "numbers.get", { piv_num_id = "abc" } },
      { "POST", "/numbers/purchase", "numbers.purchase", {} },
      { "POST", "/numbers/restore", "numbers.restore", {} },
      { "PATCH", "/numbers/n1/auto-renewal", "numbers.set_auto_renew", { piv_num_id = "n1" } },
      { "GET", "/domains/search?q=x.com", "domains.search", {} },
      { "GET", "/domains", "domains.list", {} },
      { "POST", "/domains", "domains.register", {} },
      { "GET", "/domains/queue/q1", "domains.queue", { id = "q1" } },
      { "POST", "/domains/d1/auto-renew", "domains.set_auto_renew", { id = "d1" } },
      { "PUT", "/domains/d1/dns/r%2F1", "domains.update_dns", { id = "d1", recordId = "r/1" } },
      { "GET", "/whites/tiers", "whites.tiers", {} },
      { "GET", "/whites/w1/download", "whites.download", { id = "w1" } },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " " .. c[2], function()
        local ep, params = catalogue.route(c[1], c[2])
        assert.equal(c[3], ep and ep.id)
        assert.same(c[4], params)
      end)
    end

    it("reports the allowed methods for a known path", function()
      local ep, allowed = catalogue.route("DELETE", "/numbers/n1")
      assert.is_nil(ep)
      assert.same({ "GET", "PATCH" }, allowed)
    end)

    it("returns nil for an unknown path", function()
      assert.is_nil((catalogue.route("GET", "/nope")))
      assert.is_nil(select(2, catalogue.route("GET", "/nope")))
    end)

    it("round-trips every path through expand", function()
      for _, ep in ipairs(catalogue.endpoints) do
        local values, want = {}, {}
        for i, p in ipairs(ep.params) do values[i] = "v" .. i .. "/x"; want[p] = values[i] end
        local got, params = catalogue.route(ep.method, catalogue.expand(ep, values))
        assert.equal(ep.id, got and got.id)
        assert.same(want, params)
      end
    end)
  end)

  describe("against endpoints.json", function()
    if not src then
      pending("endpoints.json not found at " .. SOURCE .. " (run busted from the repository root)")
      return
    end

    it("has the same base URL and endpoint ids in the same order", function()
      assert.equal(src.base_url, catalogue.base_url)
      local want, got = {}, {}
      for i, e in ipairs(src.endpoints) do want[i] = e.id end
      for i, e in ipairs(catalogue.endpoints) do got[i] = e.id end
      assert.same(want, got)
    end)

    for _, e in ipairs(src and src.endpoints or {}) do
      it(e.id, function()
        local ep = assert(catalogue.by_id(e.id))
        assert.equal(e.method, ep.method)
        assert.equal(e.path, ep.path)
        assert.equal(catalogue.base_path .. e.path, e.full_path)
        assert.same(e.path_params, ep.params)
        assert.equal(nn(e.response_wrapped_in_data), ep.wrapped)
        assert.same(e.async_events, ep.events)
        local codes = {}
        for i, x in ipairs(e.errors) do
          codes[i] = x.code
          assert.equal(x.status, catalogue.errors[x.code], x.code)
        end
        assert.same(codes, ep.errors)
        for _, where in ipairs { "query", "body" } do
          local want = {}
          for i, f in ipairs(e[where]) do want[i] = expected_field(f, where) end
          local got = {}
          for i, f in ipairs(ep[where]) do
            got[i] = {}
            for k, v in pairs(f) do
              if k ~= "examples" then got[i][k] = v end
            end
          end
          assert.same(want, got)
        end
        local src_kind = ({ table = "table", none = "none", curl_example_only = "curl" })[e.body_source]
        assert.equal(src_kind, ep.body_source)
      end)
    end

    it("lists every documented error code with its status", function()
      local want = {}
      for _, g in ipairs(src.global_errors) do want[g.code] = g.status end
      for _, e in ipairs(src.endpoints) do
        for _, x in ipairs(e.errors) do want[x.code] = x.status end
      end
      assert.same(want, catalogue.errors)
    end)

    it("has every webhook event with its fields", function()
      local n = 0
      for _, ev in ipairs(src.events) do
        n = n + 1
        local mine = catalogue.events[ev.event_type]
        assert.is_table(mine, ev.event_type)
        local fields = {}
        for i, f in ipairs(ev.fields) do fields[i] = f.name end
        assert.same(fields, mine.fields)
        assert.equal(ev.triggered_by.kind, mine.kind)
        assert.same(ev.triggered_by.endpoints, mine.endpoints)
      end
      local mine = 0
      for _ in pairs(catalogue.events) do mine = mine + 1 end
      assert.equal(n, mine)
    end)
  end)
end)
