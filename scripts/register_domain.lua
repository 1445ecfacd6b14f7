-- Check, register and wait for a domain.
--
--   pivday scripts/register_domain.lua --domain mysite.com --dns A:@:1.2.3.4
--   pivday scripts/register_domain.lua --domain mysite.com --no-cloudflare --ns ns1.host.com --ns ns2.host.com
local pivday = require "pivday"
local S = require "pivday.script"

local s = S.new{
  name = "register_domain",
  summary = "Searches, registers and waits for domain.registered / domain.failed (or polls\n"
    .. "the registration queue with --poll), then prints the full domain.",
  listener = true,
  options = {
    domain = { "value", "domain to register" },
    period = { "value", "years (1-10)", "1" },
    no_cloudflare = { "flag", "do not connect Cloudflare (then give --ns twice or more)" },
    ns = { "list", "nameserver (without Cloudflare; at least 2)" },
    dns = { "list", "initial DNS record TYPE:NAME:CONTENT (with Cloudflare)" },
    ssl_mode = { "value", "flexible | full | strict (with Cloudflare)" },
    auto_renew = { "flag", "turn auto-renewal on" },
    poll = { "flag", "poll the queue instead of listening for the webhook" },
    timeout = { "value", "seconds to wait", "900" },
  },
}
local o = s:parse(arg)
if not o.domain then s:usage_error("--domain is required") end
local period = math.tointeger(tonumber(o.period))
if not period then s:usage_error("--period takes a whole number of years") end
local records
for _, spec in ipairs(o.dns or {}) do
  local t, n, c = spec:match("^(%w+):([^:]+):(.+)$")
  if not t then s:usage_error("--dns takes TYPE:NAME:CONTENT, got " .. spec) end
  records = records or {}
  records[#records + 1] = { type = t, name = n, content = c }
end
local api = s:client()
local hooks = not o.poll and s:listener() or nil
local result, err = pivday.flows.register_domain{ api = api, hooks = hooks, domain = o.domain,
  period = period, cloudflare = not o.no_cloudflare, auto_renew = o.auto_renew == true,
  nameservers = o.ns, dns_records = records, ssl_mode = o.ssl_mode, timeout = tonumber(o.timeout) }
if hooks then hooks:close() end
s:finish(result, err)
