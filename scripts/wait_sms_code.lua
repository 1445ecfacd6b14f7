-- Wait for the next SMS to a number and print the code it carries.
--
--   pivday scripts/wait_sms_code.lua --number vzPA1-kHKSg-EAL7e-Jqd3o --timeout 300
local pivday = require "pivday"
local S = require "pivday.script"

local s = S.new{
  name = "wait_sms_code",
  summary = "Waits for sms.received on a number and prints the code (from the payload,\n"
    .. "or from the text with --pattern, a Lua pattern with one capture).",
  listener = true,
  options = {
    number = { "value", "piv_num_id of the number" },
    timeout = { "value", "seconds to wait", "300" },
    pattern = { "value", "Lua pattern capturing the code in the text" },
  },
}
local o = s:parse(arg)
if not o.number then s:usage_error("--number is required") end
local timeout = tonumber(o.timeout)
if not timeout or timeout <= 0 then s:usage_error("--timeout takes seconds > 0") end
s:client()
local hooks = s:listener()
local result, err = pivday.flows.wait_sms_code{ hooks = hooks, piv_num_id = o.number,
  timeout = timeout, pattern = o.pattern }
hooks:close()
s:finish(result, err)
