--- pivday.sandbox.reply: the service's answers, as the reference writes them.
--
-- The `{success, data | error{code, message}}` envelope, the status of every
-- documented error code, and `fail`,
-- which handlers use to stop with an API error (raised as a table that
-- app.lua catches; any other error is a bug and answers INTERNAL_ERROR).
local json = require "pivday.json"

local M = {}

--- Every code the reference documents, with its HTTP status (NOT_FOUND is
-- also what unknown routes and unknown objects of resources without their
-- own not-found code get). The table is the catalogue's transcription of
-- the reference, checked against endpoints.json by spec/unit/catalogue_spec.
M.STATUS = require("pivday.catalogue").errors

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
