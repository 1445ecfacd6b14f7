--- pivday: script the piv.day Business API from Lua 5.4.
--
--     local pivday = require "pivday"
--     pivday.run(function()
--       local api = pivday.client{}
--       print(assert(api.account.get()).balance)
--     end)
--
-- The runtime (run, spawn, sleep, gather, timeout, http, json, Error) loads
-- at once; the larger parts (client, webhooks, flows, sandbox) load on
-- first use.
local core = require "pivday.core"
local async = require "pivday.async"
local Error = require "pivday.error"

local M = {}

M.version = core.version
M.Error = Error
M.json = require "pivday.json"
M.http = require "pivday.http"

core.set_error_metatable(Error)

M.run = async.run
M.spawn = async.spawn
M.daemon = async.daemon
M.sleep = async.sleep
M.gather = async.gather
M.timeout = async.timeout
M.cond = async.cond
M.wait_signal = async.wait_signal

--- Monotonic seconds (for measuring; not a date).
M.now = core.now

--- For apps with their own event loop: our loop's fd (readable when we have
-- work), the seconds until our next timer (0 when work is pending, nil when
-- none) and one non-blocking step of our loop (waiting at most timeout).
M.backend_fd = core.backend_fd
M.backend_timeout = core.backend_timeout
M.step = core.step

-- Loaded on first use: name -> function(M) returning the value.
local lazy = {
  client = function() return require("pivday.client").new end,
  meta = function() return require("pivday.client").meta end,
  spent = function() return require("pivday.client").spent end,
  errors = function() return require "pivday.errors" end,
  time = function() return require "pivday.time" end,
  catalogue = function() return require "pivday.catalogue" end,
  sandbox = function() return require("pivday.sandbox").new end,
  webhooks = function() return require("pivday.webhooks").new end,
  flows = function() return require "pivday.flows" end,
}

return setmetatable(M, {
  __index = function(t, k)
    local load = lazy[k]
    if not load then return nil end
    local v = load()
    rawset(t, k, v)
    return v
  end,
})
