--- pivday.repl: the interactive front of `pivday`.
--
-- Input is read from the event loop (libedit's callback interface on a
-- poll of stdin, or plain reads when stdin is a pipe), so timers, requests
-- and webhooks go on while the prompt waits. Each complete chunk runs in
-- its own task: a line that waits on the network works, and Ctrl-C cancels
-- that task, not the REPL. Expressions print their values.
local core = require "pivday.core"
local async = require "pivday.async"
local pretty = require "pivday.pretty"

local M = {}

local HISTORY_MAX_LINES = 1000

local function history_file()
  local home = os.getenv("HOME")
  if not home or home == "" then return nil end
  return home .. "/.pivday_history"
end

--- Compiles a chunk: an expression first (so `1+1` prints 2), then a
-- statement. Returns fn, or nil and "incomplete", or nil and an error.
function M.compile(src, env)
  local fn = load("return " .. src, "=stdin", "t", env)
  if fn then return fn end
  local err
  fn, err = load(src, "=stdin", "t", env)
  if fn then return fn end
  if err:find("<eof>", 1, true) then return nil, "incomplete" end
  return nil, err
end

--- Completion candidates for `word` (e.g. "api.num" -> "api.numbers"):
-- the fields of the table the dotted prefix names, in env.
function M.complete(env, word)
  local prefix, last = word:match("^(.*[.:])([%w_]*)$")
  local base = env
  if prefix then
    local path = prefix:sub(1, -2)
    local v = env
    for name in path:gmatch("[^.:]+") do
      if type(v) ~= "table" then return {} end
      v = v[name]
    end
    base = v
  else
    prefix, last = "", word
  end
  local out, seen = {}, {}
  local function add_keys(t)
    if type(t) ~= "table" then return end
    for k in pairs(t) do
      if type(k) == "string" and k:sub(1, #last) == last and not k:match("^_") and not seen[k] then
        seen[k] = true
        out[#out + 1] = prefix .. k
      end
    end
  end
  add_keys(base)
  local mt = getmetatable(base)
  if mt and type(mt.__index) == "table" then add_keys(mt.__index) end
  if base == env then add_keys(_G) end
  table.sort(out)
  return out
end

--- Makes `api` ready when a key is configured (or under --sandbox) and says
-- which service it talks to. Returns the banner line.
function M.setup_api(env)
  local cli = package.loaded["pivday.cli"]
  local sandbox = cli and cli.sandbox_instance
  local key = os.getenv("PIVDAY_API_KEY")
  local home = os.getenv("HOME")
  local keyfile = home and io.open(home .. "/.config/pivday/key")
  if keyfile then keyfile:close() end
  if not sandbox and not (key and key ~= "") and not keyfile then
    return "no API key: set PIVDAY_API_KEY (or start with --sandbox) to get `api`"
  end
  local pivday = require "pivday"
  env.api = pivday.client{}
  if sandbox then
    env.sandbox = sandbox
    return ("`api` talks to the SANDBOX at %s (`sandbox` controls it)"):format(env.api.base_url)
  end
  return ("`api` talks to the LIVE service at %s: calls spend money"):format(env.api.base_url)
end

--- Every webhook listener opened in the REPL prints its events above the
-- prompt as they arrive (an `on "*"` handler: it takes no event from a
-- wait or expect).
function M.show_events(say)
  local webhooks = require "pivday.webhooks"
  local json = require "pivday.json"
  local previous = webhooks.on_open
  webhooks.on_open = function(hooks)
    if previous then previous(hooks) end
    hooks:on("*", function(ev)
      local ok, data = pcall(json.encode, ev.data)
      say(("[event] %s %s"):format(tostring(ev.event_type), ok and data or "?"))
    end)
  end
end

local function format_results(r)
  local parts = {}
  for i = 1, r.n do parts[i] = pretty.format(r[i]) end
  return table.concat(parts, "\t")
end

--- Runs the REPL until end of input. opts.input_fd (0), opts.banner.
function M.main(args, opts)
  opts = opts or {}
  local rl
  local fd = opts.input_fd or 0
  local interactive = opts.interactive
  if interactive == nil then
    local ok, mod = pcall(require, "pivday.readline")
    if ok and mod.isatty(fd) then rl = mod end
    interactive = rl ~= nil
  elseif interactive then
    rl = require "pivday.readline"
  end

  local env = setmetatable({}, { __index = _G })
  local out = io.stdout
  local function say(s)
    if rl then rl.print_above(s) else out:write(s, "\n") out:flush() end
  end
  async.report = function(msg) say("pivday: " .. msg) end
  if opts.setup then opts.setup(env, say) end
  env.pivday = require "pivday"
  local api_line = M.setup_api(env)
  M.show_events(say)

  local buffer = nil     -- lines of an incomplete chunk
  local current = nil    -- the task evaluating a chunk
  local finished = false
  -- A regular file (`pivday < file`) cannot be polled; it never blocks
  -- either, so it is read whole and fed line by line like a pipe.
  local pollable, poll = pcall(core.poll, fd)
  local whole_file
  if not pollable then
    whole_file = io.stdin:read("a") or ""
    poll = { start = function() end, stop = function() end, close = function() end }
  end

  local function prompt()
    return buffer and ">> " or "> "
  end

  local on_line -- forward

  local function show_prompt()
    if rl then rl.start(prompt(), on_line) end
  end

  local pending, input_eof = "", false
  local pump -- forward

  local function evaluate(fn)
    if rl then rl.stop() end
    poll:stop()
    current = async.daemon(function()
      local r = table.pack(xpcall(fn, function(e)
        if type(e) ~= "string" then return e end
        -- Cut the traceback where the REPL's own frames begin.
        local tb = debug.traceback(e, 2)
        return (tb:gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
      end))
      if r[1] then
        if r.n > 1 then out:write(format_results(table.pack(table.unpack(r, 2, r.n))), "\n") end
      else
        out:write(tostring(r[2]), "\n")
      end
      out:flush()
    end)
    -- When it ends (finished, failed or cancelled), read the next input.
    async.daemon(function()
      current:join()
      current = nil
      if rl then
        show_prompt()
        poll:start(M._on_readable)
      else
        pump()
        if not current and not finished then poll:start(M._on_readable) end
      end
    end)
  end

  on_line = function(line)
    if line == nil then -- end of input
      if rl then rl.stop() out:write("\n") end
      if buffer then out:write("stdin: incomplete input at end of file\n") end
      buffer = nil
      finished = true
      poll:stop()
      return
    end
    if rl and line:match("%S") then rl.add_history(line) end
    buffer = buffer or {}
    buffer[#buffer + 1] = line
    local src = table.concat(buffer, "\n")
    local fn, err = M.compile(src, env)
    if not fn and err == "incomplete" then
      show_prompt()
      return
    end
    buffer = nil
    if fn then
      evaluate(fn)
    else
      out:write(err, "\n")
      out:flush()
      show_prompt()
    end
  end

  -- Feeds complete lines while nothing is being evaluated (pipe mode).
  pump = function()
    while not current and not finished do
      local line, rest = pending:match("^([^\n]*)\n(.*)$")
      if line then
        pending = rest
        on_line(line)
      elseif input_eof then
        if pending ~= "" then
          line, pending = pending, ""
          on_line(line)
        else
          on_line(nil)
        end
      else
        return
      end
    end
  end

  function M._on_readable()
    if rl then
      rl.read_char()
      return
    end
    local data = core.read_fd(fd)
    if data == false then return end
    if data == nil then
      input_eof = true
      poll:stop()
    else
      pending = pending .. data
    end
    pump()
  end

  -- Ctrl-C cancels the evaluation, or drops the partial input.
  local sig = core.signal()
  sig:start(core.SIGINT, function()
    if current then
      current:cancel()
    else
      buffer = nil
      if rl then
        out:write("\n")
        show_prompt()
      end
    end
  end)
  sig:unref()

  local hist = history_file()
  if rl then
    if hist then rl.read_history(hist) end
    if opts.banner ~= false then
      out:write(opts.banner or ("pivday " .. core.version .. " - Lua 5.4; Ctrl-D to quit\n"))
      out:write(api_line, "\n")
    end
    rl.set_completer(function(word) return M.complete(env, word) end)
    show_prompt()
  else
    io.stderr:write("pivday: ", api_line, "\n")
  end
  if whole_file then
    pending, input_eof = whole_file, true
    pump()
  else
    poll:start(M._on_readable)
  end
  async.drive(function() return finished end)
  sig:close()
  poll:close()
  if rl and hist then
    rl.write_history(hist)
    M._trim_history(hist)
  end
  return 0
end

-- Keeps the history file bounded.
function M._trim_history(path)
  local f = io.open(path)
  if not f then return end
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  if #lines <= HISTORY_MAX_LINES then return end
  f = io.open(path, "w")
  if not f then return end
  for i = #lines - HISTORY_MAX_LINES + 1, #lines do f:write(lines[i], "\n") end
  f:close()
end

return M
