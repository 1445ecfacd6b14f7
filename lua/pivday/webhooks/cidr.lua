--- pivday.webhooks.cidr: "is this peer address in one of these networks?"
--
-- The listener's `allow` option takes CIDRs ("10.0.0.0/8", "::1/128", or a
-- bare address meaning a single host). Addresses are turned into their raw
-- bytes (4 for IPv4, 16 for IPv6) and compared prefix-wise. An IPv4-mapped
-- IPv6 peer ("::ffff:203.0.113.7", what a dual-stack socket reports) is
-- treated as the IPv4 address, so "203.0.113.0/24" matches it.
local M = {}

local byte, char, tonumber = string.byte, string.char, tonumber

local function parse_v4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
  return char(a, b, c, d)
end

-- Parses the groups on one side of "::" (or the whole address) into a list
-- of 16-bit values; a trailing dotted quad counts as two groups.
local function groups(s, allow_v4_tail)
  local out = {}
  if s == "" then return out end
  local parts = {}
  for g in (s .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = g end
  for i, g in ipairs(parts) do
    if i == #parts and allow_v4_tail and g:find(".", 1, true) then
      local v4 = parse_v4(g)
      if not v4 then return nil end
      local w, x, y, z = byte(v4, 1, 4)
      out[#out + 1] = w * 256 + x
      out[#out + 1] = y * 256 + z
    else
      if not g:match("^%x%x?%x?%x?$") then return nil end
      out[#out + 1] = tonumber(g, 16)
    end
  end
  return out
end

local function parse_v6(s)
  s = s:gsub("%%.*$", "") -- a zone id ("fe80::1%eth0") does not change the address
  local head, tail = s:match("^(.-)::(.*)$")
  local g
  if head then
    if tail:find("::", 1, true) then return nil end
    local h, t = groups(head, false), groups(tail, true)
    if not h or not t or #h + #t > 7 then return nil end
    g = h
    for _ = 1, 8 - #h - #t do g[#g + 1] = 0 end
    for i = 1, #t do g[#g + 1] = t[i] end
  else
    g = groups(s, true)
    if not g or #g ~= 8 then return nil end
  end
  local bytes = {}
  for i = 1, 8 do
    bytes[2 * i - 1] = g[i] >> 8
    bytes[2 * i] = g[i] & 0xff
  end
  return char(table.unpack(bytes))
end

local MAPPED = ("\0"):rep(10) .. "\255\255"

--- Parses an IP address into its raw bytes (4 or 16; IPv4-mapped IPv6
-- becomes 4). Returns the bytes, or nil when s is not an address.
function M.parse_ip(s)
  if type(s) ~= "string" then return nil end
  local v4 = parse_v4(s)
  if v4 then return v4 end
  local v6 = s:find(":", 1, true) and parse_v6(s)
  if not v6 then return nil end
  if v6:sub(1, 12) == MAPPED then return v6:sub(13) end
  return v6
end

--- Parses "addr/bits" (or a bare address: all bits). Returns
-- {bytes = raw, bits = n}, or nil and a message.
function M.parse(s)
  if type(s) ~= "string" then return nil, "CIDR must be a string" end
  local addr, bits = s:match("^([^/]+)/(%d+)$")
  if not addr then addr = s end
  local raw = M.parse_ip(addr)
  if not raw then return nil, ("'%s' is not an IP address or CIDR"):format(s) end
  local max = #raw * 8
  -- "::ffff:10.0.0.0/104" is an IPv4 network written in IPv6.
  if bits and #raw == 4 and addr:find(":", 1, true) then bits = tonumber(bits) - 96 end
  bits = bits and tonumber(bits) or max
  if bits < 0 or bits > max then return nil, ("'%s': prefix length out of range 0..%d"):format(s, max) end
  return { bytes = raw, bits = bits }
end

local function contains(net, raw)
  if #raw ~= #net.bytes then return false end
  local full, rest = net.bits // 8, net.bits % 8
  if full > 0 and raw:sub(1, full) ~= net.bytes:sub(1, full) then return false end
  if rest == 0 then return true end
  local mask = (0xff << (8 - rest)) & 0xff
  return (byte(raw, full + 1) & mask) == (byte(net.bytes, full + 1) & mask)
end

--- Parses a CIDR string or a list of them. Returns the list of networks
-- ({bytes, bits} each, what the listener's C request path checks peers
-- against), or nil and a message naming the bad entry.
function M.networks(list)
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" then return nil, "allow must be a CIDR string or a list of them" end
  local nets = {}
  for i, s in ipairs(list) do
    local net, err = M.parse(s)
    if not net then return nil, ("allow[%d]: %s"):format(i, err) end
    nets[#nets + 1] = net
  end
  return nets
end

--- Builds a matcher from a CIDR string or a list of them. Returns
-- fn(ip_string) -> boolean, or nil and a message naming the bad entry.
-- Answers are cached per address (peers repeat), up to a bound.
function M.matcher(list)
  local nets, err = M.networks(list)
  if not nets then return nil, err end
  local cache, cached = {}, 0
  return function(ip)
    local hit = cache[ip]
    if hit ~= nil then return hit end
    local raw = M.parse_ip(ip)
    local ok = false
    if raw then
      for i = 1, #nets do
        if contains(nets[i], raw) then ok = true break end
      end
    end
    if cached >= 4096 then cache, cached = {}, 0 end
    cache[ip] = ok
    cached = cached + 1
    return ok
  end
end

return M
