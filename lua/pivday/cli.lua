--- pivday.cli: the host's subcommands and its --sandbox switch.
-- Each subcommand lives in pivday.cli.<name> and exports main(args) -> exit
-- code; the host calls them with the arguments after the command name.
local M = {}

local COMMANDS = { "sandbox", "listen", "events", "trigger", "call", "doctor" }

for _, name in ipairs(COMMANDS) do
  M[name] = function(args)
    return require("pivday.cli." .. name).main(args)
  end
end

--- The in-process sandbox of `pivday --sandbox`, once started.
M.sandbox_instance = nil

--- `pivday --sandbox ...`: starts an in-process sandbox before the script
-- or the REPL runs, and makes it the default target of pivday.client{}
-- whatever PIVDAY_API_KEY / PIVDAY_BASE_URL say, so a sandbox run can never
-- reach the live service.
function M.use_sandbox()
  local sandbox = require "pivday.sandbox"
  -- PIVDAY_SANDBOX_SPEED runs its clock faster (make demo uses it).
  local sb = assert(sandbox.new{ speed = tonumber(os.getenv("PIVDAY_SANDBOX_SPEED")) })
  M.sandbox_instance = sb
  local client = require "pivday.client"
  client.defaults = { base_url = sb.base_url, api_key = sb.api_key, locked = true }
  -- A listener the script opens becomes the key's webhook URL.
  require("pivday.webhooks").on_open = function(hooks) sb:set_webhook_url(hooks.local_url) end
  io.stderr:write(("pivday: SANDBOX at %s (no money is spent)\n"):format(sb.base_url))
  return 0
end

--- The end of a command whose arguments did not parse: with `err`, the
-- message and the usage on stderr (exit 2); without, --help: the usage on
-- stdout (exit 0). Returns the exit code.
function M.usage_exit(command, err, usage)
  if err then
    io.stderr:write("pivday ", command, ": ", err, "\n", usage)
    return 2
  end
  io.stdout:write(usage)
  return 0
end

--- Splits `--name value`, `--name=value` and `--flag` arguments.
-- spec: name -> "flag" | "value" | "list". Returns options, positionals, or
-- nil and a usage message.
function M.parse(args, spec)
  local opts, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w%-_]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-_]+)$")
    if a == "--" then
      for j = i + 1, #args do rest[#rest + 1] = args[j] end
      break
    elseif name then
      local key = name:gsub("%-", "_")
      local kind = spec[key]
      if not kind then return nil, ("unknown option --%s"):format(name) end
      if kind == "flag" then
        if inline then return nil, ("--%s takes no value"):format(name) end
        opts[key] = true
      else
        local v = inline
        if v == nil then
          i = i + 1
          v = args[i]
          if v == nil then return nil, ("--%s needs a value"):format(name) end
        end
        if kind == "list" then
          opts[key] = opts[key] or {}
          table.insert(opts[key], v)
        else
          opts[key] = v
        end
      end
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return opts, rest
end

return M
