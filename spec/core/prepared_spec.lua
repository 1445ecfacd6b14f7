-- pivday.http's prepared requests (the API client's transport): one C pass
-- from the answer to the envelope's data, over a real socket to our own
-- server.
local pivday = require "pivday"
local json = require "pivday.json"
local http = pivday.http
local helper = require "helper"
local t = helper.t

describe("pivday.http.send_prepared", function()
  local srv, seen
  local answers = {
    ["/data"] = { 200, '{"success":true,"data":{"id":7,"gone":null,"deep":{"x":null,"y":1},'
      .. '"list":[1,null,3],"empty":[],"big":12345678901234,"f":1.5,"s":"a\\u00e9\\n"},"extra":1}' },
    ["/list"] = { 200, '{"data":[{"a":null}],"success":true}' },
    ["/no-data"] = { 200, '{"success":true,"numbers":[1]}' },
    ["/null-data"] = { 200, '{"success":true,"data":null}' },
    ["/flag-false"] = { 200, '{"success":false,"data":{}}' },
    ["/flag-string"] = { 200, '{"success":"true","data":{}}' },
    ["/error"] = { 402, '{"success":false,"error":{"code":"INSUFFICIENT_BALANCE","message":"no"}}' },
    ["/not-json"] = { 200, "<html>" },
    ["/trailing"] = { 200, '{"success":true,"data":{}} x' },
    ["/escaped-key"] = { 200, '{"succ\\u0065ss":true,"d\\u0061ta":{"k":1}}' },
  }
  setup(function()
    -- What pivday.client sets: the piv.day envelope.
    http.set_envelope { flag = "success", member = "data", list_mt = getmetatable(json.array()) }
  end)
  before_each(function()
    seen = {}
    srv = assert(http.server{ handler = function(req)
      seen[#seen + 1] = req
      if req.path == "/slow" then pivday.sleep(5) end
      local a = answers[req.path] or { 404, "{}" }
      return a[1], { ["content-type"] = "application/json", ["x-request-id"] = "rq-1" }, a[2]
    end })
  end)
  after_each(function() srv:close() end)

  local conf
  local function send(path, method, body)
    conf = conf or http.prepare { headers = { Authorization = "Bearer k", Accept = "application/json" },
      connect_timeout = t(5) }
    return http.send_prepared(conf, method or "GET", srv.url .. path, body, t(5))
  end

  it("gives an envelope's data decoded, nulls left out of objects, lists kept whole", function()
    local data, meta = send("/data")
    assert.same({ id = 7, deep = { y = 1 }, list = { 1, json.null, 3 }, empty = {},
      big = 12345678901234, f = 1.5, s = "a\u{e9}\n" }, data)
    assert.equal("integer", math.type(data.id))
    assert.equal("integer", math.type(data.big))
    assert.is_true(json.is_array(data.empty))
    assert.equal("[]", json.encode(data.empty))
    local status, elapsed, headers = http.meta_of(meta)
    assert.equal(200, status)
    assert.is_true(elapsed > 0 and elapsed < t(5))
    assert.equal("rq-1", headers["x-request-id"])
    assert.equal("Bearer k", seen[1].headers.authorization)
    assert.equal("application/json", seen[1].headers.accept)
  end)

  it("unwraps a list member, whatever the member order", function()
    local data = send("/list")
    assert.same({ {} }, data)
  end)

  it("leaves every other answer to the caller as a response", function()
    for _, path in ipairs { "/no-data", "/null-data", "/flag-false", "/flag-string", "/error",
        "/not-json", "/trailing", "/missing" } do
      local data, res = send(path)
      assert.is_false(data, path)
      assert.equal(answers[path] and answers[path][1] or 404, res.status, path)
      assert.equal(answers[path] and answers[path][2] or "{}", res.body, path)
      assert.equal("rq-1", res.headers["x-request-id"], path)
    end
  end)

  it("compares keys after their escapes", function()
    assert.same({ k = 1 }, (send("/escaped-key")))
  end)

  it("sends a body with the method given", function()
    local data, res = send("/echo", "POST", '{"a":1}')
    assert.is_false(data)
    assert.equal(404, res.status)
    assert.equal("POST", seen[1].method)
    assert.equal('{"a":1}', seen[1].body)
  end)

  it("refuses header names that are not tokens and values that could smuggle a line", function()
    assert.has_error(function() http.prepare { headers = { ["bad name"] = "x" } } end,
      "headers: a name is not a token or a value holds CR, LF or NUL")
    assert.has_error(function() http.prepare { headers = { ["X-A"] = "a\r\nX-B: b" } } end,
      "headers: a name is not a token or a value holds CR, LF or NUL")
  end)

  it("keeps nothing of one request in the next on the same connection", function()
    -- Transfers and their handles are pooled: methods, bodies, headers and
    -- timeouts must not leak from one request into another.
    local other = http.prepare { headers = { ["X-Other"] = "1" } }
    for _ = 1, 3 do
      send("/a", "POST", "{}")
      http.send_prepared(other, "GET", srv.url .. "/b", nil, t(5))
      assert(http.request { method = "PUT", url = srv.url .. "/c", body = "p", headers = { ["X-Put"] = "y" } })
      assert(http.request { method = "HEAD", url = srv.url .. "/d" })
      send("/e")
    end
    local got = {}
    for i, r in ipairs(seen) do
      got[i] = table.concat({ r.method, r.path, r.body, tostring(r.headers.authorization),
        tostring(r.headers["x-other"]), tostring(r.headers["x-put"]), tostring(r.headers["content-length"]) }, " ")
    end
    local want = {}
    for _ = 1, 3 do
      for _, w in ipairs {
        "POST /a {} Bearer k nil nil 2", "GET /b  nil 1 nil nil", "PUT /c p nil nil y 1",
        "HEAD /d  nil nil nil nil", "GET /e  Bearer k nil nil nil",
      } do want[#want + 1] = w end
    end
    assert.same(want, got)
  end)

  it("sends each request to its own URL, query included, and refuses a malformed one as libcurl does", function()
    for i = 1, 3 do
      send("/q?i=" .. i)
      send("/q?i=" .. i) -- the same URL again: the transfer's parsed one
    end
    local got = {}
    for i, r in ipairs(seen) do got[i] = r.path .. "?" .. r.query end
    assert.same({ "/q?i=1", "/q?i=1", "/q?i=2", "/q?i=2", "/q?i=3", "/q?i=3" }, got)
    local data, err = http.send_prepared(conf, "GET", "http://127.0.0.1:" .. srv.port .. "/bad url", nil, t(5))
    assert.is_nil(data)
    assert.equal("transport", err.kind)
    assert.equal("URL_MALFORMAT", err.code)
    assert.is_false(err.sent)
    assert.is_false((send("/after")))   -- and the next request is fine
    assert.equal("/after", seen[#seen].path)
  end)

  it("reports a refused connection as a transport error", function()
    local port = srv.port
    srv:close()
    local data, err = http.send_prepared(http.prepare {}, "GET", ("http://127.0.0.1:%d/x"):format(port), nil, t(5))
    assert.is_nil(data)
    assert.equal("transport", err.kind)
    assert.is_false(err.sent)
  end)

  it("marks a POST cancelled in flight as outcome unknown, a GET not", function()
    local function cancelled(method)
      local data, err = pivday.run(function()
        return pivday.timeout(t(0.2), send, "/slow", method, method == "POST" and "{}" or nil)
      end)
      assert.is_nil(data)
      return err
    end
    local post = cancelled("POST")
    assert.equal("timeout", post.kind)
    assert.is_true(post.outcome_unknown)
    assert.is_nil(cancelled("GET").outcome_unknown)
  end)
end)
