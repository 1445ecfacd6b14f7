-- Buy a number, start Google QR verification on it, and wait for
-- verify.completed / verify.failed. The flagship flow:
--
--   pivday --sandbox scripts/buy_and_verify.lua --country SE
--   PIVDAY_API_KEY=... pivday scripts/buy_and_verify.lua --country SE \
--       --gv-url 'https://gv.google.com/...' --public-url https://hooks.example.com --max-spend 10
local pivday = require "pivday"
local S = require "pivday.script"

local s = S.new{
  name = "buy_and_verify",
  summary = "Buys a number, starts Google QR verification with it and waits for the result\n"
    .. "(the captured phone, message and code). Prints balance before and after.",
  listener = true,
  options = {
    country = { "value", "country code of the number", "SE" },
    months = { "value", "rental months", "1" },
    auto_renew = { "flag", "turn auto-renewal on" },
    gv_url = { "value", "the Google verification URL (a sample URL under --sandbox)" },
    timeout = { "value", "seconds to wait for the verification result", "600" },
    state = { "value", "state file: a re-run after a crash resumes instead of buying again" },
  },
}
local o = s:parse(arg)
local gv_url = o.gv_url
if not gv_url then
  if not S.sandboxed() then s:usage_error("--gv-url is required against the live service") end
  gv_url = "https://gv.google.com/verify?demo=pivday"
end
local months, timeout = math.tointeger(tonumber(o.months)), tonumber(o.timeout)
if not months or months < 1 then s:usage_error("--months takes a whole number >= 1") end
if not timeout or timeout <= 0 then s:usage_error("--timeout takes seconds > 0") end

local api = s:client()
local hooks = s:listener()
local before = assert(api.account.get()).balance
io.stderr:write(("balance before: %.2f\n"):format(before))

local result, err = pivday.flows.buy_and_verify{
  api = api, hooks = hooks, country_code = o.country, duration_months = months,
  auto_renew = o.auto_renew == true, gv_url = gv_url, timeout = timeout, state = o.state,
}
local after = api.account.get()
if after then io.stderr:write(("balance after: %.2f\n"):format(after.balance)) end
hooks:close()
if result then
  result.balance_before, result.balance_after = before, after and after.balance
end
s:finish(result, err)
