-- A listener process killed with SIGKILL right after acknowledging loses
-- nothing: every acknowledged event is in the journal and is delivered
-- after a restart. The listener is a `pivday` process we start (and kill)
-- by its PID; its handlers never finish, so nothing is marked done.
local pivday = require "pivday"
local json = require "pivday.json"
local journal = require "pivday.webhooks.journal"
local helper = require "helper"
local t = helper.t

local LISTENER = [[
local pivday = require "pivday"
local hooks = assert(pivday.webhooks{ port = 0, journal = arg[1] })
hooks:on("*", function() pivday.sleep(3600) end) -- never done
local f = assert(io.open(arg[2] .. ".tmp", "w"))
f:write(hooks.local_url, "\n")
f:close()
os.rename(arg[2] .. ".tmp", arg[2])
pivday.run(function() pivday.wait_signal() end)
]]

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

describe("pivday.webhooks crash safety", function()
  local dir, pid

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. helper.q(dir)))
    local f = assert(io.open(dir .. "/listener.lua", "w"))
    f:write(LISTENER)
    f:close()
  end)

  after_each(function()
    if pid and alive(pid) then os.execute("kill -9 " .. pid) end
    pid = nil
    os.execute("rm -rf " .. helper.q(dir))
  end)

  it("keeps every acknowledged event across SIGKILL and delivers them after a restart", function()
    local file, urlfile = dir .. "/j.jsonl", dir .. "/url"
    local out = helper.sh(("%s %s %s %s >%s 2>&1 & echo $!"):format(helper.q(helper.bin),
      helper.q(dir .. "/listener.lua"), helper.q(file), helper.q(urlfile), helper.q(dir .. "/log")))
    pid = assert(tonumber(out:match("(%d+)")), "no PID from the shell")
    local url
    local deadline = pivday.now() + t(10)
    while not url and pivday.now() < deadline do
      pivday.sleep(0.02)
      url = read_file(urlfile)
    end
    assert.is_truthy(url, "the listener did not start: " .. tostring(read_file(dir .. "/log")))
    url = url:gsub("%s+$", "")

    -- 300 events from 30 concurrent senders, then SIGKILL at the last 2xx.
    local acked, bad = {}, {}
    pivday.run(function()
      for s = 1, 30 do
        pivday.spawn(function()
          for i = 1, 10 do
            local code = s .. "-" .. i
            local res, err = pivday.http.request{ method = "POST", url = url, timeout = t(10),
              body = json.encode{ event_type = "sms.received", timestamp = "2026-05-22T12:00:00Z",
                data = { code = code } } }
            if res and res.status == 200 then acked[#acked + 1] = code
            else bad[#bad + 1] = res and res.status or tostring(err) end
          end
        end)
      end
    end)
    os.execute("kill -9 " .. pid)
    local waited = pivday.now() + t(5)
    while alive(pid) and pivday.now() < waited do pivday.sleep(0.01) end
    assert.is_false(alive(pid))
    pid = nil
    assert.same({}, bad)
    assert.equal(300, #acked)

    -- The journal holds each acknowledged event once, none done.
    local records, sum = journal.read(file)
    assert.equal(300, sum.events)
    assert.equal(300, sum.pending)

    -- A restarted listener on the same journal (and path) delivers them all.
    local hooks = assert(pivday.webhooks{ port = 0, journal = file })
    assert.equal(url:match("/hooks/%x+$"), hooks.path)
    local got, n = {}, 0
    hooks:on("sms.received", function(ev)
      assert.is_true(ev.replayed)
      if not got[ev.data.code] then n = n + 1 end
      got[ev.data.code] = (got[ev.data.code] or 0) + 1
    end)
    local deadline2 = pivday.now() + t(10)
    while n < 300 and pivday.now() < deadline2 do pivday.sleep(0.02) end
    pivday.sleep(0.05)
    hooks:close()
    for _, code in ipairs(acked) do assert.equal(1, got[code], "event " .. code) end
    assert.equal(300, n)
    _, sum = journal.read(file)
    assert.equal(300, sum.done)
    assert.equal(#records, sum.events)
  end)
end)
