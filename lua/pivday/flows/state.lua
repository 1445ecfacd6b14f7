--- pivday.flows.state: what a flow has done, kept in a file so that a re-run
-- after a crash resumes instead of buying a second time.
--
-- The file is JSON, replaced atomically (write, fdatasync, rename, fsync of
-- the directory) after every step. A `.lock` beside it is held with flock
-- while a flow uses it, so two runs never share one state. Without a path
-- the state lives in memory only.
local core = require "pivday.core"
local json = require "pivday.json"
local Error = require "pivday.error"

local M = {}

local State = {}
State.__index = State
State.__name = "pivday.flows.State"

local function state_error(code, msg)
  return nil, Error.new{ kind = "local", code = code, message = msg }
end

--- Opens (or creates) the state of flow `name` at `path` (nil: in memory).
-- Returns the state, or nil and an error: STATE_LOCKED (another run holds
-- it), STATE_CORRUPT (not our JSON: never silently reset), STATE_MISMATCH
-- (it belongs to another flow).
function M.open(path, name)
  local st = setmetatable({ path = path, data = { flow = name, steps = {} } }, State)
  if not path then return st end
  local lock, err = core.open_file(path .. ".lock", "a")
  if not lock then return state_error("STATE_ERROR", err) end
  if not lock:lock() then
    lock:close()
    return state_error("STATE_LOCKED", ("%s is in use by another run (lock %s.lock)"):format(path, path))
  end
  st._lock = lock
  local f = io.open(path, "r")
  if f then
    local text = f:read("a")
    f:close()
    if text ~= "" then
      local data, derr = json.decode(text)
      if type(data) ~= "table" or type(data.steps) ~= "table" then
        st:close()
        return state_error("STATE_CORRUPT", ("%s is not a pivday flow state (%s); move it away to start over")
          :format(path, derr or "missing steps"))
      end
      if data.flow ~= name then
        st:close()
        return state_error("STATE_MISMATCH", ("%s holds the state of flow %s, not %s")
          :format(path, tostring(data.flow), name))
      end
      st.data = data
    end
  end
  return st
end

--- The value recorded for a step, or nil.
function State:get(step)
  return self.data.steps[step]
end

--- Records a step and saves at once.
function State:set(step, value)
  self.data.steps[step] = value
  return self:save()
end

--- True when a previous run finished this flow.
function State:finished()
  return self.data.done == true
end

function State:save()
  if not self.path then return true end
  local tmp = self.path .. ".tmp"
  local f, err = core.open_file(tmp, "w")
  if not f then return nil, err end
  local ok, werr = f:write(json.encode(self.data))
  if ok then ok, werr = f:sync() end
  f:close()
  if not ok then return nil, werr end
  local rok, rerr = os.rename(tmp, self.path)
  if not rok then return nil, rerr end
  core.sync_dir(self.path)
  return true
end

--- Marks the flow finished (a re-run returns the recorded result).
function State:finish(result)
  self.data.done = true
  self.data.result = result
  return self:save()
end

function State:close()
  if self._lock then
    self._lock:close()
    self._lock = nil
  end
end
State.__close = State.close

return M
