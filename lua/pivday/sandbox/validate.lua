--- pivday.sandbox.validate: request checks that name the field and the rule.
--
-- A schema is a list of field rules:
--   { name, type = "string"|"integer"|"number"|"boolean"|"array"|"object",
--     required = true, min =, max = (integer range), min_len =, max_len =
--     (UTF-8 characters), enum = {...}, items = "string" | {rules} (arrays),
--     min_items =, max_items =, pattern = {lua_pattern, "rule text"},
--     check = function(value) -> nil | "rule text" }
-- `check(body, schema)` stops the handler with VALIDATION_ERROR at the first
-- broken rule; JSON null counts as absent. Unknown fields are ignored, as
-- most services do.
local json = require "pivday.json"
local reply = require "pivday.sandbox.reply"

local M = {}

local mtype = math.type
local null = json.null

local function describe(v)
  if v == null then return "null" end
  local t = type(v)
  if t == "number" then return mtype(v) == "integer" and "integer" or "number" end
  if t == "table" then return (json.is_array(v) or v[1] ~= nil) and "array" or "object" end
  return t
end

--- The number of characters of a UTF-8 string (nil when it is not UTF-8).
function M.chars(s)
  return utf8.len(s)
end

local function quote(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  return tostring(v)
end

local check_field

-- Checks value `v` against `rule`; `label` is the field path for messages.
local function check_value(v, rule, label)
  local t = rule.type
  if t == "integer" then
    if mtype(v) ~= "integer" then reply.invalid(label, "must be an integer (got " .. describe(v) .. ")") end
  elseif t == "number" then
    if type(v) ~= "number" then reply.invalid(label, "must be a number (got " .. describe(v) .. ")") end
  elseif t == "string" then
    if type(v) ~= "string" then reply.invalid(label, "must be a string (got " .. describe(v) .. ")") end
    if not utf8.len(v) then reply.invalid(label, "must be valid UTF-8") end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then reply.invalid(label, "must be a boolean (got " .. describe(v) .. ")") end
  elseif t == "array" then
    -- An empty JSON array decodes as an empty table; an object never has [1].
    if type(v) ~= "table" or (next(v) ~= nil and v[1] == nil) then
      reply.invalid(label, "must be an array (got " .. describe(v) .. ")")
    end
  elseif t == "object" then
    if type(v) ~= "table" or v[1] ~= nil or json.is_array(v) then
      reply.invalid(label, "must be an object (got " .. describe(v) .. ")")
    end
  end
  if rule.min and v < rule.min or rule.max and v > rule.max then
    if rule.min and rule.max then
      reply.invalid(label, ("must be between %d and %d (got %s)"):format(rule.min, rule.max, v))
    elseif rule.min then
      reply.invalid(label, ("must be at least %d (got %s)"):format(rule.min, v))
    else
      reply.invalid(label, ("must be at most %d (got %s)"):format(rule.max, v))
    end
  end
  if t == "string" then
    local n = utf8.len(v)
    if rule.min_len and n < rule.min_len or rule.max_len and n > rule.max_len then
      if rule.min_len and rule.max_len then
        reply.invalid(label, ("must be %d to %d characters (got %d)"):format(rule.min_len, rule.max_len, n))
      elseif rule.min_len then
        reply.invalid(label, ("must be at least %d characters (got %d)"):format(rule.min_len, n))
      else
        reply.invalid(label, ("must be at most %d characters (got %d)"):format(rule.max_len, n))
      end
    end
    if rule.pattern and not v:match(rule.pattern[1]) then
      reply.invalid(label, rule.pattern[2] .. " (got " .. quote(v) .. ")")
    end
  end
  if rule.check then
    local why = rule.check(v)
    if why then reply.invalid(label, why .. " (got " .. quote(v) .. ")") end
  end
  if rule.enum then
    local found = false
    for _, e in ipairs(rule.enum) do if e == v then found = true break end end
    if not found then
      reply.invalid(label, "must be one of " .. table.concat(rule.enum, ", ") .. " (got " .. quote(v) .. ")")
    end
  end
  if t == "array" then
    local n = #v
    if rule.min_items and n < rule.min_items then
      reply.invalid(label, ("must have at least %d items (got %d)"):format(rule.min_items, n))
    end
    if rule.max_items and n > rule.max_items then
      reply.invalid(label, ("must have at most %d items (got %d)"):format(rule.max_items, n))
    end
    local items = rule.items
    if items then
      for i, x in ipairs(v) do
        local sub = label .. "[" .. (i - 1) .. "]"
        if type(items) == "string" then
          check_value(x, { type = items }, sub)
        elseif items.type then
          check_value(x, items, sub)
        else
          check_value(x, { type = "object" }, sub)
          for _, r in ipairs(items) do check_field(x, r, sub .. ".") end
        end
      end
    end
  end
end

check_field = function(body, rule, prefix)
  local v = body[rule.name]
  local label = (prefix or "") .. rule.name
  if v == nil or v == null then
    if rule.required then reply.invalid(label, "required") end
    return
  end
  check_value(v, rule, label)
end

--- Checks `body` against `schema`; stops the handler on the first problem.
function M.check(body, schema)
  for _, rule in ipairs(schema) do check_field(body, rule) end
  return body
end

--- Stops with VALIDATION_ERROR when `body[name]` is present.
function M.forbid(body, name, why)
  local v = body[name]
  if v ~= nil and v ~= null then reply.invalid(name, "forbidden " .. why) end
end

--- The value of an optional field, with JSON null as nil.
function M.opt(body, name)
  local v = body[name]
  if v == null then return nil end
  return v
end

--- A query filter restricted to `enum` (nil when absent or empty).
function M.query_enum(query, name, enum)
  local v = query[name]
  if v == nil or v == "" then return nil end
  check_value(v, { type = "string", enum = enum }, name)
  return v
end

return M
