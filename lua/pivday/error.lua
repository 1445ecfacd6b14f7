--- pivday.Error: the one error shape every part of pivday returns.
--
-- Fields: `kind` ("api" | "transport" | "timeout" | "protocol" | "local" |
-- "cancelled"), `code` (the API's error.code verbatim for kind "api", curl's
-- name such as COULDNT_CONNECT for "transport", TIMEOUT, BAD_RESPONSE,
-- VALIDATION_ERROR, CANCELLED), `message`, `status` (when there was an HTTP
-- answer), and whatever the raiser adds (retry_after, method, path, attempts,
-- retryable, outcome_unknown, ...).
local Error = {}
Error.__index = Error
Error.__name = "pivday.Error"

local KINDS = {
  api = true, transport = true, timeout = true, protocol = true,
  ["local"] = true, cancelled = true,
}

function Error.__tostring(e)
  local code = e.code or "ERROR"
  local msg = e.message or ""
  if e.status then
    return ("%s (%d): %s"):format(code, e.status, msg)
  end
  return ("%s: %s"):format(code, msg)
end

--- Makes an error from a table of fields (the table becomes the error).
function Error.new(fields)
  if type(fields) ~= "table" then
    error("bad argument #1 to 'Error.new' (table expected, got " .. type(fields) .. ")", 2)
  end
  if not KINDS[fields.kind] then
    error("bad argument #1 to 'Error.new' (unknown kind '" .. tostring(fields.kind) .. "')", 2)
  end
  return setmetatable(fields, Error)
end

--- True when x is a pivday.Error.
function Error.is(x)
  return getmetatable(x) == Error
end

return setmetatable(Error, {
  __call = function(_, fields) return Error.new(fields) end,
})
