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

  it("refuses what is not a key", function()
    local w = core.dedupe_window(60)
    assert.has_error(function() w:add("k", 1) end)
    assert.has_error(function() core.dedupe_window(-1) end)
  end)
end)
