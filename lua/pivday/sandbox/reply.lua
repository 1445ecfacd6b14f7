--- pivday.sandbox.reply: the service's answers, as the reference writes them.
--
-- The `{success, data | error{code, message}}` envelope, the status of every
-- documented error code (the sandbox keeps its own table: it is the service,
-- it does not take its answers from the client's catalogue), and `fail`,
-- which handlers use to stop with an API error (raised as a table that
-- app.lua catches; any other error is a bug and answers INTERNAL_ERROR).
local json = require "pivday.json"

local M = {}

--- Every code the reference documents, with its HTTP status, plus NOT_FOUND
-- for unknown routes and unknown objects of resources without their own
-- not-found code.
M.STATUS = {
  UNAUTHORIZED = 401,
  INSUFFICIENT_PERMISSIONS = 403,
  PERMISSION_DENIED = 403,
  VALIDATION_ERROR = 400,
  NUMBER_NOT_FOUND = 404,
  NUMBER_EXPIRED = 403,
  NUMBER_NOT_ACTIVE = 400,
  INSUFFICIENT_BALANCE = 402,
  INVALID_MESSAGE_FORMAT = 400,
  COUNTRY_NOT_AVAILABLE = 400,
  NO_NUMBERS_AVAILABLE = 400,
  NO_RESTORABLE_NUMBERS = 404,
  RATE_LIMITED = 429,
  INTERNAL_ERROR = 500,
  SMS_DISABLED = 400,
  PROXY_DEAD = 502,
  QUEUE_FULL = 503,
  SERVER_UNAVAILABLE = 503,
  NOT_FOUND = 404,
  DOMAIN_NOT_AVAILABLE = 400,
  INVALID_TIER = 400,
  NOT_READY = 409,
}

local ApiError = { __name = "pivday.sandbox.ApiError" }
ApiError.__index = ApiError
function ApiError.__tostring(e) return e.code .. ": " .. e.message end

--- Makes an API error. `headers` (optional) are added to the answer.
function M.error(code, message, headers)
  local status = M.STATUS[code]
  if not status then error("pivday.sandbox: undocumented error code " .. tostring(code), 2) end
  return setmetatable({ code = code, message = message, status = status, headers = headers }, ApiError)
end

--- Stops the current handler with an API error.
function M.fail(code, message, headers)
  error(M.error(code, message, headers), 0)
end

--- Stops with VALIDATION_ERROR naming the field and the rule.
function M.invalid(field, rule)
  M.fail("VALIDATION_ERROR", field .. ": " .. rule)
end

function M.is_error(x)
  return getmetatable(x) == ApiError
end

--- A successful answer. `data` goes under "data" (wrapped = true, the
-- default) or its fields sit next to "success" (the three top-level quirks).
function M.ok(data, status)
  return { status = status or 200, body = { success = true, data = data } }
end

function M.top(fields, status)
  local body = { success = true }
  for k, v in pairs(fields) do body[k] = v end
  return { status = status or 200, body = body }
end

--- The response triple the HTTP server wants.
function M.render(res)
  local headers = { ["content-type"] = "application/json" }
  for k, v in pairs(res.headers or {}) do headers[k] = v end
  return res.status, headers, json.encode(res.body)
end

--- The answer for an API error.
function M.from_error(e)
  return {
    status = e.status,
    headers = e.headers,
    body = { success = false, error = { code = e.code, message = e.message } },
  }
end

return M
