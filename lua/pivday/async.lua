--- pivday.async: coroutines over the event loop.
--
-- A *task* is a coroutine pivday manages. Inside a task, `await` yields to
-- the loop and the operation's completion resumes it. Outside any task (the
-- main chunk, the REPL, a busted `it`) `await` drives the loop itself until
-- the operation completes, so plain scripts just work. It never yields into
-- a coroutine pivday does not manage: there it drives the loop, or raises a
-- clear error when the loop is already running (no nested uv_run).
--
-- Completions arrive from C on the main thread, after libcurl/llhttp have
-- returned; wake-ups that happen inside a task (a signal, a task finishing)
-- are queued and run on the next loop iteration instead of nesting resumes.
local core = require "pivday.core"
local Error = require "pivday.error"

local M = {}

local co_running, co_resume, co_yield, co_status, co_create =
  coroutine.running, coroutine.resume, coroutine.yield, coroutine.status, coroutine.create
local pack, unpack = table.pack, table.unpack
local traceback = debug.traceback

local tasks = setmetatable({}, { __mode = "k" }) -- coroutine -> task
local live = 0          -- tasks that keep run()/finish() waiting
local ready, ready_n = {}, 0
local WAIT = setmetatable({}, { __name = "pivday.async.WAIT" })

local Task = {}
Task.__index = Task
Task.__name = "pivday.Task"

function Task.__tostring(t)
  return ("pivday.Task (%s)"):format(t.done and (t.ok and "done" or "failed") or "running")
end

--- Where unhandled task errors go. Replaceable (the REPL prints above its
-- prompt); the default writes to stderr.
function M.report(msg)
  io.stderr:write("pivday: error in task: ", msg, "\n")
end

local function describe(err, tb)
  local s = tostring(err)
  if tb and tb ~= "" then s = s .. "\n" .. tb end
  return s
end

-- Errors raised by C callbacks (outside any task) also go to M.report.
core.set_reporter(function(err)
  local s = type(err) == "string" and err or describe(err, traceback("", 2))
  M.report(s)
end)

-- What a resume of `task` came to: ok and the first value yielded or
-- raised.
local function resumed(task, ok, y)
  if not ok then
    M.report(describe(y, traceback(task.co)))
  elseif y ~= WAIT and co_status(task.co) == "suspended" then
    -- Only `await` may yield a task; anything else would hang it forever.
    task.cancel_err = Error.new{ kind = "cancelled", code = "CANCELLED",
      message = "coroutine.yield() called directly inside a pivday task; "
        .. "wait with pivday's functions or use your own coroutine" }
    co_resume(task.co)
  end
end

local function resume(task, ...)
  resumed(task, co_resume(task.co, ...))
end

-- Completions of await_op resume their task from C (pivday.core's
-- lpd_deliver), which tells us only what is not a task waiting again or
-- finishing.
core.set_resumer(WAIT, function(co, ok, y)
  local task = tasks[co]
  if task then resumed(task, ok, y) end
end)

local function tick()
  while ready_n > 0 do
    local q, n = ready, ready_n
    ready, ready_n = {}, 0
    for i = 1, n do
      local e = q[i]
      resume(e[1], unpack(e, 2, e.n))
    end
  end
end
core.set_tick(tick)

local function enqueue(task, ...)
  ready_n = ready_n + 1
  local e = pack(task, ...)
  ready[ready_n] = e
  core.wakeup()
end

-- Resumes now when called from the main thread (a C callback), else on
-- the next loop iteration.
local function wake(task, ...)
  local _, ismain = co_running()
  if ismain then resume(task, ...) else enqueue(task, ...) end
end

--- The task running the caller, or nil outside pivday's coroutines.
function M.current()
  return tasks[(co_running())]
end

local function finish(task, ok, ...)
  task.done = true
  task.ok = ok
  if ok then
    task.results = pack(...)
  else
    task.err = ...
  end
  if not task.daemon then live = live - 1 end
  local waiters = task.waiters
  task.waiters = nil
  if not ok and not task.observed and (waiters == nil or #waiters == 0)
      and task.err ~= task.cancel_err then
    M.report(describe(task.err, task.tb))
  end
  if waiters then
    for i = 1, #waiters do waiters[i](task) end
  end
end

local function new_task(fn, daemon, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 (function expected, got " .. type(fn) .. ")", 3)
  end
  local task = setmetatable({ daemon = daemon or nil }, Task)
  local args = pack(...)
  local function handler(e)
    task.tb = traceback("", 2):gsub("^\n", "")
    return e
  end
  task.co = co_create(function(...)
    if task.cancel_err then return finish(task, false, task.cancel_err) end
    return finish(task, xpcall(fn, handler, ...))
  end)
  task.args = args
  tasks[task.co] = task
  if not daemon then live = live + 1 end
  return task
end

local function start_now(task)
  local args = task.args
  task.args = nil
  resume(task, unpack(args, 1, args.n))
end

local function start_later(task)
  local args = task.args
  task.args = nil
  enqueue(task, unpack(args, 1, args.n))
end

--- Runs fn(...) in a new task, started on the next loop iteration (outside
-- pivday.run it runs whenever the loop is driven). Returns the task.
function M.spawn(fn, ...)
  local t = new_task(fn, false, ...)
  start_later(t)
  return t
end

--- Like spawn, but the task does not keep pivday.run waiting (background
-- work such as timers of a server).
function M.daemon(fn, ...)
  local t = new_task(fn, true, ...)
  start_later(t)
  return t
end

--- Starts a daemon task at once (for C callbacks: a server's handler).
function M.spawn_now(fn, ...)
  local t = new_task(fn, true, ...)
  start_now(t)
  return t
end

local function cancelled_error(msg)
  return Error.new{ kind = "cancelled", code = "CANCELLED", message = msg or "cancelled" }
end

--- Waits for an operation. `start(done)` begins it and returns a function
-- that cancels it (or nil); `done(...)` delivers its results, which await
-- returns. In a task this yields; elsewhere it drives the loop.
function M.await(start)
  local co, ismain = co_running()
  local task = tasks[co]
  if task then
    if task.cancel_err then error(task.cancel_err, 0) end
    local token = {}
    local sync
    task.wait_token = token
    local cancel = start(function(...)
      if task.wait_token ~= token then return end -- completed or cancelled
      task.wait_token = nil
      task.op_cancel = nil
      if co_status(co) == "running" then
        sync = pack(...) -- completed before start() returned
      else
        wake(task, ...)
      end
    end)
    if sync then return unpack(sync, 1, sync.n) end
    task.op_cancel = cancel
    local r = pack(co_yield(WAIT))
    if task.cancel_err then error(task.cancel_err, 0) end
    return unpack(r, 1, r.n)
  end
  if core.running() then
    error("pivday: cannot wait here: the event loop is already running and this "
      .. (ismain and "is not" or "coroutine is not") .. " one pivday manages "
      .. "(use pivday.spawn, or call from the task's own coroutine)", 3)
  end
  local done, res = false, nil
  local cancel = start(function(...)
    if done then return end
    done, res = true, pack(...)
  end)
  local ok, err = pcall(M.drive, function() return done end)
  if not ok then
    if cancel then pcall(cancel) end
    error(err, 0)
  end
  return unpack(res, 1, res.n)
end

-- A task's await_op is over: the operation completed (resumed from C) or
-- the task was cancelled (resumed by the scheduler, with no values).
local function after_wait(task, ...)
  task.wait_token = nil
  task.op_cancel, task.op_arg = nil, nil
  if task.cancel_err then error(task.cancel_err, 0) end
  return ...
end

--- Like await, for an operation started as `op(a, b, c, d, e, f, cb)` ->
-- handle (trailing nil arguments are passed as nils) and cancelled as
-- `cancel(handle)`, such as pivday.core's request and api_send: `cb` must
-- run once, from the loop (never inside `op`), and never after `cancel`;
-- in a task, `cb` is the task's coroutine, which `op` resumes with the
-- results instead of calling it.
-- Waiting this way allocates no closure, token or result table per wait,
-- which matters on the request path.
function M.await_op(op, cancel, a, b, c, d, e, f)
  local task = tasks[(co_running())]
  if not task then
    return M.await(function(done)
      local h = op(a, b, c, d, e, f, done)
      return function() cancel(h) end
    end)
  end
  if task.cancel_err then error(task.cancel_err, 0) end
  -- The coroutine itself as the callback: the completion resumes it from
  -- C with the results (no closure, no Lua callback in between).
  local h = op(a, b, c, d, e, f, task.co)
  task.wait_token = true -- no await `done` matches it: theirs are tables
  task.op_cancel, task.op_arg = cancel, h
  return after_wait(task, co_yield(WAIT))
end

--- Drives the loop until cond() is true. Raises when nothing is left that
-- could make it true (every handle closed, no task ready).
function M.drive(cond)
  while not cond() do
    local alive = core.run("once")
    if not alive and ready_n == 0 and not cond() then
      error("pivday: nothing left to wait for: the awaited operation can never complete", 0)
    end
  end
end

--- Cancels the task: the operation it waits on is cancelled and the wait
-- raises `err` (default: a CANCELLED pivday.Error) inside it.
function Task:cancel(err)
  if self.done or self.cancel_err then return end
  self.cancel_err = err or cancelled_error("task cancelled")
  if self.wait_token then
    self.wait_token = nil
    local c, a = self.op_cancel, self.op_arg
    self.op_cancel, self.op_arg = nil, nil
    if c then
      -- await_op's cancel takes the operation's handle; await's the error.
      if a ~= nil then pcall(c, a) else pcall(c, self.cancel_err) end
    end
    enqueue(self)
  end
end

-- Waits for t to finish; when the waiter is cancelled meanwhile and
-- `propagate` is set, t is cancelled with the same error.
local function join(t, propagate)
  t.observed = true
  if not t.done then
    M.await(function(done)
      local list = t.waiters or {}
      t.waiters = list
      list[#list + 1] = done
      return function(err)
        for i = #list, 1, -1 do if list[i] == done then table.remove(list, i) end end
        if propagate then t:cancel(err) end
      end
    end)
  end
  if t.ok then return true, unpack(t.results, 1, t.results.n) end
  return false, t.err
end

--- Waits for the task to finish. Returns true plus its results, or false
-- plus its error.
function Task:join()
  return join(self, false)
end

local function raise_task_error(t)
  error(t.err, 0)
end

--- Runs fn(...) in a task and drives the loop until it and every task it
-- spawned have finished; returns fn's results or raises its error.
function M.run(fn, ...)
  local t = new_task(fn, false, ...)
  t.observed = true
  if M.current() then -- nested: just wait for it
    start_later(t)
    local r = pack(join(t, true))
    if not r[1] then raise_task_error(t) end
    return unpack(r, 2, r.n)
  end
  if core.running() then
    error("pivday.run: the event loop is already running", 2)
  end
  start_later(t)
  M.drive(function() return live == 0 end)
  if not t.ok then
    -- A script's error should show where it happened, inside the task.
    if type(t.err) == "string" and t.tb then error(t.err .. "\n" .. t.tb, 0) end
    raise_task_error(t)
  end
  return unpack(t.results, 1, t.results.n)
end

--- Drives the loop until every non-daemon task has finished (the host calls
-- it after the main chunk).
function M.finish()
  if live > 0 and not core.running() then
    M.drive(function() return live == 0 end)
  end
end

--- Number of tasks that keep run() waiting.
function M.live() return live end

--- Sleeps for s seconds (fractions allowed).
function M.sleep(s)
  if type(s) ~= "number" or s < 0 then
    error("bad argument #1 to 'sleep' (non-negative number expected, got " .. tostring(s) .. ")", 2)
  end
  M.await(function(done)
    local t = core.timer()
    t:start(s, 0, done)
    return function() t:close() end
  end)
end

--- Runs each function in its own task; returns one table.pack of results
-- per function, in argument order. If one raises, the others are cancelled
-- and gather raises that error.
function M.gather(...)
  local n = select("#", ...)
  local fns = { ... }
  for i = 1, n do
    if type(fns[i]) ~= "function" then
      error(("bad argument #%d to 'gather' (function expected, got %s)"):format(i, type(fns[i])), 2)
    end
  end
  local children = {}
  for i = 1, n do
    children[i] = new_task(fns[i], false)
    children[i].observed = true
    start_later(children[i])
  end
  local failed
  M.await(function(done)
    local left = n
    if left == 0 then done() return end
    local function on_finish(t)
      left = left - 1
      if not t.ok and not failed then
        failed = t
        done()
      elseif left == 0 then
        done()
      end
    end
    for i = 1, n do
      local c = children[i]
      c.waiters = c.waiters or {}
      c.waiters[#c.waiters + 1] = on_finish
    end
    return function(err)
      for i = 1, n do children[i]:cancel(err) end
    end
  end)
  if failed then
    local why = cancelled_error("cancelled: a sibling in gather failed")
    for i = 1, n do children[i]:cancel(why) end
    for i = 1, n do if not children[i].done then join(children[i], false) end end
    raise_task_error(failed)
  end
  local out = {}
  for i = 1, n do out[i] = children[i].results end
  return unpack(out, 1, n)
end

--- Runs fn(...) with a time limit: its results, or (after cancelling it)
-- nil and a TIMEOUT pivday.Error. An error fn raises is raised again.
function M.timeout(s, fn, ...)
  if type(s) ~= "number" or s < 0 then
    error("bad argument #1 to 'timeout' (non-negative number expected)", 2)
  end
  if type(fn) ~= "function" then
    error("bad argument #2 to 'timeout' (function expected, got " .. type(fn) .. ")", 2)
  end
  local child = new_task(fn, false, ...)
  child.observed = true
  local terr
  local timer = core.timer()
  timer:start(s, 0, function()
    if not child.done then
      terr = Error.new{ kind = "timeout", code = "TIMEOUT",
        message = ("no result within %g s"):format(s) }
      child:cancel(terr)
    end
  end)
  start_later(child)
  local r = pack(join(child, true))
  timer:close()
  if r[1] then return unpack(r, 2, r.n) end
  if terr and child.err == terr then return nil, terr end
  raise_task_error(child)
end

--- A condition variable: tasks wait, others signal.
local Cond = {}
Cond.__index = Cond
Cond.__name = "pivday.Cond"

function M.cond()
  return setmetatable({ _w = {} }, Cond)
end

--- Waits until signalled: returns the value given to signal (true by
-- default), or nil and a TIMEOUT error after `timeout` seconds.
function Cond:wait(timeout)
  local list = self._w
  return M.await(function(done)
    local t
    local function entry(...)
      if t then t:close() end
      done(...)
    end
    list[#list + 1] = entry
    local function remove()
      for i = #list, 1, -1 do if list[i] == entry then table.remove(list, i) return end end
    end
    if timeout then
      t = core.timer()
      t:start(timeout, 0, function()
        t = nil
        remove()
        done(nil, Error.new{ kind = "timeout", code = "TIMEOUT",
          message = ("nothing came within %g s"):format(timeout) })
      end)
    end
    return function()
      remove()
      if t then t:close() end
    end
  end)
end

--- Wakes the longest waiter; returns true when there was one.
function Cond:signal(v)
  local f = table.remove(self._w, 1)
  if f then f(v == nil or v) return true end
  return false
end

--- Wakes every waiter; returns how many.
function Cond:broadcast(v)
  local list = self._w
  self._w = {}
  for i = 1, #list do list[i](v == nil or v) end
  return #list
end

--- Number of waiters.
function Cond:waiting() return #self._w end

--- Waits for SIGINT or SIGTERM; returns "SIGINT" or "SIGTERM". For
-- services that run until stopped.
function M.wait_signal()
  return M.await(function(done)
    local a, b = core.signal(), core.signal()
    local function fire(signum)
      a:close() b:close()
      done(signum == core.SIGINT and "SIGINT" or "SIGTERM")
    end
    a:start(core.SIGINT, fire)
    b:start(core.SIGTERM, fire)
    return function() a:close() b:close() end
  end)
end

return M
