-- pivday.core's Hook and Window, the listener's C request path, through
-- real sockets on 127.0.0.1: what each request is answered, what a turn
-- hands to Lua, and the journal's hold on acknowledgements.
local pivday = require "pivday"
local core = require "pivday.core"
local json = require "pivday.json"
local dedupe = require "pivday.webhooks.dedupe"
local helper = require "helper"
local t = helper.t

local PATH = "/hooks/0123456789abcdef0123456789abcdef"
local LIST_MT = getmetatable(json.array())
local EVENT = '{"event_type":"sms.received","timestamp":"2026-05-22T12:34:56Z","data":{"code":"1"}}'

local open = {}
-- A Hook on a server; `batches` counts its on_batch calls.
local function serve(opts)
  opts = opts or {}
  local st = { batches = 0 }
  st.hook = core.hook({ path = PATH, window = core.dedupe_window(60), list_mt = LIST_MT,
    journal = opts.journal, next_id = opts.next_id, allow = opts.allow },
    function() st.batches = st.batches + 1 end)
  st.srv = assert(core.server({ port = 0, max_body = 1024, hook = st.hook }))
  st.base = "http://127.0.0.1:" .. st.srv:port()
  open[#open + 1] = st
  return st
end

after_each(function()
  for _, st in ipairs(open) do
    st.srv:close()
    st.hook:close()
  end
  open = {}
end)

local function post(url, body, method)
  return assert(pivday.http.request{ method = method or "POST", url = url, body = body,
    headers = { ["content-type"] = "application/json" }, timeout = t(10) })
end

-- The results of a task that ran to completion.
local function join(task)
  return select(2, assert(task:join()))
end

-- Drives the loop until cond() holds (at most 5 s).
local function eventually(cond)
  local deadline = pivday.now() + t(5)
  while not cond() and pivday.now() < deadline do pivday.sleep(0.005) end
  return cond()
end

describe("pivday.core Hook", function()
  it("answers 200 at once without a journal and hands the events over once per turn", function()
    local st = serve()
    local res = post(st.base .. PATH, EVENT)
    assert.equal(200, res.status)
    assert.equal("ok\n", res.body)
    assert.is_true(eventually(function() return st.batches > 0 end))
    local events, n, lines, nacks = st.hook:take()
    assert.equal(1, n)
    assert.is_nil(lines)
    assert.equal(0, nacks)
    local ev = events[1]
    assert.equal("sms.received", ev.event_type)
    assert.same({ code = "1" }, ev.data)
    assert.equal(1, ev.id)
    assert.equal(EVENT, ev.raw)
    assert.is_true(math.abs(ev.received_at - os.time()) <= 2)
    -- the same event again: answered, counted, not handed over
    assert.equal(200, post(st.base .. PATH, EVENT).status)
    assert.same({ 1, 1, 0 }, { st.hook:counts() })
    local _, n2 = st.hook:take()
    assert.equal(0, n2)
  end)

  it("rejects what is not a delivery, with the reason", function()
    local st = serve()
    local function expect(status, body_pattern, res)
      assert.equal(status, res.status)
      if body_pattern then assert.matches(body_pattern, res.body) end
    end
    expect(404, "not found", post(st.base .. "/hooks/" .. ("0"):rep(32), EVENT))
    expect(404, nil, post(st.base .. PATH:sub(1, -2), EVENT))
    local get = post(st.base .. PATH, nil, "GET")
    expect(405, "POSTed", get)
    assert.equal("POST", get.headers.allow)
    expect(400, "empty body", post(st.base .. PATH, ""))
    expect(400, "not JSON: .* at byte 2", post(st.base .. PATH, "{nope"))
    expect(400, "no event_type", post(st.base .. PATH, "[1,2]"))
    expect(400, "not a JSON object", post(st.base .. PATH, '"x"'))
    expect(400, "no timestamp", post(st.base .. PATH, '{"event_type":"a","data":{}}'))
    expect(400, "data is not an object", post(st.base .. PATH, '{"event_type":"a","timestamp":"x","data":[1]}'))
    expect(413, nil, post(st.base .. PATH, ("x"):rep(2000)))
    assert.same({ 0, 0, 9 }, { st.hook:counts() })
  end)

  it("answers 403 to peers outside allow", function()
    local st = serve{ allow = { { bytes = "\10\0\0\0", bits = 8 } } }
    assert.equal(403, post(st.base .. PATH, EVENT).status)
    local ok = serve{ allow = { { bytes = "\127\0\0\0", bits = 8 } } }
    assert.equal(200, post(ok.base .. PATH, EVENT).status)
  end)

  it("keeps a body with line breaks on one line, as the journal does", function()
    local st = serve{ journal = true, next_id = 7 }
    local body = '{"event_type":"a","timestamp":"x",\r\n"data":{"text":"two\nlines"}}'
    local task = pivday.spawn(function() return post(st.base .. PATH, body) end)
    assert.is_true(eventually(function() return st.batches > 0 end))
    local events, n, lines = st.hook:take()
    assert.equal(1, n)
    assert.equal("two lines", events[1].data.text)
    assert.equal(7, events[1].id)
    assert.equal(('{"id":7,"at":%d,"event":%s}\n'):format(events[1].received_at,
      (body:gsub("[\r\n]", " "))), lines)
    st.hook:settle(true)
    assert.equal(200, join(task).status)
  end)

  it("with a journal, answers only once the batch is settled: 200, or 503 and forgets", function()
    local st = serve{ journal = true }
    local task = pivday.spawn(function() return post(st.base .. PATH, EVENT) end)
    assert.is_true(eventually(function() return st.batches > 0 end))
    assert.equal(1, st.hook:queued())
    local _, n, lines, nacks, next_id = st.hook:take()
    assert.equal(0, st.hook:queued())
    assert.equal(1, n)
    assert.equal(1, nacks)
    assert.equal(2, next_id)
    assert.matches('^{"id":1,"at":%d+,"event":' .. EVENT:gsub("%p", "%%%0") .. '}\n$', lines)
    pivday.sleep(0.05)
    assert.is_nil(task.done)
    st.hook:settle(false)
    local res = join(task)
    assert.equal(503, res.status)
    -- not acknowledged, so the retry is new, not a duplicate
    task = pivday.spawn(function() return post(st.base .. PATH, EVENT) end)
    assert.is_true(eventually(function() return select(1, st.hook:counts()) == 2 end))
    st.hook:take()
    st.hook:settle(true)
    assert.equal(200, join(task).status)
    assert.same({ 2, 0, 0 }, { st.hook:counts() })
  end)

  it("drops requests still owed an answer when closed", function()
    local st = serve{ journal = true }
    local task = pivday.spawn(function()
      return pivday.http.request{ method = "POST", url = st.base .. PATH, body = EVENT, timeout = t(5) }
    end)
    assert.is_true(eventually(function() return st.batches > 0 end))
    st.hook:close()
    local ok, res, err = task:join()
    assert.is_true(ok)
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.has_error(function() st.hook:take() end, "attempt to use a closed pivday.Hook")
  end)
end)

describe("pivday.core Window", function()
  local function key(i) return dedupe.key("t", "ts", { n = i }) end

  it("remembers keys for its seconds, latest arrival counting", function()
    local w = core.dedupe_window(10)
    assert.is_false(w:seen_or_add(key(1), 100))
    assert.is_true(w:seen_or_add(key(1), 109))
    assert.is_false(w:seen(key(1), 110))
    assert.equal(0, w:count())
    w:add(key(2), 200)
    w:add(key(2), 205)
    assert.is_true(w:seen(key(2), 214))
    w:forget(key(2))
    assert.is_false(w:seen(key(2), 206))
  end)

  it("holds at most cap keys, the oldest going first", function()
    local w = core.dedupe_window(1000, 100)
    for i = 1, 1000 do w:add(key(i), 1 + i // 10) end
    assert.equal(100, w:count())
    assert.is_false(w:seen(key(900), 200))
    assert.is_true(w:seen(key(901), 200))
    assert.is_true(w:seen(key(1000), 200))
  end)

  -- A model of the window in plain Lua: arrivals in order, each key's
  -- latest one, expiry and the cap popping the oldest first.
  local function model(seconds, cap)
    local m = { fifo = {}, head = 1, tail = 0, latest = {}, count = 0 }
    local function pop()
      local a = m.fifo[m.head]
      if m.latest[a.key] == m.head then m.latest[a.key] = nil; m.count = m.count - 1 end
      m.fifo[m.head] = nil
      m.head = m.head + 1
    end
    local function expire(now)
      while m.head <= m.tail and m.fifo[m.head].at <= now - seconds do pop() end
    end
    function m.seen(k, now)
      local s = m.latest[k]
      return s ~= nil and m.fifo[s].at > now - seconds
    end
    function m.add(k, now)
      expire(now)
      if m.tail - m.head + 1 == cap then pop() end
      m.tail = m.tail + 1
      m.fifo[m.tail] = { key = k, at = now }
      if not m.latest[k] then m.count = m.count + 1 end
      m.latest[k] = m.tail
    end
    function m.seen_and_expire(k, now)
      local seen = m.seen(k, now)
      if not seen then expire(now) end
      return seen
    end
    function m.forget(k)
      if m.latest[k] then m.latest[k] = nil; m.count = m.count - 1 end
    end
    return m
  end

  -- Keys whose first 4 bytes (the table's hash) collide, 0 among them,
  -- beside digests: long probe runs, moves on deletion, ring growth.
  local function keys(n, rand)
    local list = {}
    for i = 1, n do
      local head = i % 3 == 0 and string.pack("<I4", rand(0, 7) * 256) or
        string.pack("<I4", rand(0, 0x7fffffff) * 2 + rand(0, 1))
      local tail = {}
      for j = 1, 12 do tail[j] = string.char(rand(0, 255)) end
      list[i] = head .. table.concat(tail)
    end
    return list
  end

  it("answers as a plain model of it does, through collisions, the cap, expiry and forgetting", function()
    local prng = 12345
    local function rand(lo, hi)
      prng = (prng * 1103515245 + 12345) % 2147483648
      return lo + prng % (hi - lo + 1)
    end
    -- The third shape's arrivals quicken as they expire: its ring grows
    -- while its oldest arrival is not at the ring's start.
    for _, shape in ipairs({ { seconds = 30, cap = 64, keys = 200, every = function() return 9 end },
                             { seconds = 50, cap = 3000, keys = 5000, every = function() return 9 end },
                             { seconds = 20, cap = 100000, keys = 5000,
                               every = function(step) return step // 200 end } }) do
      local w, m = core.dedupe_window(shape.seconds, shape.cap), model(shape.seconds, shape.cap)
      local pool, now = keys(shape.keys, rand), 1000
      for step = 1, 20000 do
        now = now + (rand(0, shape.every(step)) == 0 and rand(0, 3) or 0)
        local k, op = pool[rand(1, #pool)], rand(1, 10)
        local what = ("step %d op %d cap %d"):format(step, op, shape.cap)
        if op <= 5 then
          assert.equal(m.seen(k, now), w:seen_or_add(k, now), what)
          if not m.seen(k, now) then m.add(k, now) end
        elseif op <= 7 then
          assert.equal(m.seen_and_expire(k, now), w:seen(k, now), what)
        elseif op <= 9 then
          w:add(k, now); m.add(k, now)
        else
          w:forget(k); m.forget(k)
        end
        assert.equal(m.count, w:count(), what)
      end
      for _, k in ipairs(pool) do assert.equal(m.seen(k, now), w:seen(k, now)) end
    end
  end)

  it("refuses what is not a key", function()
    local w = core.dedupe_window(60)
    assert.has_error(function() w:add("k", 1) end)
    assert.has_error(function() core.dedupe_window(-1) end)
    assert.has_error(function() core.dedupe_window(60, 0) end, "bad argument #2 to 'dedupe_window' (cap must be 1 to 2^30)")
    assert.has_error(function() core.dedupe_window(60, 2^31) end, "bad argument #2 to 'dedupe_window' (cap must be 1 to 2^30)")
  end)
end)
