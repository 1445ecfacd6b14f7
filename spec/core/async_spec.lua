-- Coroutines over the loop: run, spawn, sleep, gather, timeout, cond.
local pivday = require "pivday"
local async = require "pivday.async"
local helper = require "helper"
local t = helper.t

describe("pivday.run", function()
  it("returns the function's results", function()
    assert.same({ 1, "two", n = 2 }, table.pack(pivday.run(function() return 1, "two" end)))
  end)

  it("waits for everything the function spawned", function()
    local order = {}
    pivday.run(function()
      pivday.spawn(function() pivday.sleep(0.05) order[#order + 1] = "late" end)
      order[#order + 1] = "main"
    end)
    assert.same({ "main", "late" }, order)
  end)

  it("raises the function's error", function()
    assert.has_error(function() pivday.run(function() error({ code = "X" }) end) end, { code = "X" })
  end)

  it("reports an error in a spawned task with its traceback instead of swallowing it", function()
    local reported
    local saved = async.report
    async.report = function(msg) reported = msg end
    pivday.run(function() pivday.spawn(function() error("spawned failure") end) end)
    async.report = saved
    assert.matches("spawned failure", reported)
    assert.matches("traceback", reported)
  end)

  it("does not wait for daemon tasks", function()
    local task
    pivday.run(function() task = pivday.daemon(function() pivday.sleep(30) end) end)
    assert.is_nil(task.done)
    task:cancel()
  end)
end)

describe("pivday.sleep", function()
  it("sleeps about as long as asked, outside and inside tasks", function()
    local t0 = pivday.now()
    pivday.sleep(0.1)
    local d = pivday.now() - t0
    assert.is_true(d >= 0.09 and d < t(1), "slept " .. d)
    t0 = pivday.now()
    pivday.run(function()
      pivday.gather(function() pivday.sleep(0.1) end, function() pivday.sleep(0.1) end)
    end)
    d = pivday.now() - t0
    assert.is_true(d >= 0.09 and d < t(0.19), "two sleeps of 0.1 ran concurrently in " .. d)
  end)

  it("rejects a bad duration at the caller's line", function()
    assert.has_error(function() pivday.sleep(-1) end)
    assert.has_error(function() pivday.sleep("x") end)
  end)
end)

describe("pivday.gather", function()
  it("returns one table.pack per function, in argument order", function()
    local a, b, c = pivday.gather(
      function() pivday.sleep(0.05) return 1 end,
      function() return nil, "err" end,
      function() return "x", "y" end)
    assert.same({ 1, n = 1 }, a)
    assert.same({ nil, "err", n = 2 }, b)
    assert.same({ "x", "y", n = 2 }, c)
  end)

  it("cancels the others and raises when one raises", function()
    local finished = false
    local ok, err = pcall(pivday.gather,
      function() pivday.sleep(5) finished = true end,
      function() pivday.sleep(0.02) error("bad one", 0) end)
    assert.is_false(ok)
    assert.equal("bad one", err)
    pivday.sleep(0.05)
    assert.is_false(finished)
  end)
end)

describe("pivday.timeout", function()
  it("returns the function's results in time", function()
    assert.same({ 7, n = 1 }, table.pack(pivday.timeout(1, function() pivday.sleep(0.01) return 7 end)))
  end)

  it("cancels the function and returns TIMEOUT", function()
    local after = false
    local res, err = pivday.timeout(0.05, function() pivday.sleep(5) after = true end)
    assert.is_nil(res)
    assert.equal("timeout", err.kind)
    assert.equal("TIMEOUT", err.code)
    assert.is_false(after)
  end)

  it("raises what the function raises", function()
    assert.has_error(function() pivday.timeout(1, function() error("inner", 0) end) end, "inner")
  end)
end)

describe("pivday.cond", function()
  it("wakes waiters in order and times out", function()
    local c = pivday.cond()
    local got = {}
    pivday.run(function()
      for _ = 1, 2 do
        pivday.spawn(function() local v = c:wait() got[#got + 1] = v end)
      end
      pivday.sleep(0.01)
      c:signal("first")
      c:signal("second")
    end)
    assert.same({ "first", "second" }, got)
    local ok, err = c:wait(0.02)
    assert.is_nil(ok)
    assert.equal("TIMEOUT", err.code)
  end)
end)

describe("waiting where pivday cannot yield", function()
  it("drives the loop inside a coroutine pivday does not manage", function()
    local co = coroutine.wrap(function() pivday.sleep(0.01) return "done" end)
    assert.equal("done", co())
  end)

  it("raises a clear error instead of nesting the loop", function()
    local msg
    pivday.run(function()
      local co = coroutine.wrap(function() return pcall(pivday.sleep, 0.01) end)
      local _, e = co()
      msg = e
    end)
    assert.matches("already running", msg)
  end)

  it("says so when nothing can complete the wait", function()
    assert.has_error(function()
      async.await(function() end)
    end, "pivday: nothing left to wait for: the awaited operation can never complete")
  end)
end)

describe("driving pivday from another loop", function()
  it("exposes an fd, a timeout and a step", function()
    assert.is_true(math.type(pivday.backend_fd()) == "integer")
    local fired = false
    local tm = require("pivday.core").timer()
    tm:start(0.05, 0, function() fired = true end)
    local timeout = pivday.backend_timeout()
    -- 0 when other work is already pending (earlier specs' background tasks)
    assert.is_true(timeout ~= nil and timeout >= 0 and timeout <= 0.05, tostring(timeout))
    local deadline = pivday.now() + t(2)
    while not fired and pivday.now() < deadline do pivday.step(0.1) end
    assert.is_true(fired)
    tm:close()
  end)
end)

describe("pivday.Error", function()
  it("prints CODE (status): message, or CODE: message", function()
    local e = pivday.Error.new{ kind = "api", code = "INSUFFICIENT_BALANCE", status = 402, message = "Not enough" }
    assert.equal("INSUFFICIENT_BALANCE (402): Not enough", tostring(e))
    assert.equal("TIMEOUT: slow", tostring(pivday.Error{ kind = "timeout", code = "TIMEOUT", message = "slow" }))
    assert.is_true(pivday.Error.is(e))
    assert.is_false(pivday.Error.is({ code = "X" }))
  end)
end)
