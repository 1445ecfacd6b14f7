--- pivday call: any catalogue method from the shell.
--
--   pivday call numbers.list status=active limit=10
--   pivday call numbers.get 42
--   pivday call numbers.purchase country_code=SE duration_months=1 auto_renew=false -o json
--
-- Values are typed by the catalogue (integer, number, boolean, string; JSON
-- for arrays and objects); path parameters come first, positionally or by
-- name. Exit codes: 0 success, 1 API error, 2 usage, 3 timeout, 4 transport
-- or protocol error (and a local validation error is a usage error).
local catalogue = require "pivday.catalogue"
local json = require "pivday.json"
local pretty = require "pivday.pretty"
local cli = require "pivday.cli"

local M = {}

M.EXIT = { ok = 0, api = 1, usage = 2, timeout = 3, transport = 4, protocol = 4,
  ["local"] = 2, cancelled = 3 }

local HELP = [[
usage: pivday call METHOD [PATH_PARAM ...] [name=value ...] [-o json|table] [--debug]

Calls one API method (the ids of the catalogue, e.g. numbers.list) and
prints its result. Values are typed from the catalogue; arrays and objects
are given as JSON (dns_records='[{"type":"A","name":"@","content":"1.2.3.4"}]').
The key comes from PIVDAY_API_KEY or ~/.config/pivday/key; with
`pivday --sandbox call ...` an in-process sandbox answers instead.

  -o json     print the result as JSON (for machines)
  --debug     one line per attempt on stderr (key redacted)
  --list      list every method with its parameters

exit codes: 0 success, 1 API error, 2 usage or validation, 3 timeout,
4 transport or protocol error
]]

local function field_of(ep, name)
  for _, f in ipairs(ep.body) do if f.name == name then return f end end
  for _, f in ipairs(ep.query) do if f.name == name then return f end end
end

--- Converts a command-line string to the type the catalogue gives.
function M.typed(f, raw)
  local t = f and f.type or "string"
  if t == "integer" then
    local v = math.tointeger(tonumber(raw))
    if not v then return nil, ("%s must be an integer, got %q"):format(f.name, raw) end
    return v
  elseif t == "number" then
    local v = tonumber(raw)
    if not v then return nil, ("%s must be a number, got %q"):format(f.name, raw) end
    return v
  elseif t == "boolean" then
    if raw == "true" then return true elseif raw == "false" then return false end
    return nil, ("%s must be true or false, got %q"):format(f.name, raw)
  elseif t == "array" or t == "object" then
    local v, err = json.decode(raw)
    if v == nil then return nil, ("%s must be JSON: %s"):format(f.name, err) end
    if t == "array" and type(v) == "table" then json.array(v) end
    return v
  end
  return raw
end

local function list_methods(out)
  for _, ep in ipairs(catalogue.endpoints) do
    local parts = {}
    for _, p in ipairs(ep.params) do parts[#parts + 1] = "<" .. p .. ">" end
    for _, f in ipairs(ep.method == "GET" and ep.query or ep.body) do
      parts[#parts + 1] = (f.required == true and "%s=" or "[%s=]"):format(f.name)
    end
    out:write(("%-28s %-6s %s\n"):format(ep.id, ep.method, table.concat(parts, " ")))
  end
end

--- Parses the arguments into (endpoint, ids, args, options), or nil, msg.
function M.parse(argv)
  local opts, rest = cli.parse(argv, { o = "value", output = "value", debug = "flag",
    help = "flag", list = "flag", timeout = "value" })
  if not opts then return nil, rest end
  -- `-o json` is the short form.
  local words = {}
  local i = 1
  while i <= #rest do
    if rest[i] == "-o" then
      opts.output = rest[i + 1]
      i = i + 2
    else
      words[#words + 1] = rest[i]
      i = i + 1
    end
  end
  opts.output = opts.output or opts.o or "table"
  if opts.output ~= "table" and opts.output ~= "json" then
    return nil, "-o takes json or table"
  end
  if opts.help or opts.list then return false, opts end
  local id = table.remove(words, 1)
  if not id then return nil, "which method? (pivday call --list)" end
  local ep = catalogue.by_id(id)
  if not ep then return nil, ("no method %q (pivday call --list)"):format(id) end
  local ids, args, named = {}, {}, {}
  for _, w in ipairs(words) do
    local k, v = w:match("^([%w_]+)=(.*)$")
    if k then named[#named + 1] = { k, v } else ids[#ids + 1] = w end
  end
  for _, kv in ipairs(named) do
    local k, v = kv[1], kv[2]
    local is_param = false
    for pi, p in ipairs(ep.params) do
      if p == k then ids[pi] = v is_param = true end
    end
    if not is_param then
      local val, err = M.typed(field_of(ep, k), v)
      if val == nil then return nil, err end
      args[k] = val
    end
  end
  if #ids ~= #ep.params then
    return nil, ("%s takes %d path parameter(s) (%s), got %d"):format(
      id, #ep.params, table.concat(ep.params, ", "), #ids)
  end
  return ep, ids, args, opts
end

function M.main(argv)
  local ep, ids, args, opts = M.parse(argv)
  if ep == nil then
    io.stderr:write("pivday call: ", ids, "\n")
    return M.EXIT.usage
  end
  if ep == false then
    if ids.list then list_methods(io.stdout) else io.stdout:write(HELP) end
    return 0
  end
  local pivday = require "pivday"
  local api = pivday.client{ debug = opts.debug or nil, timeout = tonumber(opts.timeout) }
  local section, name = ep.id:match("^([^.]+)%.(.+)$")
  local params = {}
  for i = 1, #ids do params[i] = ids[i] end
  params[#params + 1] = args
  local res, err = api[section][name](table.unpack(params))
  if res == nil then
    io.stderr:write("pivday call: ", tostring(err), "\n")
    return M.EXIT[err.kind] or 1
  end
  if opts.output == "json" then
    io.stdout:write(json.encode(res), "\n")
  else
    io.stdout:write(pretty.format(res), "\n")
  end
  return 0
end

return M
