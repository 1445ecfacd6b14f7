--- pivday.pretty: values as readable text for the REPL and the CLI.
-- Tables print with sorted keys and indentation; a table met again on the
-- current path prints as <cycle>, one met elsewhere is printed again (it is
-- data, not a cycle). Objects with __tostring print through it.
local M = {}

local json_null -- set lazily so pretty does not load cjson on its own

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    if ta == "number" then return true end
    if tb == "number" then return false end
    return ta < tb
  end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if t == "number" and math.type(v) == "float" and v == math.floor(v) and v == v
      and v ~= math.huge and v ~= -math.huge then
    return ("%.1f"):format(v)
  end
  if v == json_null then return "null" end
  return tostring(v)
end

local function render(v, indent, path, out, depth)
  if type(v) ~= "table" then
    out[#out + 1] = scalar(v)
    return
  end
  local mt = getmetatable(v)
  if mt and mt.__tostring then
    out[#out + 1] = tostring(v)
    return
  end
  if path[v] then
    out[#out + 1] = "<cycle>"
    return
  end
  if next(v) == nil then
    out[#out + 1] = "{}"
    return
  end
  if depth > 20 then
    out[#out + 1] = "{...}"
    return
  end
  path[v] = true
  local keys, n = {}, #v
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  local inner = indent .. "  "
  out[#out + 1] = "{\n"
  for i = 1, n do
    out[#out + 1] = inner
    render(v[i], inner, path, out, depth + 1)
    out[#out + 1] = ",\n"
  end
  for _, k in ipairs(keys) do
    out[#out + 1] = inner
    if is_ident(k) then
      out[#out + 1] = k
    else
      out[#out + 1] = "["
      out[#out + 1] = scalar(k)
      out[#out + 1] = "]"
    end
    out[#out + 1] = " = "
    render(v[k], inner, path, out, depth + 1)
    out[#out + 1] = ",\n"
  end
  out[#out + 1] = indent .. "}"
  path[v] = nil
end

--- Returns v as text.
function M.format(v)
  if json_null == nil then
    local ok, json = pcall(require, "pivday.json")
    json_null = ok and json.null or false
  end
  local out = {}
  render(v, "", {}, out, 0)
  return table.concat(out)
end

return M
