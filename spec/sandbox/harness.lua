-- Test harness for the sandbox service without the network: an app on a
-- frozen clock (speed 0, moved with advance) and a fake real-time source for
-- rate limits, plus a `call` that speaks JSON.
local app_mod = require "pivday.sandbox.app"
local json = require "pivday.json"

local H = {}

--- A new sandbox app. opts are passed to app.new (webhooks, ...).
function H.new(opts)
  opts = opts or {}
  local t = { real = 0 }
  opts.speed = opts.speed or 0
  opts.realtime = function() return t.real end
  t.app = app_mod.new(opts)
  t.key = t.app:default_key()
  t.uid = t.app.st.data.default_user

  --- One request to a full path. Returns status, decoded body (the raw
  -- string when it is not JSON), headers, raw body; "DROP" when the app
  -- closes without answering. headers.authorization = false sends none.
  function t.request(method, path, body, query, headers)
    local h = { authorization = "Bearer " .. t.key, host = "127.0.0.1:8790" }
    local peer = "127.0.0.1"
    for k, v in pairs(headers or {}) do
      if k == "peer" then peer = v elseif v == false then h[k] = nil else h[k] = v end
    end
    local raw = body
    if type(body) == "table" then raw = json.encode(body) end
    local status, hdrs, out = t.app:handle {
      method = method, path = path, query = query or "", headers = h, body = raw or "", peer = peer,
    }
    if status == t.app.DROP then return "DROP" end
    return status, json.decode(out) or out, hdrs, out
  end

  --- One API request; `path` is relative to /api/v1.
  function t.call(method, path, body, query, headers)
    return t.request(method, "/api/v1" .. path, body, query, headers)
  end

  --- A control operation over the pure app (as the sandbox object does).
  function t.ctl(name, args)
    return require("pivday.sandbox.control").ops[name](t.app, args or {})
  end

  function t.balance()
    return t.app.st:account(t.uid).balance
  end

  function t.events(kind)
    local out = {}
    for _, e in ipairs(t.app.st.data.events) do
      if not kind or e.event_type == kind then out[#out + 1] = e end
    end
    return out
  end

  function t.buy(country, months, extra)
    local body = { country_code = country or "SE", duration_months = months or 1, auto_renew = false }
    for k, v in pairs(extra or {}) do body[k] = v end
    local s, b = t.call("POST", "/numbers/purchase", body)
    assert(s == 200, "purchase failed: " .. tostring(s) .. " " .. json.encode(b))
    return b.numbers[1].piv_num_id, b
  end

  return t
end

--- Asserts an error answer: status, code, and (optionally) a message part.
function H.err(status, body, want_status, want_code, want_msg)
  assert(type(body) == "table" and body.success == false,
    "expected an error envelope, got " .. tostring(status) .. " " .. (type(body) == "table" and json.encode(body) or tostring(body)))
  assert(status == want_status and body.error.code == want_code,
    ("expected %d %s, got %s %s: %s"):format(want_status, want_code, tostring(status), body.error.code, body.error.message))
  if want_msg then
    assert(body.error.message:find(want_msg, 1, true),
      ("message %q lacks %q"):format(body.error.message, want_msg))
  end
end

return H
