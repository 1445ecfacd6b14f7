--- pivday.script: what the runnable scripts in scripts/ share — named
-- arguments with --help, the LIVE/SANDBOX banner, the client with its
-- spend guard, the webhook listener, the result on stdout (--json for
-- machines) and the exit codes.
--
--     local S = require "pivday.script"
--     local s = S.new{ name = "buy_and_verify", usage = "...", options = {...} }
--     local opts = s:parse(arg)
--     s:finish(pivday.flows.buy_and_verify{...})
local pivday = require "pivday"
local cli = require "pivday.cli"
local pretty = require "pivday.pretty"

local M = {}

--- Exit codes: 0 success, 1 API error, 2 usage, 3 timeout, 4 transport or
-- protocol error.
M.EXIT = { ok = 0, api = 1, usage = 2, timeout = 3, transport = 4, protocol = 4,
  ["local"] = 2, cancelled = 3 }

-- Options every script takes.
local COMMON = {
  json = { "flag", "print the result as JSON" },
  max_spend = { "value", "refuse charging calls past this amount (the costs the API reports)" },
  dry_run = { "flag", "print each charging call instead of sending it" },
  debug = { "flag", "one line per API attempt on stderr (key redacted)" },
  help = { "flag", "this text" },
}

local Script = {}
Script.__index = Script

--- opts: name, summary, options = { name = { "flag"|"value"|"list", help,
-- default } }, listener (true: the script takes --port/--public-url/
-- --journal for its webhook listener).
function M.new(opts)
  local options = {}
  for k, v in pairs(COMMON) do options[k] = v end
  if opts.listener then
    options.port = { "value", "webhook listener port (default 8787; 0 = any)" }
    options.public_url = { "value", "HTTPS address in front of the listener (reverse proxy/tunnel)" }
    options.journal = { "value", "journal file: events survive a crash of this script" }
  end
  for k, v in pairs(opts.options or {}) do options[k] = v end
  return setmetatable({ name = opts.name, summary = opts.summary, options = options,
    listener_wanted = opts.listener }, Script)
end

function Script:usage()
  local names = {}
  for k in pairs(self.options) do names[#names + 1] = k end
  table.sort(names)
  local lines = { ("usage: pivday [--sandbox] scripts/%s.lua [options]"):format(self.name), "",
    self.summary, "", "options:" }
  for _, k in ipairs(names) do
    local o = self.options[k]
    local flag = "--" .. k:gsub("_", "-") .. (o[1] == "flag" and "" or " VALUE")
    local default = o[3] ~= nil and (" (default " .. tostring(o[3]) .. ")") or ""
    lines[#lines + 1] = ("  %-24s %s%s"):format(flag, o[2], default)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "exit codes: 0 success, 1 API error, 2 usage, 3 timeout, 4 transport or protocol error"
  return table.concat(lines, "\n") .. "\n"
end

--- Parses argv; prints usage and exits 0 on --help, 2 on a usage error.
function Script:parse(argv)
  local spec = {}
  for k, v in pairs(self.options) do spec[k] = v[1] end
  local opts, rest = cli.parse(argv or {}, spec)
  if not opts then
    io.stderr:write(self.name, ": ", rest, "\n\n", self:usage())
    os.exit(M.EXIT.usage)
  end
  if opts.help then
    io.stdout:write(self:usage())
    os.exit(0)
  end
  if #rest > 0 then
    io.stderr:write(self.name, ": unexpected argument ", rest[1], "\n\n", self:usage())
    os.exit(M.EXIT.usage)
  end
  for k, v in pairs(self.options) do
    if opts[k] == nil and v[3] ~= nil then opts[k] = v[3] end
  end
  if opts.max_spend and not tonumber(opts.max_spend) then
    self:usage_error("--max-spend takes an amount, got " .. opts.max_spend)
  end
  self.opts = opts
  return opts
end

--- Stops with a usage error naming what is wrong.
function Script:usage_error(msg)
  io.stderr:write(self.name, ": ", msg, "\n")
  os.exit(M.EXIT.usage)
end

--- True under `pivday --sandbox`.
function M.sandboxed()
  return cli.sandbox_instance ~= nil
end

--- The client, with the spend guard and dry-run of the options; says on
-- stderr which service it talks to.
function Script:client()
  local o = self.opts or {}
  local api = pivday.client{ debug = o.debug or nil, max_spend = tonumber(o.max_spend),
    dry_run = o.dry_run or nil }
  io.stderr:write(("%s: %s %s\n"):format(self.name,
    M.sandboxed() and "SANDBOX" or "LIVE", api.base_url))
  return api
end

--- The webhook listener of the options (port, public_url, journal).
function Script:listener()
  local o = self.opts or {}
  local hooks, err = pivday.webhooks{ port = tonumber(o.port) or (M.sandboxed() and 0 or nil),
    public_url = o.public_url, journal = o.journal }
  if not hooks then
    io.stderr:write(self.name, ": cannot listen for webhooks: ", tostring(err), "\n")
    os.exit(M.EXIT.usage)
  end
  if not M.sandboxed() then
    io.stderr:write(("%s: webhooks expected at %s (register it for your key in the dashboard)\n")
      :format(self.name, hooks.url))
  end
  return hooks
end

--- Prints the result (or the error) and exits with the matching code.
function Script:finish(result, err)
  local o = self.opts or {}
  if result == nil then
    io.stderr:write(self.name, ": ", tostring(err), "\n")
    if err and (err.charged or err.refunded) then
      io.stderr:write(("%s: charged %s, refunded %s\n"):format(self.name,
        tostring(err.charged or 0), tostring(err.refunded or 0)))
    end
    if o.json then
      local e = {}
      for k, v in pairs(err or {}) do
        if type(v) ~= "function" then e[k] = v end
      end
      io.stdout:write(pivday.json.encode{ ok = false, error = e }, "\n")
    end
    io.stdout:flush()
    os.exit(M.EXIT[err and err.kind] or 1)
  end
  if o.json then
    io.stdout:write(pivday.json.encode{ ok = true, result = result }, "\n")
  else
    io.stdout:write(pretty.format(result), "\n")
  end
  io.stdout:flush()
  os.exit(0)
end

return M
