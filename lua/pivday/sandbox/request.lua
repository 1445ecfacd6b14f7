--- pivday.sandbox.request: reading a request's query string and JSON body.
local json = require "pivday.json"
local reply = require "pivday.sandbox.reply"

local M = {}

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Decodes a raw query string into name -> value (the last one wins).
function M.query(qs)
  local out = {}
  for pair in (qs or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[unescape(k)] = unescape(v)
  end
  return out
end

--- The JSON object in `raw` ({} when empty); stops with VALIDATION_ERROR
-- when it is not JSON or not an object.
function M.body(raw)
  raw = raw or ""
  if raw:match("^%s*$") then return {} end
  local v, err = json.decode(raw)
  if v == nil and err then
    reply.fail("VALIDATION_ERROR", "body: malformed JSON (" .. tostring(err) .. ")")
  end
  if type(v) ~= "table" or v[1] ~= nil or json.is_array(v) then
    reply.fail("VALIDATION_ERROR", "body: must be a JSON object")
  end
  return v
end

return M
