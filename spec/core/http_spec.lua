-- The core transport and server through the public surface: real sockets
-- on 127.0.0.1, our own server as the peer.
local pivday = require "pivday"
local tcp = require "pivday.tcp"
local helper = require "helper"
local t = helper.t

local function echo_server(opts)
  opts = opts or {}
  opts.handler = opts.handler or function(req)
    if req.path == "/sleep" then
      pivday.sleep(tonumber(pivday.http.parse_query(req.query).s) or 1)
      return 200, {}, "slept"
    end
    return 200, { ["content-type"] = "text/plain", ["x-method"] = req.method },
      req.method == "POST" and req.body or req.path .. "?" .. req.query
  end
  return assert(pivday.http.server(opts))
end

describe("pivday.http", function()
  local srv
  before_each(function() srv = echo_server() end)
  after_each(function() srv:close() end)

  it("answers a GET with status, lower-cased headers and body", function()
    local res = assert(pivday.http.request{ url = srv.url .. "/a/b?x=1" })
    assert.equal(200, res.status)
    assert.equal("/a/b?x=1", res.body)
    assert.equal("GET", res.headers["x-method"])
    assert.equal("text/plain", res.headers["content-type"])
  end)

  it("completes 1000 concurrent requests from 1000 coroutines with the right bodies", function()
    local got, bad = 0, {}
    pivday.run(function()
      for i = 1, 1000 do
        pivday.spawn(function()
          local res, err = pivday.http.request{ url = srv.url .. "/n/" .. i, timeout = t(30) }
          if res and res.body == "/n/" .. i .. "?" then
            got = got + 1
          else
            bad[#bad + 1] = tostring(err or res.body)
          end
        end)
      end
    end)
    assert.same({}, bad)
    assert.equal(1000, got)
  end)

  it("round-trips a 5 MB body", function()
    srv:close()
    srv = echo_server{ max_body = 8 * 1024 * 1024 }
    local body = ("0123456789abcdef"):rep(5 * 1024 * 1024 // 16)
    local res = assert(pivday.http.request{ method = "POST", url = srv.url .. "/echo", body = body, timeout = t(30) })
    assert.equal(200, res.status)
    assert.equal(#body, #res.body)
    assert.is_true(res.body == body)
  end)

  it("times a request out and the loop goes on", function()
    local res, err = pivday.http.request{ url = srv.url .. "/sleep?s=2", timeout = 0.2 }
    assert.is_nil(res)
    assert.equal("timeout", err.kind)
    assert.equal("TIMEOUT", err.code)
    assert.is_true(pivday.Error.is(err))
    -- still working afterwards
    assert.equal(200, assert(pivday.http.request{ url = srv.url .. "/after" }).status)
  end)

  it("reports a refused connection as a transport error", function()
    local probe = echo_server()
    local port = probe.port
    probe:close()
    local res, err = pivday.http.request{ url = ("http://127.0.0.1:%d/"):format(port), timeout = t(5) }
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.equal("COULDNT_CONNECT", err.code)
    assert.is_false(err.sent)
    assert.matches("^COULDNT_CONNECT: ", tostring(err))
  end)

  it("cancels an in-flight request through pivday.timeout", function()
    local before = pivday.now()
    local res, err = pivday.timeout(0.2, pivday.http.request, { url = srv.url .. "/sleep?s=3" })
    assert.is_nil(res)
    assert.equal("TIMEOUT", err.code)
    assert.is_true(pivday.now() - before < t(2))
  end)

  it("marks a POST cancelled in flight as outcome_unknown", function()
    local res, err = pivday.timeout(0.2, pivday.http.request,
      { method = "POST", url = srv.url .. "/sleep?s=3", body = "x" })
    assert.is_nil(res)
    assert.equal("TIMEOUT", err.code)
    assert.is_true(err.outcome_unknown)
    local _, gerr = pivday.timeout(0.2, pivday.http.request, { url = srv.url .. "/sleep?s=3" })
    assert.is_nil(gerr.outcome_unknown)
  end)

  it("cancels a task waiting on a request, and its wait raises CANCELLED", function()
    local caught
    pivday.run(function()
      local task = pivday.spawn(function()
        local ok, e = pcall(pivday.http.request, { url = srv.url .. "/sleep?s=3" })
        caught = not ok and e
      end)
      pivday.sleep(0.1)
      task:cancel()
    end)
    assert.equal("CANCELLED", caught.code)
    assert.equal("cancelled", caught.kind)
  end)

  it("cancels a request before it leaves: the server never sees it, and the client goes on", function()
    local hits = 0
    srv:close()
    srv = echo_server{ handler = function() hits = hits + 1 return 200, {}, "ok" end }
    local caught
    pivday.run(function()
      local task = pivday.spawn(function()
        local ok, e = pcall(pivday.http.request, { method = "POST", url = srv.url .. "/x", body = "b" })
        caught = not ok and e
      end)
      -- Run right after `task` sent, in the same loop turn: the request
      -- starts on the next turn, so it is cancelled before it leaves.
      pivday.spawn(function() task:cancel() end)
      pivday.sleep(0.1)
    end)
    assert.equal("CANCELLED", caught.code)
    assert.equal(0, hits)
    assert.equal(200, assert(pivday.http.request{ url = srv.url .. "/after" }).status)
    assert.equal(1, hits)
  end)

  it("answers an oversize body with 413 and keeps serving", function()
    srv:close()
    srv = echo_server{ max_body = 1024 }
    local res = assert(pivday.http.request{ method = "POST", url = srv.url .. "/big", body = ("x"):rep(4096) })
    assert.equal(413, res.status)
    assert.equal(200, assert(pivday.http.request{ url = srv.url .. "/ok" }).status)
  end)

  it("answers oversize headers with 431 and keeps serving", function()
    srv:close()
    srv = echo_server{ max_header = 2048 }
    local res = assert(pivday.http.request{ url = srv.url .. "/h", headers = { ["x-big"] = ("y"):rep(8192) } })
    assert.equal(431, res.status)
    assert.equal(200, assert(pivday.http.request{ url = srv.url .. "/ok" }).status)
  end)

  it("answers garbage with 400, closes, and serves the next client", function()
    local c = assert(tcp.connect("127.0.0.1", srv.port, t(5)))
    c:send("\1\2\3 NOT HTTP AT ALL\r\n\r\n")
    local got, closed = c:read_all(t(5))
    c:close()
    assert.matches("^HTTP/1%.1 400", got)
    assert.is_true(closed)
    assert.equal(200, assert(pivday.http.request{ url = srv.url .. "/ok" }).status)
  end)

  it("answers pipelined requests in order", function()
    local c = assert(tcp.connect("127.0.0.1", srv.port, t(5)))
    c:send("GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local got = c:read_all(t(5))
    c:close()
    local a, b, d = got:find("/one?", 1, true), got:find("/two?", 1, true), got:find("/three?", 1, true)
    assert.truthy(a and b and d)
    assert.is_true(a < b and b < d)
  end)

  it("disconnects a client that never finishes its headers", function()
    srv:close()
    srv = echo_server{ header_timeout = 0.3 }
    local c = assert(tcp.connect("127.0.0.1", srv.port, t(5)))
    c:send("GET /slow HTTP/1.1\r\nHost: x\r\n")
    local started = pivday.now()
    local _, closed = c:read_all(t(5))
    c:close()
    assert.is_true(closed)
    assert.is_true(pivday.now() - started < t(3))
    assert.equal(200, assert(pivday.http.request{ url = srv.url .. "/ok" }).status)
  end)

  it("lets a handler answer after async work, and DROP close without answering", function()
    srv:close()
    srv = echo_server{ handler = function(req)
      if req.path == "/drop" then return pivday.http.DROP end
      pivday.sleep(0.05)
      return 201, { ["x-late"] = 1 }, "late"
    end }
    local res = assert(pivday.http.request{ url = srv.url .. "/x" })
    assert.equal(201, res.status)
    assert.equal("1", res.headers["x-late"])
    assert.equal("late", res.body)
    local none, err = pivday.http.request{ url = srv.url .. "/drop", timeout = t(5) }
    assert.is_nil(none)
    assert.equal("transport", err.kind)
  end)

  it("turns a handler error into a 500 and keeps serving", function()
    srv:close()
    local reported
    srv = echo_server{
      handler = function() error("boom") end,
      on_error = function(e) reported = e end,
    }
    local res = assert(pivday.http.request{ url = srv.url .. "/" })
    assert.equal(500, res.status)
    assert.matches("boom", reported)
    res = assert(pivday.http.request{ url = srv.url .. "/" })
    assert.equal(500, res.status)
  end)

  it("reuses the connection for sequential requests", function()
    local peers = {}
    srv:close()
    srv = echo_server{ handler = function(req)
      peers[req.headers["x-n"]] = true
      return 200, {}, tostring(srv:connections())
    end }
    for i = 1, 5 do
      local res = assert(pivday.http.request{ url = srv.url .. "/", headers = { ["x-n"] = i } })
      assert.equal("1", res.body)
    end
  end)

  it("raises at the caller's line on misuse", function()
    assert.has_error(function() pivday.http.request("http://x") end,
      "bad argument #1 to 'request' (table expected, got string)")
    assert.has_error(function() pivday.http.server{} end)
  end)
end)

-- The server in another process, timing what reaches it by its own clock:
-- how the client's requests leave can only be seen from outside. /hold
-- answers once `n` holds arrived, `delay` s later; /next is timed.
local HOLD_SERVER = [[
local pivday = require "pivday"
local n, delay = tonumber(arg[1]), tonumber(arg[2])
local held, quit, times = 0, false, {}
pivday.run(function()
  local srv = assert(pivday.http.server{ handler = function(req)
    if req.path == "/hold" then
      held = held + 1
      while held < n do pivday.sleep(0.002) end
      pivday.sleep(delay)
    elseif req.path == "/next" then
      times[#times + 1] = pivday.now()
    elseif req.path == "/log" then
      return 200, {}, table.concat(times, " ")
    elseif req.path == "/quit" then
      quit = true
    end
    return 200, {}, "ok"
  end })
  io.stdout:write("url=", srv.url, "\n")
  io.stdout:flush()
  while not quit do pivday.sleep(0.01) end
  pivday.sleep(0.05)
  srv:close()
end)
]]

describe("pivday.http client, seen from another process", function()
  it("sends what one loop turn's callbacks ask for together, after the turn, not between them", function()
    -- Three answers arrive on warm connections while the loop is blocked,
    -- so one turn takes them all from the poll; each callback spends
    -- `busy` CPU, then sends again. Those three requests must leave
    -- together: started between the callbacks, they reach the server
    -- `busy` apart.
    local n, busy = 3, t(0.04)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(HOLD_SERVER)
    f:close()
    local proc = assert(io.popen(("%s %s %d %f"):format(helper.bin, script, n, t(0.1)), "r"))
    local url = assert(proc:read("l"), "the server printed nothing"):match("^url=(.*)$")
    assert.is_string(url)
    local function spin(s) local t0 = os.clock() while os.clock() - t0 < s do end end
    local warm, holding, fine = 0, 0, 0
    pivday.run(function()
      for _ = 1, n do
        pivday.spawn(function()
          assert(pivday.http.request{ url = url .. "/warm", timeout = t(10) })
          warm = warm + 1
          while warm < n do pivday.sleep(0.005) end
          -- A new connection's own libcurl timer (happy eyeballs, 200 ms)
          -- would read the answers instead of the poll.
          pivday.sleep(0.3)
          holding = holding + 1
          assert(pivday.http.request{ url = url .. "/hold", timeout = t(10) })
          spin(busy)
          assert(pivday.http.request{ url = url .. "/next", timeout = t(10) })
          fine = fine + 1
        end)
      end
      while holding < n do pivday.sleep(0.005) end
      pivday.sleep(t(0.05))
      spin(t(0.2)) -- the server answers meanwhile, t(0.1) after the last hold
    end)
    local log = assert(pivday.http.request{ url = url .. "/log" }).body
    pivday.http.request{ url = url .. "/quit" }
    proc:close()
    os.remove(script)
    assert.equal(n, fine)
    local times = {}
    for v in log:gmatch("%S+") do times[#times + 1] = tonumber(v) end
    assert.equal(n, #times)
    local spread = math.max(table.unpack(times)) - math.min(table.unpack(times))
    assert.is_true(spread < busy / 2, ("the requests reached the server %.1f ms apart (each callback ran %.1f ms)")
      :format(spread * 1e3, busy * 1e3))
  end)
end)

describe("pivday.http helpers", function()
  it("parses and builds query strings", function()
    assert.same({ a = "1", b = "x y", c = "é&" }, pivday.http.parse_query("a=1&b=x+y&c=%C3%A9%26"))
    assert.equal("a=1&b=x%20y&c=true", pivday.http.build_query{ a = 1, b = "x y", c = true })
  end)
end)
