--- pivday.flows: the automations people script, each a few lines to call.
-- Every flow takes the API's own field names, starts the action, awaits its
-- webhook (or polls where the API has a status and no listener was given),
-- reports progress on stderr, and returns a result with `charged` and
-- `refunded`, or nil and a pivday.Error carrying the same two fields.
local numbers = require "pivday.flows.numbers"
local domains = require "pivday.flows.domains"
local whites = require "pivday.flows.whites"
local proxy = require "pivday.flows.proxy"

return {
  buy_and_verify = numbers.buy_and_verify,
  wait_sms_code = numbers.wait_sms_code,
  restore = numbers.restore,
  register_domain = domains.register_domain,
  white = whites.white,
  proxy_autorenew = proxy.proxy_autorenew,
}
