-- pivday.webhooks with our own sender: real sockets on 127.0.0.1, no
-- sandbox needed. Covers answering, matching, dedupe, the journal (fsync
-- before 2xx, done marks, replay, compaction) and rejections under load.
local pivday = require "pivday"
local json = require "pivday.json"
local tcp = require "pivday.tcp"
local async = require "pivday.async"
local journal = require "pivday.webhooks.journal"
local dedupe = require "pivday.webhooks.dedupe"
local cidr = require "pivday.webhooks.cidr"
local helper = require "helper"
local t = helper.t

local dirs = {}
local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. helper.q(d)))
  dirs[#dirs + 1] = d
  return d
end

local function event(event_type, data, ts)
  return { event_type = event_type, timestamp = ts or "2026-05-22T12:34:56Z", data = data or {} }
end

-- POSTs an event (a table, or raw text) and returns the response.
local function post(url, ev, opts)
  opts = opts or {}
  return pivday.http.request{
    method = opts.method or "POST", url = url, timeout = t(10),
    headers = { ["content-type"] = "application/json", ["user-agent"] = "piv.day-webhook/1.0" },
    body = type(ev) == "string" and ev or json.encode(ev),
  }
end

-- Drives the loop until cond() holds or `secs` pass; returns cond().
local function eventually(cond, secs)
  local deadline = pivday.now() + t(secs or 5)
  while not cond() and pivday.now() < deadline do pivday.sleep(0.01) end
  return cond()
end

-- Captures what pivday reports (handler errors) instead of printing it.
local function capture_reports()
  local got, old = {}, async.report
  async.report = function(msg) got[#got + 1] = msg end
  return got, function() async.report = old end
end

local open = {}
local function listen(opts)
  opts = opts or {}
  opts.port = opts.port or 0
  local hooks = assert(pivday.webhooks(opts))
  open[#open + 1] = hooks
  return hooks
end

after_each(function()
  for _, h in ipairs(open) do h:close() end
  open = {}
end)

teardown(function()
  for _, d in ipairs(dirs) do os.execute("rm -rf " .. helper.q(d)) end
end)

describe("pivday.webhooks listener", function()
  it("binds loopback on a secret path and answers 2xx before handlers run", function()
    local hooks = listen()
    assert.matches("^/hooks/%x+$", hooks.path)
    assert.equal(7 + 32, #hooks.path)
    assert.matches("^http://127%.0%.0%.1:%d+/hooks/%x+$", hooks.url)
    local finished = false
    hooks:on("sms.received", function()
      pivday.sleep(t(1))
      finished = true
    end)
    local started = pivday.now()
    local res = assert(post(hooks.url, event("sms.received", { piv_num_id = "n1", code = "1" })))
    assert.equal(200, res.status)
    assert.is_true(pivday.now() - started < t(0.5))
    assert.is_false(finished)
    assert.is_true(eventually(function() return finished end))
  end)

  it("gives every event to '*' handlers, unknown types included, and typed ones only their type", function()
    local hooks = listen()
    local star, typed = {}, {}
    hooks:on("*", function(ev) star[#star + 1] = ev.event_type end)
    hooks:on({ "sms.received" }, function(ev) typed[#typed + 1] = ev.event_type end)
    assert.equal(200, assert(post(hooks.url, event("sms.received", { code = "1" }))).status)
    assert.equal(200, assert(post(hooks.url, event("brand.new_event", { x = 1 }))).status)
    assert.is_true(eventually(function() return #star == 2 end))
    table.sort(star)
    assert.same({ "brand.new_event", "sms.received" }, star)
    assert.same({ "sms.received" }, typed)
  end)

  it("uses public_url for hooks.url and keeps the secret path beside the journal", function()
    local dir = tmpdir()
    local a = listen{ journal = dir .. "/j.jsonl", public_url = "https://hooks.example.com/" }
    assert.equal("https://hooks.example.com" .. a.path, a.url)
    assert.matches("^http://127%.0%.0%.1:%d+/hooks/", a.local_url)
    local path = a.path
    a:close()
    local b = listen{ journal = dir .. "/j.jsonl" }
    assert.equal(path, b.path)
    local f = assert(io.open(dir .. "/j.jsonl.secret"))
    assert.equal(path, f:read("l"))
    f:close()
    assert.equal("600\n", (helper.sh("stat -c %a " .. helper.q(dir .. "/j.jsonl.secret"))))
  end)

  it("names the field of a bad option", function()
    for field, bad in pairs{ sync_inline = -1, dedupe_window = "60", recent = 1.5, port = 70000 } do
      local ok, err = pcall(pivday.webhooks, { [field] = bad })
      assert.is_false(ok)
      assert.matches("field '" .. field .. "'", err, 1, true)
    end
  end)

  it("refuses a second listener on the same journal", function()
    local dir = tmpdir()
    listen{ journal = dir .. "/j.jsonl" }
    local h, err = pivday.webhooks{ port = 0, journal = dir .. "/j.jsonl" }
    assert.is_nil(h)
    assert.equal("JOURNAL_LOCKED", err.code)
  end)

  it("reports a port in use as LISTEN_FAILED", function()
    local a = listen()
    local h, err = pivday.webhooks{ port = a.port }
    assert.is_nil(h)
    assert.equal("LISTEN_FAILED", err.code)
  end)
end)

describe("pivday.webhooks awaiting", function()
  it("matches an event that arrived before wait was called", function()
    local hooks = listen()
    assert.equal(200, assert(post(hooks.url, event("sms.received", { piv_num_id = "n1", code = "111" }))).status)
    pivday.sleep(0.05)
    local ev = assert(hooks:wait("sms.received", { piv_num_id = "n1" }, t(2)))
    assert.equal("111", ev.data.code)
  end)

  it("expect() before the trigger, wait() after; match by fields across string/integer ids", function()
    local hooks = listen()
    local w = hooks:expect({ "verify.completed", "verify.failed" }, { task_id = "12" })
    local other = hooks:expect("verify.completed", function(data) return data.task_id == 99 end)
    pivday.spawn(function()
      pivday.sleep(0.05)
      post(hooks.url, event("verify.failed", { task_id = 12, error_code = "VERIFY_TIMEOUT" }))
      post(hooks.url, event("verify.completed", { task_id = 99 }))
    end)
    local ev = assert(w:wait(t(3)))
    assert.equal("verify.failed", ev.event_type)
    assert.equal(12, ev.data.task_id)
    assert.equal(99, assert(other:wait(t(3))).data.task_id)
    assert.equal(ev, w:wait(0)) -- asking again gives the same answer
  end)

  it("gives each event to at most one wait: two waits get two different SMS", function()
    local hooks = listen()
    local got = {}
    pivday.run(function()
      for i = 1, 2 do
        pivday.spawn(function()
          local ev = assert(hooks:wait("sms.received", { piv_num_id = "n1" }, t(3)))
          got[i] = ev.data.code
        end)
      end
      pivday.sleep(0.05)
      post(hooks.url, event("sms.received", { piv_num_id = "n1", code = "A" }))
      post(hooks.url, event("sms.received", { piv_num_id = "n1", code = "B" }))
    end)
    table.sort(got)
    assert.same({ "A", "B" }, got)
    -- and an event already taken does not satisfy a later wait
    local ev, err = hooks:wait("sms.received", { piv_num_id = "n1" }, 0.1)
    assert.is_nil(ev)
    assert.equal("TIMEOUT", err.code)
  end)

  it("times out with TIMEOUT and does not swallow the next event", function()
    local hooks = listen()
    local ev, err = hooks:wait("domain.registered", { domain_id = "d1" }, 0.1)
    assert.is_nil(ev)
    assert.equal("timeout", err.kind)
    assert.equal("TIMEOUT", err.code)
    local w = hooks:expect("domain.registered")
    assert.is_nil((w:wait(0.05)))
    post(hooks.url, event("domain.registered", { domain_id = "d1" }))
    assert.equal("d1", assert(hooks:wait("domain.registered", { domain_id = "d1" }, t(2))).data.domain_id)
  end)

  it("keeps only the last `recent` events for late waits", function()
    local hooks = listen{ recent = 3 }
    hooks:on("other.type", function() end) -- registered: events flow at once
    for i = 1, 5 do post(hooks.url, event("sms.received", { i = i })) end
    pivday.sleep(0.05)
    local firsts = {}
    for _ = 1, 3 do firsts[#firsts + 1] = assert(hooks:wait("sms.received", 0)).data.i end
    assert.same({ 3, 4, 5 }, firsts)
  end)

  it("keeps an unhandled event pending while it is recent, done once a wait takes it or it ages out", function()
    local dir = tmpdir()
    local path = dir .. "/j.jsonl"
    local hooks = listen{ journal = path, recent = 3 }
    hooks:on("other.type", function() end)
    local function send(i) assert.equal(200, assert(post(hooks.url, event("sms.received", { i = i }))).status) end
    for i = 1, 3 do send(i) end
    assert.equal(2, assert(hooks:wait("sms.received", { i = 2 }, t(2))).data.i) -- a hole mid-ring
    send(4) -- evicts 1
    send(5) -- takes the hole's slot: evicts nothing
    send(6) -- evicts 3
    assert.equal(4, assert(hooks:wait("sms.received", 0)).data.i) -- oldest left first
    assert.equal(4, hooks.stats.delivered) -- 2, 1, 3, 4
    hooks:close()
    local again = listen{ journal = path }
    local got = {}
    again:on("*", function(ev) got[#got + 1] = ev.data.i end)
    assert.is_true(eventually(function() return #got == 2 end, 2))
    assert.same({ 5, 6 }, got)
  end)

  it("iterates with events{} until timeout, and break unsubscribes", function()
    local hooks = listen()
    pivday.spawn(function()
      pivday.sleep(0.05)
      for i = 1, 3 do post(hooks.url, event("sms.received", { i = i })) end
      post(hooks.url, event("white.completed", { job_id = "j" }))
    end)
    local seen = {}
    for ev in hooks:events{ types = "sms.received", timeout = t(1) } do seen[#seen + 1] = ev.data.i end
    assert.same({ 1, 2, 3 }, seen)
    for ev in hooks:events{ timeout = t(1) } do
      seen = ev
      break
    end
    assert.equal(0, #hooks._subs)
  end)

  it("ends waits with CLOSED when the listener closes", function()
    local hooks = listen()
    local err
    pivday.run(function()
      pivday.spawn(function() _, err = hooks:wait("sms.received", nil, t(5)) end)
      pivday.sleep(0.05)
      hooks:close()
    end)
    assert.equal("CLOSED", err.code)
  end)
end)

describe("pivday.webhooks dedupe", function()
  it("delivers a retried delivery once, even re-serialised with another key order", function()
    local hooks = listen()
    local n = 0
    hooks:on("number.restore_completed", function() n = n + 1 end)
    local a = '{"event_type":"number.restore_completed","timestamp":"2026-05-22T12:34:56Z",'
      .. '"data":{"total_refunded":7.50,"failed":[{"refunded":7.5,"piv_num_id":"x"}],"total_failed":1}}'
    local b = '{"data":{"total_failed":1,"failed":[{"piv_num_id":"x","refunded":7.50}],"total_refunded":7.5},'
      .. '"timestamp":"2026-05-22T12:34:56Z","event_type":"number.restore_completed"}'
    for _, body in ipairs{ a, b, a } do assert.equal(200, assert(post(hooks.url, body)).status) end
    -- a different timestamp is a different event
    assert.equal(200, assert(post(hooks.url, (a:gsub("12:34:56", "12:34:57")))).status)
    assert.is_true(eventually(function() return n == 2 end))
    pivday.sleep(0.05)
    assert.equal(2, n)
    assert.equal(2, hooks.stats.duplicates)
  end)

  it("keys an event's text the same as its decoded values", function()
    local texts = {
      '{"event_type":"sms.received","timestamp":"2026-05-22T12:34:56Z","data":{"a":1,"b":[1,2.5,"x",null,true,false,[],{}],"c":{"d":"\\u00e9\\n\\"q\\"","e":-0.0}}}',
      '{"data":{"x":7.50,"big":12345678901234567890,"e":1e3,"neg":-12},"timestamp":"t","event_type":"e"}',
      '{ "event_type" : "e" , "timestamp" : "t" , "data" : { } , "extra" : [1,2] }',
      '{"event_type":"e","data":{"s":"\\ud83d\\ude00 emoji","list":[{"k":"v"}]}}',
      '{"event_type":"e","timestamp":"t","data":{"long":"' .. ("long text "):rep(40) .. '"}}',
    }
    for _, text in ipairs(texts) do
      local ev = assert(json.decode(text))
      assert.equal(dedupe.key(ev.event_type, ev.timestamp, ev.data), dedupe.text_key(text), text)
    end
    -- member order and number spelling do not matter; values do
    assert.equal(dedupe.text_key('{"event_type":"e","timestamp":"t","data":{"x":7.5,"y":12}}'),
      dedupe.text_key('{"data":{"y":12.0,"x":7.50},"timestamp":"t","event_type":"e"}'))
    assert.not_equal(dedupe.text_key('{"event_type":"e","timestamp":"t","data":{"x":"1"}}'),
      dedupe.text_key('{"event_type":"e","timestamp":"t","data":{"x":1}}'))
    assert.not_equal(dedupe.text_key('{"event_type":"e","timestamp":"t","data":{"x":[1,2]}}'),
      dedupe.text_key('{"event_type":"e","timestamp":"t","data":{"x":[2,1]}}'))
    assert.is_nil(dedupe.text_key('{"event_type":'))
    assert.is_nil(dedupe.text_key('not json'))
  end)

  it("has canonical keys: sorted keys, 7.5 == 7.50, strings escaped", function()
    assert.equal('{"a":[1,2.5,"x\\"y"],"b":{"c":null,"d":true}}',
      dedupe.canonical{ b = { d = true, c = json.null }, a = { 1, 2.5, 'x"y' } })
    assert.equal(dedupe.key("t", "ts", json.decode('{"x":7.50,"y":"1"}')),
      dedupe.key("t", "ts", json.decode('{"y":"1","x":7.5}')))
    assert.not_equal(dedupe.key("t", "ts", { x = "1" }), dedupe.key("t", "ts", { x = 1 }))
  end)

  it("forgets keys after the window", function()
    local w = dedupe.window(60)
    local k = dedupe.key("t", "ts", {})
    w:add(k, 1000)
    assert.is_true(w:seen(k, 1059))
    assert.is_false(w:seen(k, 1060))
    assert.equal(0, w:count())
  end)

  it("remembers deliveries across a restart through the journal", function()
    local dir = tmpdir()
    local hooks = listen{ journal = dir .. "/j.jsonl" }
    hooks:on("*", function() end)
    local ev = event("sms.received", { piv_num_id = "n", code = "9" })
    assert.equal(200, assert(post(hooks.url, ev)).status)
    pivday.sleep(0.05)
    hooks:close()
    local again = listen{ journal = dir .. "/j.jsonl" }
    local n = 0
    again:on("*", function() n = n + 1 end)
    assert.equal(200, assert(post(again.url, ev)).status)
    pivday.sleep(0.1)
    assert.equal(0, n)
    assert.equal(1, again.stats.duplicates)
  end)
end)

describe("pivday.webhooks handlers", function()
  it("go on with the other events and handlers when one raises", function()
    local reports, restore = capture_reports()
    local hooks = listen()
    local seen, after = {}, 0
    hooks:on("sms.received", function(ev)
      seen[#seen + 1] = ev.data.i
      if ev.data.i == 2 then error("bad event " .. ev.data.i) end
    end)
    hooks:on("*", function() after = after + 1 end)
    pivday.run(function()
      for i = 1, 3 do
        pivday.spawn(function() assert(post(hooks.url, event("sms.received", { i = i }))) end)
      end
    end)
    assert.is_true(eventually(function() return after == 3 and #reports == 1 end))
    restore()
    table.sort(seen)
    assert.same({ 1, 2, 3 }, seen)
    assert.matches("handler for sms.received %(event %d+%) failed", reports[1])
    assert.matches("bad event 2", reports[1])
    assert.equal(2, hooks.stats.delivered)
    assert.equal(1, hooks.stats.failed)
  end)
end)

describe("pivday.webhooks journal", function()
  it("re-delivers an event whose handler failed after a restart, then marks it done", function()
    local dir = tmpdir()
    local file = dir .. "/j.jsonl"
    local reports, restore = capture_reports()
    local hooks = listen{ journal = file }
    local calls = 0
    hooks:on("verify.completed", function()
      calls = calls + 1
      error("database down")
    end)
    assert.equal(200, assert(post(hooks.url, event("verify.completed", { task_id = 1 }))).status)
    assert.is_true(eventually(function() return calls == 1 and #reports == 1 end))
    restore()
    assert.matches("database down", reports[1])
    assert.matches("stays pending", reports[1])
    assert.matches("traceback", reports[1])
    hooks:close()
    local _, sum = journal.read(file)
    assert.equal(1, sum.pending)

    local second = listen{ journal = file }
    local got
    second:on("verify.completed", function(ev) got = ev end)
    assert.is_true(eventually(function() return got ~= nil end))
    assert.is_true(got.replayed)
    assert.equal(1, got.data.task_id)
    pivday.sleep(0.05)
    second:close()
    _, sum = journal.read(file)
    assert.equal(0, sum.pending)
    assert.equal(1, sum.done)

    local third = listen{ journal = file }
    assert.equal(0, third:replay())
  end)

  it("holds replayed events until the script registers, and a wait can take them", function()
    local dir = tmpdir()
    local file = dir .. "/j.jsonl"
    local hooks = listen{ journal = file }
    assert.equal(200, assert(post(hooks.url, event("domain.registered", { domain_id = "d9" }))).status)
    pivday.sleep(0.05)
    hooks:close() -- nothing registered: not seen, so not done
    local again = listen{ journal = file }
    local ev = assert(again:wait("domain.registered", { domain_id = "d9" }, t(2)))
    assert.is_true(ev.replayed)
  end)

  -- sync_inline = 0: every sync after the first goes to the thread pool
  -- while other senders wait (a slow disk's path); huge: every one blocks.
  for _, mode in ipairs{ { "in the thread pool", 0 }, { "inline", math.huge } } do
    it("journals 1000 events from 50 concurrent senders exactly once, all acknowledged 2xx (syncs "
        .. mode[1] .. ")", function()
      local dir = tmpdir()
      local file = dir .. "/j.jsonl"
      local hooks = listen{ journal = file, sync_inline = mode[2] }
      local handled = 0
      hooks:on("sms.received", function() handled = handled + 1 end)
      local statuses, bad = {}, {}
      -- Open connections that send nothing: a sync never covers every open
      -- connection, so the thread pool is used when asked.
      local idle = {}
      for i = 1, 3 do idle[i] = assert(tcp.connect("127.0.0.1", hooks.port, t(2))) end
      pivday.run(function()
        for s = 1, 50 do
          pivday.spawn(function()
            for i = 1, 20 do
              local res, err = post(hooks.url, event("sms.received", { sender = s, i = i, code = s .. "-" .. i }))
              if res then
                statuses[res.status] = (statuses[res.status] or 0) + 1
              else
                bad[#bad + 1] = tostring(err)
              end
            end
          end)
        end
      end)
      assert.same({}, bad)
      assert.same({ [200] = 1000 }, statuses)
      assert.is_true(eventually(function() return handled == 1000 end, 10))
      local stats = hooks.stats
      for _, c in ipairs(idle) do c:close() end
      hooks:close()
      -- Grouped: far fewer syncs than events, and pooled only when asked.
      assert.is_true(stats.syncs > 0 and stats.syncs < 1000, "syncs: " .. stats.syncs)
      if mode[2] == 0 then
        assert.is_true(stats.syncs_pooled > 0, "no sync went to the thread pool")
      else
        assert.equal(0, stats.syncs_pooled)
      end
      local records, sum = journal.read(file)
      assert.equal(1000, sum.events)
      assert.equal(0, sum.skipped)
      local codes, ids = {}, {}
      for _, r in ipairs(records) do
        local c = r.event.data.code
        assert.is_nil(codes[c], "journaled twice: " .. c)
        assert.is_nil(ids[r.id])
        codes[c], ids[r.id] = true, true
      end
      assert.equal(1000, sum.done)
    end)
  end

  it("compacts done events older than the retention, keeping pending ones", function()
    local dir = tmpdir()
    local file = dir .. "/j.jsonl"
    local hooks = listen{ journal = file, retention = 0, dedupe_window = 0 }
    local n = 0
    hooks:on("sms.received", function(ev)
      n = n + 1
      if ev.data.keep then error(pivday.Error{ kind = "local", code = "NOPE", message = "fails on purpose" }) end
    end)
    local _, restore = capture_reports()
    for i = 1, 5 do post(hooks.url, event("sms.received", { i = i, keep = i == 5 or nil })) end
    assert.is_true(eventually(function() return n == 5 end))
    pivday.sleep(1.1) -- "older than 0 s" in whole seconds
    local res = assert(hooks:compact())
    restore()
    assert.equal(4, res.removed)
    assert.equal(1, res.kept)
    hooks:close()
    local records, sum = journal.read(file)
    assert.equal(1, sum.events)
    assert.equal(1, sum.pending)
    assert.equal(5, records[1].event.data.i)
    -- ids keep counting after compaction
    local again = listen{ journal = file }
    again:on("*", function() end)
    post(again.url, event("sms.received", { i = 6 }))
    local ev = assert(again:wait("sms.received", { i = 6 }, t(2)))
    assert.equal(6, ev.id)
  end)

  it("skips a torn last line and starts the next record on a fresh line", function()
    local dir = tmpdir()
    local file = dir .. "/j.jsonl"
    local f = assert(io.open(file, "w"))
    f:write('{"id":1,"at":1,"event":{"event_type":"a.b","timestamp":"x","data":{}}}\n{"id":2,"at":1,"eve')
    f:close()
    local hooks = listen{ journal = file }
    local got = {}
    hooks:on("*", function(ev) got[#got + 1] = ev.id end)
    post(hooks.url, event("c.d", {}))
    assert.is_true(eventually(function() return #got == 2 end))
    assert.same({ 1, 2 }, got) -- id 2 was never acknowledged, so it is free
    hooks:close()
    local records, sum = journal.read(file)
    assert.equal(0, sum.skipped) -- compacted away at open
    assert.equal(2, #records)
  end)
end)

describe("pivday.webhooks rejects", function()
  it("wrong path, method, JSON, envelope, size and slow headers while valid deliveries succeed", function()
    local hooks = listen{ max_body = 2048, header_timeout = 0.5 }
    local delivered = 0
    hooks:on("*", function() delivered = delivered + 1 end)
    local base = hooks.url:match("^(http://[^/]+)")
    local results = {}
    local function expect_status(name, status, fn)
      pivday.spawn(function()
        local res, err = fn()
        results[name] = { want = status, got = res and res.status or tostring(err) }
      end)
    end
    pivday.run(function()
      for i = 1, 40 do
        expect_status("valid" .. i, 200, function() return post(hooks.url, event("sms.received", { i = i })) end)
      end
      expect_status("wrong path", 404, function() return post(base .. "/hooks/" .. ("0"):rep(32), event("a.b")) end)
      expect_status("prefix of path", 404, function() return post(hooks.url:sub(1, -2), event("a.b")) end)
      expect_status("GET", 405, function() return post(hooks.url, "", { method = "GET" }) end)
      expect_status("PUT", 405, function() return post(hooks.url, event("a.b"), { method = "PUT" }) end)
      expect_status("bad JSON", 400, function() return post(hooks.url, "{nope") end)
      expect_status("empty", 400, function() return post(hooks.url, "") end)
      expect_status("array", 400, function() return post(hooks.url, "[1,2]") end)
      expect_status("no type", 400, function() return post(hooks.url, { timestamp = "x", data = {} }) end)
      expect_status("data list", 400, function() return post(hooks.url, '{"event_type":"a","timestamp":"x","data":[1]}') end)
      expect_status("too big", 413, function()
        return post(hooks.url, event("a.b", { pad = ("x"):rep(4096) }))
      end)
      pivday.spawn(function()
        local c = assert(tcp.connect("127.0.0.1", hooks.port, t(2)))
        c:send("POST " .. hooks.path .. " HTTP/1.1\r\nHost: x\r\n") -- never finishes the head
        local text, closed = c:read_all(t(3))
        results["slow headers"] = { want = true, got = closed and not text:find("^HTTP/1.1 2") }
        c:close()
      end)
    end)
    for name, r in pairs(results) do assert.equal(r.want, r.got, name) end
    assert.equal(51, (function() local n = 0 for _ in pairs(results) do n = n + 1 end return n end)())
    assert.is_true(eventually(function() return delivered == 40 end))
    assert.equal(40, hooks.stats.received)
  end)

  it("answers 403 to peers outside `allow`", function()
    local no = listen{ allow = { "10.0.0.0/8", "fd00::/8" } }
    assert.equal(403, assert(post(no.url, event("a.b"))).status)
    local yes = listen{ allow = "127.0.0.0/8" }
    assert.equal(200, assert(post(yes.url, event("a.b"))).status)
    assert.has_error(function() pivday.webhooks{ port = 0, allow = { "300.1.1.1/8" } } end)
  end)

  it("parses CIDRs, IPv6 and IPv4-mapped peers", function()
    local m = assert(cidr.matcher{ "192.168.0.0/16", "2001:db8::/32", "::1", "10.1.2.3" })
    assert.is_true(m("192.168.7.9"))
    assert.is_true(m("::ffff:192.168.1.1"))
    assert.is_false(m("192.169.0.1"))
    assert.is_true(m("2001:db8:0:1::5"))
    assert.is_false(m("2001:db9::1"))
    assert.is_true(m("::1"))
    assert.is_true(m("10.1.2.3"))
    assert.is_false(m("10.1.2.4"))
    assert.is_false(m("garbage"))
    assert.is_nil((cidr.matcher{ "1.2.3.4/33" }))
    assert.is_nil((cidr.matcher{ "1::2::3" }))
    assert.is_true(assert(cidr.matcher("0.0.0.0/0"))("8.8.8.8"))
  end)
end)
