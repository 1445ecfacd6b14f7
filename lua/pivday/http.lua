--- pivday.http: the endpoint-free HTTP surface over pivday.core.
--
-- `request` waits like every pivday operation (yields in a task, drives
-- the loop elsewhere); `server` runs each request's handler in its own
-- task, so handlers may sleep and call APIs before answering.
local core = require "pivday.core"
local async = require "pivday.async"

local M = {}

local await_op, spawn_now = async.await_op, async.spawn_now
local core_request, core_cancel, core_api_send = core.request, core.cancel, core.api_send
local traceback = debug.traceback

--- Returned by a handler: close the connection without answering.
M.DROP = setmetatable({}, { __name = "pivday.http.DROP" })

-- TLS verification is only ever off by the explicit insecure option, and
-- it says so once per process.
local function warn_insecure()
  if M._warned_insecure then return end
  M._warned_insecure = true
  io.stderr:write("pivday.http: WARNING: insecure = true: TLS certificates and host names are NOT "
    .. "verified for this and later insecure requests\n")
end

-- A request that changes something and is cancelled in flight (by
-- pivday.timeout or task:cancel) may have taken effect: the error that
-- unwinds the task says so.
local function await_changing(op, a, b, c, d, e, f)
  local ok, r1, r2 = pcall(await_op, op, core_cancel, a, b, c, d, e, f)
  if ok then return r1, r2 end
  if type(r1) == "table" and (r1.kind == "cancelled" or r1.kind == "timeout") then
    r1.outcome_unknown = true
  end
  error(r1, 0)
end

--- Sends one request. opts: method (GET), url, headers (name -> value),
-- body, timeout and connect_timeout (seconds), max_body (bytes), no_resend
-- (never let libcurl re-send it on a reused connection), insecure.
-- Returns res {status, headers (lower-case names), body, elapsed}, or nil
-- and a pivday.Error (kind transport, timeout or cancelled; `sent` tells
-- whether request bytes may have reached the server).
function M.request(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'request' (table expected, got " .. type(opts) .. ")", 2)
  end
  if type(opts.url) ~= "string" then
    error("bad argument #1 to 'request' (field 'url' must be a string)", 2)
  end
  if opts.insecure then warn_insecure() end
  local method = opts.method
  if method == nil or method == "GET" or method == "HEAD" then
    return await_op(core_request, core_cancel, opts)
  end
  return await_changing(core_request, opts)
end

--- Sets the JSON envelope send_prepared unwraps: a body that is an object
-- whose member `flag` is true and whose member `member` is an object or a
-- list. opts: flag, member, list_mt (the metatable empty lists get).
function M.set_envelope(opts)
  core.api_setup(opts)
end

--- What every request of one caller sends alike, read once: headers,
-- connect_timeout, max_body, insecure (as in request). Returns a handle
-- for send_prepared.
function M.prepare(opts)
  if opts.insecure then warn_insecure() end
  return core.api_conf(opts)
end

--- Sends one request through a prepared handle and decodes the answer in
-- the same pass when it is the envelope (see set_envelope). Returns
--   member, meta     the envelope's member (nulls left out of objects),
--                    meta a string for meta_of;
--   false, res       any other answer, res as request gives it;
--   nil, err         no answer, err as request gives it.
-- A request other than GET cancelled in flight raises with
-- outcome_unknown set, as in request.
function M.send_prepared(conf, method, url, body, timeout)
  if method == "GET" then
    return await_op(core_api_send, core_cancel, conf, method, url, body, timeout, false)
  end
  return await_changing(core_api_send, conf, method, url, body, timeout, method == "POST")
end

--- status, elapsed, headers of a send_prepared meta.
M.meta_of = core.api_meta

local Server = {}
Server.__index = Server
Server.__name = "pivday.http.Server"

function Server:__tostring()
  return ("pivday.http.Server (%s)"):format(self._s and self.url or "closed")
end

--- Stops listening and closes every connection.
function Server:close()
  if self._s then
    self._s:close()
    self._s = nil
  end
end
Server.__close = Server.close
Server.__gc = Server.close

--- Number of open connections.
function Server:connections()
  return self._s and self._s:connections() or 0
end

local function serve_one(handler, req, on_error)
  local h = req.handle
  req.handle = nil
  local ok, status, headers, body = xpcall(handler, traceback, req)
  if not ok then
    on_error(status, req)
    h:respond(500, { ["content-type"] = "text/plain" }, "internal server error\n")
    return
  end
  if status == M.DROP then
    h:drop()
    return
  end
  if type(body) ~= "string" then body = body == nil and "" or tostring(body) end
  h:respond(status or 200, headers, body)
end

local function default_on_error(err, req)
  async.report(("handler failed for %s %s: %s"):format(req.method, req.path, tostring(err)))
end

--- Starts an HTTP/1.1 server. opts: host ("127.0.0.1"), port (0 =
-- ephemeral), handler(req) -> status, headers, body; max_body,
-- max_header (bytes), header_timeout, idle_timeout (seconds),
-- max_connections, on_error(err, req). req = {method, path, query, target,
-- headers, body, peer}. Returns the server, or nil and a message.
function M.server(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'server' (table expected, got " .. type(opts) .. ")", 2)
  end
  local handler = opts.handler
  if type(handler) ~= "function" then
    error("bad argument #1 to 'server' (field 'handler' must be a function)", 2)
  end
  local on_error = opts.on_error or default_on_error
  local s, err = core.server(opts, function(req)
    spawn_now(serve_one, handler, req, on_error)
  end)
  if not s then return nil, err end
  local host = opts.host or "127.0.0.1"
  local port = s:port()
  local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
  return setmetatable({ _s = s, host = host, port = port,
    url = ("http://%s:%d"):format(shown, port) }, Server)
end

--- Percent-decodes s (and '+' as space, as in forms and query strings).
function M.urldecode(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Percent-encodes everything but unreserved characters (RFC 3986).
function M.urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

--- Parses a query string into a table (the last of repeated names wins).
function M.parse_query(qs)
  local t = {}
  if not qs or qs == "" then return t end
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then k, v = pair, "" end
    t[M.urldecode(k)] = M.urldecode(v)
  end
  return t
end

--- Builds a query string from a table, names sorted for stable URLs.
function M.build_query(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for i, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "boolean" then v = v and "true" or "false" end
    out[i] = M.urlencode(k) .. "=" .. M.urlencode(v)
  end
  return table.concat(out, "&")
end

return M
