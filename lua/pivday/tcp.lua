--- pivday.tcp: a raw TCP client on the event loop.
-- For what HTTP cannot say: checking that a listener is reachable, and
-- speaking broken HTTP to our own servers in the specs.
local core = require "pivday.core"
local async = require "pivday.async"

local M = {}

local Conn = {}
Conn.__index = Conn
Conn.__name = "pivday.tcp.Conn"

--- Connects; returns a connection, or nil and a pivday.Error.
function M.connect(host, port, timeout)
  local stream
  local ok, err = async.await(function(done)
    stream = core.connect(host, port, done)
    local t
    if timeout then
      t = core.timer()
      t:start(timeout, 0, function()
        done(nil, require("pivday.error").new{ kind = "timeout", code = "TIMEOUT",
          message = ("connect to %s:%d timed out"):format(host, port) })
      end)
    end
    return function() if t then t:close() end stream:close() end
  end)
  if not ok then
    stream:close()
    return nil, err
  end
  local c = setmetatable({ _s = stream, _buf = {}, _cond = async.cond() }, Conn)
  stream:read_start(function(data, why)
    if data then
      c._buf[#c._buf + 1] = data
    else
      c.eof = why or "eof"
    end
    c._cond:broadcast()
  end)
  return c
end

--- Writes bytes.
function Conn:send(data)
  return self._s:write(data)
end

--- Returns what has arrived (waiting up to timeout seconds for something),
-- or nil and "eof" / "timeout".
function Conn:receive(timeout)
  if #self._buf == 0 and not self.eof then
    local ok = self._cond:wait(timeout)
    if not ok and #self._buf == 0 and not self.eof then return nil, "timeout" end
  end
  if #self._buf > 0 then
    local s = table.concat(self._buf)
    self._buf = {}
    return s
  end
  return nil, self.eof
end

--- Reads until the peer closes (or timeout): everything received, and
-- whether the connection was closed.
function Conn:read_all(timeout)
  local deadline = core.now() + (timeout or 5)
  local parts = {}
  while true do
    local left = deadline - core.now()
    if left <= 0 then return table.concat(parts), false end
    local s, why = self:receive(left)
    if s then parts[#parts + 1] = s
    elseif why == "timeout" then return table.concat(parts), false
    else return table.concat(parts), true end
  end
end

function Conn:close()
  if self._s then self._s:close() self._s = nil end
end
Conn.__close = Conn.close

return M
