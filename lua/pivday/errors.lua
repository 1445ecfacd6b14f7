--- pivday.errors: constants for the error codes pivday can hand you.
--
-- `errors.NUMBER_NOT_FOUND == "NUMBER_NOT_FOUND"`. The table is read-only and
-- a misspelt name raises, so `err.code == errors.NUMBR_NOT_FOUND` fails loudly
-- instead of being silently false. The list is not closed the other way: a
-- code the server sends that is not listed here still reaches you verbatim in
-- `err.code` (QUIRKS 15: keep error enums open).
--
-- Contents: every code the API documents (global table and endpoint
-- sections, from pivday.catalogue), the webhook-only VERIFY_TIMEOUT, and the
-- codes pivday itself uses for errors that do not come from the API.
local catalogue = require "pivday.catalogue"

local codes = {}

for code in pairs(catalogue.errors) do codes[code] = code end
for _, code in ipairs(catalogue.webhook_error_codes) do codes[code] = code end

-- pivday's own codes (kind ~= "api"). VALIDATION_ERROR is shared with the
-- API: local validation uses the same code, with kind "local".
for _, code in ipairs {
  "BAD_RESPONSE",      -- protocol: not JSON, or not the {success, ...} envelope
  "TIMEOUT",           -- timeout: an attempt or the call's deadline ran out
  "CANCELLED",         -- cancelled: the task was cancelled while waiting
  "MISSING_API_KEY",   -- local: no key in options, environment or key file
  "INSECURE_KEY_FILE", -- local: the key file is readable by group or others
} do
  codes[code] = code
end

-- The proxy stays empty so that every read goes through __index (to catch
-- misspellings) and every write through __newindex (to refuse overwrites).
local M = setmetatable({}, {
  __name = "pivday.errors",
  __index = function(_, name)
    local v = codes[name]
    if v == nil then
      error("pivday.errors: unknown error code '" .. tostring(name) .. "'", 2)
    end
    return v
  end,
  __newindex = function()
    error("pivday.errors is read-only", 2)
  end,
  -- `for code in pairs(pivday.errors)` lists the known codes.
  __pairs = function()
    return next, codes, nil
  end,
})

return M
