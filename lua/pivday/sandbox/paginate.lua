--- pivday.sandbox.paginate: limit/offset for every paginated list.
--
-- Per list the default and the cap come from policy.pages (numbers and SMS
-- 50/200, orders/domains/whites 100/500). A limit above the cap is clamped
-- (the answer's pagination.limit shows the value used); a limit below 1, a
-- negative offset or a non-integer is VALIDATION_ERROR. An offset past the
-- end gives an empty list.
local json = require "pivday.json"
local policy = require "pivday.sandbox.policy"
local reply = require "pivday.sandbox.reply"

local M = {}

local function int_param(query, name, min)
  local raw = query[name]
  if raw == nil or raw == "" then return nil end
  local n = raw:match("^%s*(%-?%d+)%s*$")
  n = n and math.tointeger(tonumber(n))
  if not n then reply.invalid(name, "must be an integer (got '" .. raw .. "')") end
  if n < min then reply.invalid(name, ("must be at least %d (got %d)"):format(min, n)) end
  return n
end

--- Reads limit and offset for the list `kind` ("numbers", "sms", ...).
function M.params(query, kind)
  local page = policy.pages[kind]
  local limit = int_param(query, "limit", 1) or page.default
  if limit > page.max then limit = page.max end
  local offset = int_param(query, "offset", 0) or 0
  return limit, offset
end

--- Pages `items` (already filtered and ordered), rendering each with
-- `render`. Returns the list (a JSON array, `[]` when empty) and the
-- pagination object.
function M.page(items, query, kind, render)
  local limit, offset = M.params(query, kind)
  local out = json.array()
  for i = offset + 1, math.min(#items, offset + limit) do
    out[#out + 1] = render(items[i])
  end
  return out, { total = #items, limit = limit, offset = offset }
end

return M
