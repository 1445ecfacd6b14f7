-- `pivday listen`, `pivday events`, `pivday events replay` and `pivday
-- trigger` as processes (trigger against a sandbox is in sandbox_spec).
-- Every process is started here, in the background with its PID, and
-- stopped by that PID.
local pivday = require "pivday"
local json = require "pivday.json"
local helper = require "helper"
local t = helper.t

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function alive(pid)
  local _, rc = helper.sh("kill -0 " .. pid .. " 2>/dev/null")
  return rc == 0
end

-- Runs `pivday ARGS` in the background; returns its PID.
local function start(args, out)
  local cmd = ("%s %s >%s 2>&1 & echo $!"):format(helper.q(helper.bin), args, helper.q(out))
  local s = helper.sh(cmd)
  return assert(tonumber(s:match("(%d+)")))
end

local function wait_for(path, pattern)
  local deadline = pivday.now() + t(10)
  while pivday.now() < deadline do
    local s = read_file(path)
    local m = s and s:match(pattern)
    if m then return m end
    pivday.sleep(0.02)
  end
  return nil, read_file(path)
end

local function post(url, ev)
  return pivday.http.request{ method = "POST", url = url, body = json.encode(ev), timeout = t(5) }
end

describe("pivday listen / events", function()
  local dir, pids

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. helper.q(dir)))
    pids = {}
  end)

  after_each(function()
    for _, pid in ipairs(pids) do
      if alive(pid) then os.execute("kill -9 " .. pid) end
    end
    os.execute("rm -rf " .. helper.q(dir))
  end)

  it("has --help for every command", function()
    for _, cmd in ipairs{ "listen", "events", "trigger" } do
      local out, rc = helper.sh(helper.q(helper.bin) .. " " .. cmd .. " --help")
      assert.equal(0, rc, cmd)
      assert.matches("usage: pivday " .. cmd, out)
    end
    local _, rc = helper.sh(helper.q(helper.bin) .. " listen --bogus 2>/dev/null")
    assert.equal(2, rc)
  end)

  it("listen prints the URL and each event, journals them; events lists; replay forwards", function()
    local journal = dir .. "/j.jsonl"
    local out = dir .. "/listen.out"
    local pid = start("listen --port 0 --heartbeat 0 --journal " .. helper.q(journal), out)
    pids[#pids + 1] = pid
    local url = assert(wait_for(out, "(http://127%.0%.0%.1:%d+/hooks/%x+)"))
    assert.equal(200, assert(post(url, { event_type = "sms.received", timestamp = "2026-05-22T12:00:00Z",
      data = { piv_num_id = "n1", code = "777", text = "Your code is 777" } })).status)
    assert.equal(200, assert(post(url, { event_type = "odd.event", timestamp = "2026-05-22T12:00:01Z",
      data = { x = 1 } })).status)
    assert.is_truthy(wait_for(out, "odd%.event[^\n]*x=1"))
    local text = read_file(out)
    assert.matches("sms%.received%s+code=777", text)
    os.execute("kill -INT " .. pid)
    assert.is_truthy(wait_for(out, "SIGINT: stopped %(2 events"))

    local list, rc = helper.sh(("%s events --journal %s"):format(helper.q(helper.bin), helper.q(journal)))
    assert.equal(0, rc)
    assert.matches("#1%s+sms%.received", list)
    assert.matches("2 events %(0 pending, 2 done%)", list)
    local only, rc2 = helper.sh(("%s events --journal %s --type odd.event --json --since 1h 2>/dev/null")
      :format(helper.q(helper.bin), helper.q(journal)))
    assert.equal(0, rc2)
    local line = assert(json.decode(only:match("[^\n]+")))
    assert.equal("odd.event", line.event_type)
    assert.equal(2, line.id)
    assert.is_true(line.done)

    -- replay --all to a second listener (JSON lines), then that one lists them
    local out2 = dir .. "/listen2.out"
    local pid2 = start("listen --port 0 --heartbeat 0 --json", out2)
    pids[#pids + 1] = pid2
    local url2 = assert(wait_for(out2, "(http://127%.0%.0%.1:%d+/hooks/%x+)"))
    local rep, rc3 = helper.sh(("%s events replay --all --journal %s --forward-to %s 2>&1")
      :format(helper.q(helper.bin), helper.q(journal), helper.q(url2)))
    assert.equal(0, rc3, rep)
    assert.matches("%-> 200", rep)
    assert.matches("2 of 2 events delivered", rep)
    assert.is_truthy(wait_for(out2, '"event_type":"odd%.event"'))
    os.execute("kill -TERM " .. pid2)
    assert.is_truthy(wait_for(out2, "SIGTERM: stopped"))
  end)

  it("listen --forward-to reports the status and leaves failed forwards pending", function()
    local journal = dir .. "/j.jsonl"
    local out = dir .. "/listen.out"
    -- Forward to a port nothing listens on.
    local probe = assert(pivday.http.server{ port = 0, handler = function() return 200 end })
    local dead = probe.url
    probe:close()
    local pid = start(("listen --port 0 --heartbeat 0 --journal %s --forward-to %s")
      :format(helper.q(journal), helper.q(dead .. "/in")), out)
    pids[#pids + 1] = pid
    local url = assert(wait_for(out, "(http://127%.0%.0%.1:%d+/hooks/%x+)"))
    assert.equal(200, assert(post(url, { event_type = "white.failed", timestamp = "x", data = { job_id = "j" } })).status)
    assert.is_truthy(wait_for(out, "forward failed"))
    os.execute("kill -INT " .. pid)
    assert.is_truthy(wait_for(out, "stopped"))
    local list = helper.sh(("%s events --pending --journal %s"):format(helper.q(helper.bin), helper.q(journal)))
    assert.matches("white%.failed.*%[pending%]", list)
    assert.matches("1 pending", list)
  end)

  it("trigger explains an unreachable sandbox", function()
    local probe = assert(pivday.http.server{ port = 0, handler = function() return 200 end })
    local dead = probe.url
    probe:close()
    local out, rc = helper.sh(("%s trigger sms.received --sandbox-url %s 2>&1"):format(helper.q(helper.bin), dead))
    assert.equal(1, rc)
    assert.matches("cannot reach the sandbox", out)
    local _, rc2 = helper.sh(helper.q(helper.bin) .. " trigger 2>/dev/null")
    assert.equal(2, rc2)
  end)

  it("trigger --set reads JSON values and keeps text fields text", function()
    local trigger = require "pivday.cli.trigger"
    local data = assert(trigger.build_data("sms.received", { "data.code=999", "data.n=12", "flag=true",
      "data.deep.x=null", 'data.s="42"' }))
    assert.equal("999", data.code)
    assert.equal(12, data.n)
    assert.is_true(data.flag)
    assert.equal(json.null, data.deep.x)
    assert.equal("42", data.s)
    assert.equal("SE", data.country)
    assert.is_nil((trigger.build_data("x", { "nonsense" })))
  end)
end)
