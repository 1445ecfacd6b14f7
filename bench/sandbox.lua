--- bench/sandbox.lua: row 5, GET /account against the in-process sandbox.
--
--     pivday bench/sandbox.lua N C
--
-- The sandbox and the client share the process and its loop (as in our own
-- test suite). Prints the raw client's line format.
local pivday = require "pivday"

local n, c = math.tointeger(tonumber(arg[1])), math.tointeger(tonumber(arg[2]))
if not (n and c and n > 0 and c > 0) then
  io.stderr:write("usage: pivday bench/sandbox.lua N C\n")
  os.exit(2)
end

local load = dofile((arg[0]:match("^(.*)/") or ".") .. "/account_load.lua")

print(pivday.run(function()
  local sb = assert(pivday.sandbox{ port = 0 })
  local api = pivday.client{ base_url = sb.base_url, api_key = sb.api_key,
    concurrency = c, max_retries = 0, timeout = 30 }
  assert(api.account.get()) -- warm: the first call loads the handlers
  local line = load(api, n, c)
  sb:close()
  return line
end))
