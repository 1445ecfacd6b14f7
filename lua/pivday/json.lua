--- pivday.json: JSON on lua-cjson, with what Debian's cjson 2.1.0 gets wrong
-- on Lua 5.4 corrected:
--  * it decodes every number as a float (`12` -> 12.0): integral values are
--    turned back into integers;
--  * it encodes every empty table as `{}`: `json.array{}` marks a list, which
--    then encodes as `[]`;
--  * it prints integers through "%.14g" (15+ digit ids lose digits): large
--    integers are written exactly.
-- JSON null is `json.null` both ways. Every other part of pivday uses this
-- module, never cjson directly.
local cjson = require "cjson"

local M = {}

local tointeger, mtype = math.tointeger, math.type
local type, next, pairs, setmetatable, getmetatable = type, next, pairs, setmetatable, getmetatable

local engine = cjson.new()
engine.encode_sparse_array(true)      -- {1, nil, 3} is a list with a null
engine.decode_invalid_numbers(false)  -- NaN/Infinity are not JSON
engine.encode_invalid_numbers(false)
engine.encode_max_depth(200)
engine.decode_max_depth(200)

--- The JSON null sentinel (decoded from and encoded to `null`).
M.null = cjson.null

local array_mt = { __name = "pivday.json.array" }

--- Marks a table as a JSON list, so that it encodes as `[]` when empty.
-- Returns the table (a new empty one when called without argument).
function M.array(t)
  t = t or {}
  if getmetatable(t) == nil then setmetatable(t, array_mt) end
  return t
end

--- True when t was marked with json.array.
function M.is_array(t)
  return getmetatable(t) == array_mt
end

-- Placeholders: strings cjson copies verbatim into its output, replaced
-- afterwards.  The NUL byte is escaped as \u0000 by cjson, so no user string
-- can collide with the escaped form.
local EMPTY_ARRAY = "\0pd:[]"
local EMPTY_ARRAY_OUT = '"\\u0000pd:%[%]"'
local BIGINT_PREFIX = "\0pd:i:"
local BIGINT_PAT = '"\\u0000pd:i:(%-?[%d%.e%+%-]+)"'
local BIG = 1e14                       -- cjson's %.14g is exact below this

-- Returns v, or a patched copy of it when something needs a placeholder;
-- `flags` records which placeholders were used.
local function prepare(v, flags, depth)
  local tv = type(v)
  if tv == "number" then
    if v >= BIG or v <= -BIG then
      flags.big = true
      if mtype(v) == "integer" then return BIGINT_PREFIX .. v end
      if v ~= v or v == math.huge or v == -math.huge then return v end -- cjson refuses
      return BIGINT_PREFIX .. ("%.17g"):format(v)
    end
    return v
  elseif tv ~= "table" then
    return v
  end
  if depth > 200 then error("pivday.json: nesting deeper than 200", 0) end
  if next(v) == nil then
    if getmetatable(v) == array_mt then
      flags.empty = true
      return EMPTY_ARRAY
    end
    return v
  end
  local copy
  for k, x in pairs(v) do
    local tx = type(x)
    if tx == "table" or tx == "number" then
      local y = prepare(x, flags, depth + 1)
      if y ~= x then
        if not copy then
          copy = {}
          for k2, x2 in pairs(v) do copy[k2] = x2 end
        end
        copy[k] = y
      end
    end
  end
  return copy or v
end

--- Encodes a Lua value as JSON text. Raises on values JSON cannot hold
-- (functions, NaN, mixed tables) like cjson does.
function M.encode(v)
  local flags = {}
  local s = engine.encode(prepare(v, flags, 0))
  if flags.empty then s = s:gsub(EMPTY_ARRAY_OUT, "[]") end
  if flags.big then s = s:gsub(BIGINT_PAT, "%1") end
  return s
end

-- Integral floats become integers, in place. pivday.core does it in C when
-- it is there (a Lua loop pays a call into `next` per field, which cost
-- more than cjson's decode); this is the same walk for plain Lua.
local fix
local function lua_fix(v)
  for k, x in next, v do
    local tx = type(x)
    if tx == "number" then
      local i = tointeger(x)
      if i then v[k] = i end
    elseif tx == "table" then
      lua_fix(x)
    end
  end
end
local c_decode -- pivday.core's one-pass decoder, when it is there
do
  local ok, core = pcall(require, "pivday.core")
  fix = ok and type(core) == "table" and core.json_fix_numbers or lua_fix
  c_decode = ok and type(core) == "table" and core.json_decode or nil
end

-- An empty list decodes to an empty table, which would encode back as {}.
-- So each `[]` outside strings is rewritten as a list holding one
-- placeholder before decoding, and those lists become marked empty arrays
-- afterwards. Only texts that contain `[` `]` with nothing but blanks
-- between pay for it.
local EMPTY_MARK = "\0pd:[]"
local EMPTY_IN = '["\\u0000pd:[]"]'

local function mark_empty_lists(s)
  local out, n, pos, from = {}, 0, 1, 1
  while true do
    local a = s:find('[%["]', pos)
    if not a then break end
    if s:byte(a) == 34 then -- a string: skip to its closing quote
      local j = a + 1
      while true do
        local q = s:find('["\\]', j)
        if not q then return s end -- unterminated: cjson will say so
        if s:byte(q) == 92 then j = q + 2 else pos = q + 1 break end
      end
    else
      local e = s:match("^%[[ \t\r\n]*%]()", a)
      if e then
        n = n + 1
        out[n] = s:sub(from, a - 1)
        n = n + 1
        out[n] = EMPTY_IN
        from = e
        pos = e
      else
        pos = a + 1
      end
    end
  end
  if n == 0 then return s end
  out[n + 1] = s:sub(from)
  return table.concat(out)
end

local function restore_empty_lists(v)
  for k, x in next, v do
    if type(x) == "table" then
      if x[1] == EMPTY_MARK and x[2] == nil then
        v[k] = setmetatable({}, array_mt)
      else
        restore_empty_lists(x)
      end
    end
  end
end

-- The reference decode: cjson plus the corrections above.
local function cjson_decode(s)
  local marked = s:find("%[[ \t\r\n]*%]") and mark_empty_lists(s)
  local ok, v = pcall(engine.decode, marked or s)
  if not ok then return nil, (tostring(v):gsub("^.-:%d+: ", "")) end
  local tv = type(v)
  if tv == "table" then
    fix(v)
    if marked and marked ~= s then
      if v[1] == EMPTY_MARK and v[2] == nil then return setmetatable({}, array_mt) end
      restore_empty_lists(v)
    end
  elseif tv == "number" then
    v = tointeger(v) or v
  end
  return v
end

--- Decodes JSON text. Returns the value, or nil and an error message.
-- Lists decoded empty are marked (json.array), so they encode as [] again.
--
-- With pivday.core loaded, texts go first through core.json_decode, a
-- one-pass C decoder that gives the same value as the cjson path above
-- (integers, json.null, marked empty lists) in about half the
-- instructions. It accepts a subset of what cjson accepts (RFC 8259; it
-- refuses what cjson lets through, such as "1.", "-01", "0x1", text after
-- a NUL byte, or a raw CR/LF inside a string): whatever it refuses goes
-- through cjson, which stays the reference, so what decodes and every
-- error message are cjson's. spec/fuzz/json_diff.lua checks the two
-- against each other.
local list_mt_arg = array_mt
function M.decode(s)
  if type(s) ~= "string" then
    error("bad argument #1 to 'decode' (string expected, got " .. type(s) .. ")", 2)
  end
  if c_decode then
    local v = c_decode(s, list_mt_arg)
    if v ~= nil then return v end
  end
  return cjson_decode(s)
end

M._cjson_decode = cjson_decode -- the reference, for the differential tests
M._c_decode = c_decode and function(s) return (c_decode(s, list_mt_arg)) end

return M
