--- pivday.sandbox.clock: sandbox time, which may run faster than real time.
--
-- now = origin + (real_now - real_origin) * speed, plus whatever advance()
-- added. speed 0 freezes time (tests then move it with advance()). The real
-- time source is injected so that the pure parts are testable without a
-- loop: pivday.now (monotonic) in the server, a fake in specs.
local M = {}

local Clock = { __name = "pivday.sandbox.Clock" }
Clock.__index = Clock

--- Creates a clock. opts: start (sandbox epoch seconds, default the wall
-- clock), speed (default 1), realtime (function returning seconds, default
-- os.time).
function M.new(opts)
  opts = opts or {}
  local speed = opts.speed or 1
  if type(speed) ~= "number" or speed < 0 then
    error("pivday.sandbox: speed must be a number >= 0 (got " .. tostring(speed) .. ")", 2)
  end
  local realtime = opts.realtime or os.time
  return setmetatable({
    _realtime = realtime,
    _base = opts.start or os.time(),
    _real_base = realtime(),
    speed = speed,
  }, Clock)
end

--- Sandbox seconds now (a float when speed is not 0).
function Clock:now()
  return self._base + (self._realtime() - self._real_base) * self.speed
end

--- Moves sandbox time forward by `seconds` (>= 0).
function Clock:advance(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    error("pivday.sandbox: advance needs seconds >= 0 (got " .. tostring(seconds) .. ")", 2)
  end
  self._base = self._base + seconds
end

--- Changes the speed from now on, without a jump.
function Clock:set_speed(speed)
  if type(speed) ~= "number" or speed < 0 then
    error("pivday.sandbox: speed must be a number >= 0 (got " .. tostring(speed) .. ")", 2)
  end
  self._base, self._real_base = self:now(), self._realtime()
  self.speed = speed
end

--- Real seconds until sandbox time reaches `t` (math.huge when frozen).
function Clock:real_delay(t)
  local d = t - self:now()
  if d <= 0 then return 0 end
  if self.speed == 0 then return math.huge end
  return d / self.speed
end

return M
