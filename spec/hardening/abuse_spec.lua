-- Server-side abuse (issue 8): a webhook listener with a journal, at its
-- default limits, while on 127.0.0.1
--   * 20 clients trickle their request heads a byte at a time,
--   * a client announces a body over the limit, another streams a chunked
--     one past it,
--   * a client opens 1000 connections and sends nothing,
--   * a client sends valid requests followed by pipelined garbage, again
--     and again,
-- a patient sender delivers a valid event every 50 ms: every delivery must
-- be acknowledged (200) within 5 s, and handled once. The abusers must get
-- what the README promises: 408 or a cut for the tricklers, 413 for the
-- bodies, 400 and a close for the garbage, a close for the idle ones.
local helper = require "helper"
local pivday = require "pivday"
local json = require "pivday.json"
local tcp = require "pivday.tcp"

local T = helper.t

describe("hardening: the webhook listener under abuse #abuse", function()
  local dir, hooks

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. helper.q(dir)))
  end)

  teardown(function()
    if hooks then hooks:close() end
    os.execute("rm -rf " .. helper.q(dir))
  end)

  it("keeps acknowledging valid deliveries within 5 s throughout", function()
    -- The defaults except header_timeout: 10 s would make the spec 10 s
    -- longer without telling more (the cut is what is checked).
    hooks = assert(pivday.webhooks { port = 0, journal = dir .. "/events.jsonl", header_timeout = T(3) })
    local handled, seen_twice = {}, 0
    hooks:on("abuse.check", function(ev)
      local k = ev.data.n
      if handled[k] then seen_twice = seen_twice + 1 end
      handled[k] = true
    end)
    local port, path = hooks.port, hooks.path
    local head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"):format(path)

    -- How many idle connections this process may open (the test holds
    -- the client ends, the listener the server ends, in one process).
    local soft = tonumber((helper.sh("ulimit -n"))) or 1024
    local N_IDLE = math.min(1000, (soft - 300) // 2)

    local running = true
    local report = {}
    local deliveries, slow, failed, worst = 0, 0, {}, 0

    local function sender()
      local n = 0
      while running do
        n = n + 1
        local body = json.encode { event_type = "abuse.check", timestamp = "2026-01-01T00:00:00Z", data = { n = n } }
        local t0 = pivday.now()
        local res, err = pivday.http.request { method = "POST", url = hooks.local_url, body = body,
          headers = { ["content-type"] = "application/json" }, timeout = T(5) }
        local took = pivday.now() - t0
        worst = math.max(worst, took)
        deliveries = deliveries + 1
        if not res or res.status ~= 200 then
          failed[#failed + 1] = ("#%d: %s"):format(n, res and res.status or tostring(err))
        elseif took > T(5) then
          slow = slow + 1
        end
        pivday.sleep(0.05)
      end
      return n
    end

    local function trickler(i)
      local c = assert(tcp.connect("127.0.0.1", port, T(5)))
      local t0 = pivday.now()
      local msg = head .. "X-Slow: "
      local k = 1
      -- One byte every 0.2 s: never a whole head before the header timeout.
      while not c.eof and pivday.now() - t0 < T(8) do
        if k <= #msg then c:send(msg:sub(k, k)) else c:send("a") end
        k = k + 1
        local s = c:receive(0.2)
        if s then report["trickle" .. i] = s end
      end
      local cut_after = pivday.now() - t0
      c:close()
      return cut_after
    end

    local function oversize()
      local out = {}
      -- Announced: refused before a byte of the body is read.
      local c = assert(tcp.connect("127.0.0.1", port, T(5)))
      c:send(head .. "Content-Length: 10485760\r\n\r\n" .. ("x"):rep(1000))
      out.announced = c:read_all(T(5))
      c:close()
      -- Chunked: cut when it passes the limit.
      c = assert(tcp.connect("127.0.0.1", port, T(5)))
      c:send(head .. "Transfer-Encoding: chunked\r\n\r\n")
      local chunk = ("10000\r\n%s\r\n"):format(("y"):rep(0x10000))
      for _ = 1, 8 do
        if c.eof then break end
        c:send(chunk)
        pivday.sleep(0.01)
      end
      out.chunked = c:read_all(T(5))
      c:close()
      return out
    end

    local function idler()
      local conns, opened = {}, 0
      for i = 1, N_IDLE do
        local c = tcp.connect("127.0.0.1", port, T(5))
        if c then conns[i] = c opened = opened + 1 end
      end
      -- Hold them; the listener cuts connections that never send a head.
      local t0 = pivday.now()
      local closed = 0
      while pivday.now() - t0 < T(8) do
        closed = 0
        for _, c in pairs(conns) do if c.eof then closed = closed + 1 end end
        if closed == opened then break end
        pivday.sleep(0.1)
      end
      for _, c in pairs(conns) do c:close() end
      return opened, closed
    end

    local function garbage()
      local answers = {}
      for i = 1, 30 do
        local c = assert(tcp.connect("127.0.0.1", port, T(5)))
        local ok_req = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        c:send(ok_req .. ok_req .. "\1\2GARBAGE \0\r\n\r\n" .. ("\255"):rep(i * 100) .. ok_req)
        answers[i] = c:read_all(T(5))
        c:close()
      end
      return answers
    end

    local results
    pivday.run(function()
      local s = pivday.spawn(sender)
      pivday.sleep(0.2)
      local fns = {}
      for i = 1, 20 do fns[#fns + 1] = function() return trickler(i) end end
      fns[#fns + 1] = oversize
      fns[#fns + 1] = idler
      fns[#fns + 1] = garbage
      results = { pivday.gather(table.unpack(fns)) }
      pivday.sleep(0.5)
      running = false
      s:join()
    end)

    -- The patient sender: everything acknowledged, in time, handled once.
    assert.are.same({}, failed)
    assert.equal(0, slow)
    assert.is_true(deliveries >= 20, "only " .. deliveries .. " deliveries")
    local n_handled = 0
    pivday.run(function()
      local deadline = pivday.now() + T(5)
      while pivday.now() < deadline do
        n_handled = 0
        for _ in pairs(handled) do n_handled = n_handled + 1 end
        if n_handled == deliveries then break end
        pivday.sleep(0.05)
      end
    end)
    assert.equal(deliveries, n_handled)
    assert.equal(0, seen_twice)

    -- Tricklers: cut at the header timeout (with some slack), told 408.
    for i = 1, 20 do
      local cut_after = results[i][1]
      assert.is_true(cut_after < T(3) + 2, ("trickler %d held on for %.1f s"):format(i, cut_after))
      assert.is_truthy((report["trickle" .. i] or ""):match("^HTTP/1.1 408"), "trickler " .. i .. " not told 408")
    end
    local big = results[21][1]
    assert.is_truthy(big.announced:match("^HTTP/1.1 413"), "announced oversize body: " .. big.announced:sub(1, 40))
    assert.is_truthy(big.chunked:match("^HTTP/1.1 413"), "chunked oversize body: " .. big.chunked:sub(1, 40))
    local opened, closed = results[22][1], results[22][2]
    assert.equal(N_IDLE, opened)
    assert.equal(opened, closed)
    for i, a in ipairs(results[23][1]) do
      local _, n404 = a:gsub("HTTP/1.1 404", "")
      assert.equal(2, n404, "garbage #" .. i .. ": the valid requests before it are answered")
      assert.is_truthy(a:match("HTTP/1.1 400[^\n]*\r\n.*$"), "garbage #" .. i .. " not answered 400")
    end
    print(("\nabuse: %d deliveries acknowledged (worst %.3f s) beside 20 tricklers, 2 oversize bodies, "
      .. "%d idle connections, 30 garbage pipelines; listener connections now %d")
      :format(deliveries, worst, opened, hooks:connections()))
  end)
end)
