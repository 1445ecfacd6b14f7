--- pivday.cli.trigger: `pivday trigger EVENT`, make the sandbox emit an event.
--
-- The sandbox then delivers it to the webhook URL of its API key, with the
-- documented retries, exactly like a real one. Known event types start from
-- the example payload of the API reference (§6), so `pivday trigger
-- sms.received` alone gives a realistic event; `--set data.field=value`
-- changes fields. Uses the sandbox control API: POST /_sandbox/events.
local pivday = require "pivday"
local cli = require "pivday.cli"
local json = require "pivday.json"

local M = {}

local DEFAULT_SANDBOX = "http://127.0.0.1:8790"

--- Example data of each documented event (REFERENCE.md §6), used as the
-- starting point of `trigger`. Values as documented, including the integer
-- task_id/sms_message_id of the verify events (QUIRKS 7).
M.EXAMPLES = {
  ["sms.received"] = { piv_num_id = "vzPA1-kHKSg-EAL7e-Jqd3o", text = "Your verification code is 123456",
    code = "123456", country = "SE", received_at = "2026-05-22T12:34:56Z" },
  ["sms.status_updated"] = { piv_num_id = "vzPA1-kHKSg-EAL7e-Jqd3o", message_id = "42", old_status = "sent",
    new_status = "delivered", error_code = json.null, error_message = json.null },
  ["number.restore_completed"] = {
    restored = json.array{ { piv_num_id = "vzPA1-kHKSg-EAL7e-Jqd3o", phone_number = "+46764794425", country = "SE" } },
    failed = json.array{ { piv_num_id = "abc12-defgh-ijklm-nopqr", phone_number = "+46123456789", country = "SE",
      refunded = 7.5 } },
    total_restored = 1, total_failed = 1, total_refunded = 7.5 },
  ["verify.completed"] = { task_id = 12, piv_num_id = "vzPA1-kHKSg-EAL7e-Jqd3o", status = "sms_sent",
    captured_phone = "+14155551234", captured_message = "Your Google verification code is 123456",
    sms_message_id = 42, sms_status = "queued" },
  ["verify.failed"] = { task_id = 12, piv_num_id = "vzPA1-kHKSg-EAL7e-Jqd3o", status = "failed",
    error_code = "VERIFY_TIMEOUT", error_message = "Verification timed out" },
  ["proxy.expires_soon"] = { order_id = "ord-uuid-...", country = "DE", quantity = 10,
    expires_at = "2026-05-25T00:00:00Z" },
  ["domain.registered"] = { domain_id = "dom-uuid-...", domain_name = "mysite.com",
    registered_at = "2026-05-22T12:34:56Z", expires_at = "2027-05-22T12:34:56Z", cloudflare_enabled = true },
  ["domain.failed"] = { domain_id = "dom-uuid-...", domain_name = "mysite.com",
    error = "Domain is no longer available" },
  ["domain.expires_soon"] = { domain_id = "dom-uuid-...", domain_name = "mysite.com",
    expires_at = "2026-05-29T00:00:00Z", auto_renew = false },
  ["white.completed"] = { job_id = "job-uuid-...", name = "My White", tier_key = "t1", country = "DE" },
  ["white.failed"] = { job_id = "job-uuid-...", name = "My White", error = "Generation failed" },
}

local USAGE = [[
usage: pivday trigger EVENT [--set data.FIELD=VALUE ...] [--no-example]
                      [--sandbox-url URL] [--api-key KEY]
Makes the sandbox emit EVENT to the webhook URL of its API key (start it with
`pivday sandbox --webhook-url URL`, e.g. the URL `pivday listen` prints).
Documented events start from the reference's example data:
  ]] .. (function()
    local names = {}
    for k in pairs(M.EXAMPLES) do names[#names + 1] = k end
    table.sort(names)
    local lines, line = {}, ""
    for i, n in ipairs(names) do
      local piece = n .. (i < #names and "," or "")
      if #line + #piece > 72 then lines[#lines + 1] = line line = "" end
      line = line == "" and piece or (line .. " " .. piece)
    end
    lines[#lines + 1] = line
    return table.concat(lines, "\n  ")
  end)() .. [[

Other types are sent as given (with empty data unless --set).
  --set data.F=V     set a data field (nested: data.a.b=V); V is read as JSON
                     when it parses (12, true, null, "42", {...}), else as text
  --no-example       start from empty data
  --sandbox-url URL  the sandbox (default: $PIVDAY_SANDBOX_URL, else ]] .. DEFAULT_SANDBOX .. [[)
  --api-key KEY      emit to this key's account (default: the sandbox's default)
]]

local SPEC = { set = "list", no_example = "flag", sandbox_url = "value", api_key = "value", help = "flag" }

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return json.is_array(v) and json.array(t) or t
end

--- Applies "data.a.b=value" to data. Returns true, or nil and a message.
function M.apply_set(data, spec)
  local path, raw = spec:match("^([^=]+)=(.*)$")
  if not path then return nil, ("--set %s: want data.FIELD=VALUE"):format(spec) end
  path = path:gsub("^data%.", "")
  local keys = {}
  for k in path:gmatch("[^.]+") do keys[#keys + 1] = k end
  if #keys == 0 or path:find("%.%.") or path:sub(-1) == "." then
    return nil, ("--set %s: bad field name"):format(spec)
  end
  local value = raw
  if raw ~= "" then
    local v = json.decode(raw)
    if v ~= nil then value = v end
  end
  local t = data
  for i = 1, #keys - 1 do
    local k = keys[i]
    if type(t[k]) ~= "table" then t[k] = {} end
    t = t[k]
  end
  local last = keys[#keys]
  -- A field the example has as text stays text: code=999 means "999".
  if type(t[last]) == "string" and (type(value) == "number" or type(value) == "boolean") then value = raw end
  t[last] = value
  return true
end

--- Builds the data of EVENT from the example (unless no_example) and the
-- --set list. Returns data, or nil and a message.
function M.build_data(event_type, sets, no_example)
  local data = (not no_example and deep_copy(M.EXAMPLES[event_type])) or {}
  for _, s in ipairs(sets or {}) do
    local ok, err = M.apply_set(data, s)
    if not ok then return nil, err end
  end
  return data
end

--- Asks the sandbox at base_url to emit. Returns its answer {event_type,
-- timestamp, deliveries}, or nil and a message.
function M.emit(base_url, event_type, data, api_key)
  local res, err = pivday.http.request{
    method = "POST", url = base_url:gsub("/+$", "") .. "/_sandbox/events", timeout = 10, connect_timeout = 5,
    headers = { ["content-type"] = "application/json" },
    body = json.encode{ event_type = event_type, data = data, api_key = api_key },
  }
  if not res then
    return nil, ("cannot reach the sandbox at %s: %s (is `pivday sandbox` running? see --sandbox-url)")
      :format(base_url, tostring(err))
  end
  local body = json.decode(res.body)
  if type(body) ~= "table" then
    return nil, ("%s did not answer like a pivday sandbox (HTTP %d)"):format(base_url, res.status)
  end
  if not body.success then
    local e = type(body.error) == "table" and body.error or {}
    return nil, ("sandbox refused: %s: %s"):format(tostring(e.code), tostring(e.message))
  end
  return body.data
end

--- `pivday trigger EVENT ...`. Returns the exit status (0 ok, 1 failure,
-- 2 usage).
function M.main(args)
  local o, rest = cli.parse(args or {}, SPEC)
  if not o then
    io.stderr:write("pivday trigger: ", rest, "\n", USAGE)
    return 2
  end
  if o.help then
    io.stdout:write(USAGE)
    return 0
  end
  if #rest ~= 1 then
    io.stderr:write("pivday trigger: ", #rest == 0 and "which EVENT?" or "one EVENT at a time", "\n", USAGE)
    return 2
  end
  local event_type = rest[1]
  if not event_type:match("^[%w_.%-]+$") then
    io.stderr:write("pivday trigger: '", event_type, "' is not an event type\n")
    return 2
  end
  local data, derr = M.build_data(event_type, o.set, o.no_example)
  if not data then
    io.stderr:write("pivday trigger: ", derr, "\n")
    return 2
  end
  local url = o.sandbox_url or os.getenv("PIVDAY_SANDBOX_URL") or DEFAULT_SANDBOX
  local status = 0
  pivday.run(function()
    local ans, err = M.emit(url, event_type, data, o.api_key)
    if not ans then
      io.stderr:write("pivday trigger: ", err, "\n")
      status = 1
      return
    end
    io.stdout:write(("emitted %s at %s: %d delivery(ies) started\n")
      :format(ans.event_type or event_type, tostring(ans.timestamp), tonumber(ans.deliveries) or 0))
    if ans.deliveries == 0 then
      io.stderr:write("pivday trigger: the key has no webhook URL, so nothing was sent "
        .. "(start the sandbox with --webhook-url URL)\n")
      status = 1
    end
  end)
  return status
end

return M
