--- pivday.sandbox.handlers.common: checks several resources share.
local reply = require "pivday.sandbox.reply"
local validate = require "pivday.sandbox.validate"

local M = {}

--- The caller's object `id` in collection `coll`, or NOT_FOUND naming it
-- (the reference documents no not-found code for orders, domains, queue
-- entries, records or whites; the sandbox uses NOT_FOUND for all of them).
function M.owned(ctx, coll, id, what)
  local obj = ctx.st:owned(coll, id, ctx.uid)
  if not obj then reply.fail("NOT_FOUND", ("%s %s not found"):format(what, tostring(id))) end
  return obj
end

--- True for a lowercase-able host name with at least two labels.
function M.is_hostname(s)
  if type(s) ~= "string" or #s > 253 or not s:find(".", 1, true) then return false end
  for label in (s .. "."):gmatch("([^.]*)%.") do
    if #label < 1 or #label > 63 or not label:match("^[%w%-]+$")
      or label:sub(1, 1) == "-" or label:sub(-1) == "-" then
      return false
    end
  end
  return true
end

--- Stops with VALIDATION_ERROR unless body[field] (when present) is a host name.
function M.check_hostname(body, field, example)
  local v = validate.opt(body, field)
  if v ~= nil and not M.is_hostname(v) then
    reply.invalid(field, ("must be a domain name such as %s (got '%s')"):format(example or "mysite.com", v))
  end
  return v and v:lower()
end

--- Case-insensitive substring test (plain text, no patterns).
function M.contains(haystack, needle)
  return haystack ~= nil and haystack:lower():find(needle:lower(), 1, true) ~= nil
end

--- A "true"/"false" query filter (nil when absent).
function M.bool_filter(query, name)
  local v = validate.query_enum(query, name, { "true", "false" })
  if v == nil then return nil end
  return v == "true"
end

--- Items of `list` for which every predicate in `preds` holds (nil
-- predicates are skipped).
function M.filter(list, preds)
  local out = {}
  for _, x in ipairs(list) do
    local keep = true
    for _, p in pairs(preds) do
      if not p(x) then keep = false break end
    end
    if keep then out[#out + 1] = x end
  end
  return out
end

return M
