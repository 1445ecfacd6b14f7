-- Loaded by busted before the specs (see .busted).
-- PIVDAY_TIME_SCALE stretches every deadline the specs wait on (valgrind
-- runs set it), instead of skipping timing-dependent specs.
local helper = {}

helper.scale = tonumber(os.getenv("PIVDAY_TIME_SCALE")) or 1

--- A duration in seconds, stretched by the time scale.
function helper.t(seconds) return seconds * helper.scale end

--- The pivday executable of the build tree.
helper.bin = os.getenv("PIVDAY_BIN") or "build/bin/pivday"

--- Single-quotes s for the shell.
function helper.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command, returns its stdout and exit code (124 when it
--- ran past `limit` seconds, 600 by default, stretched by the time scale:
--- a command that hangs fails its spec instead of stalling the suite).
function helper.sh(cmd, limit)
  -- Child processes are built on their own (a sanitizer build links its
  -- runtime in): the preload check-asan gives this Lua must not reach
  -- curl, sed or a shell's jobs.
  local bound = ("timeout -k 5 %d sh -c %s"):format(
    math.ceil(helper.t(limit or 600)), helper.q(cmd))
  local p = assert(io.popen("unset LD_PRELOAD; " .. bound .. "; echo \"__rc=$?\"", "r"))
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return out:gsub("__rc=%d+%s*$", ""), rc
end

package.loaded["helper"] = helper
_G.spec_helper = helper
return helper
