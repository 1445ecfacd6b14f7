--- pivday.cli.listen: `pivday listen`, a webhook listener for the terminal.
--
-- Prints the URL to register, then every event as it arrives (a readable
-- line, or a JSON line with --json), forwards each to a local URL when asked
-- and reports the forward's status, and prints a heartbeat when idle, until
-- SIGINT/SIGTERM. With --json, stdout carries only event lines; everything
-- else goes to stderr, so the output pipes into jq.
local pivday = require "pivday"
local cli = require "pivday.cli"
local json = require "pivday.json"
local time = require "pivday.time"

local M = {}

local USAGE = [[
usage: pivday listen [--port PORT] [--host HOST] [--path PATH]
                     [--public-url URL] [--journal FILE] [--allow CIDR ...]
                     [--forward-to URL] [--json] [--heartbeat SECONDS]
Receives piv.day webhooks and prints them until SIGINT/SIGTERM.
  --port PORT        port (default 8787; 0 = any free port)
  --host HOST        address to listen on (default 127.0.0.1: expose it
                     through a reverse proxy or tunnel, see the README)
  --path PATH        fixed path instead of the secret /hooks/<32 hex>
  --public-url URL   the HTTPS address in front (printed URL = it + path)
  --journal FILE     keep events in FILE: nothing acknowledged is lost, the
                     secret path survives restarts (default: $PIVDAY_JOURNAL)
  --allow CIDR       accept only these peers (repeatable)
  --forward-to URL   POST each event, as received, to URL and print the status
  --json             one JSON object per event on stdout
  --heartbeat S      a status line after S idle seconds (default 30; 0 = none)
]]

local SPEC = {
  port = "value", host = "value", path = "value", public_url = "value", journal = "value",
  allow = "list", forward_to = "value", json = "flag", heartbeat = "value", help = "flag",
}

-- A short readable rendering of a data table: scalar fields as k=v, lists
-- and objects by size, the whole cut to `max` characters.
local function summary(data, max)
  local keys = {}
  for k in pairs(data) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = data[k]
    local s
    if type(v) == "string" then
      s = v:find("[%s\"=]") and json.encode(v) or v
    elseif type(v) == "table" then
      local n = 0
      for _ in pairs(v) do n = n + 1 end
      s = (v[1] ~= nil and "[%d]" or "{%d}"):format(n)
    elseif v == json.null then
      s = "null"
    else
      s = tostring(v)
    end
    parts[#parts + 1] = k .. "=" .. s
  end
  local line = table.concat(parts, " ")
  max = max or 160
  if #line > max then line = line:sub(1, max - 3) .. "..." end
  return line
end

--- One readable line for an event (also used by `pivday events`).
function M.format_event(ev, extra)
  local at = ev.received_at and time.format(ev.received_at) or "-"
  return ("%s  #%-5s %-26s %s%s"):format(at, tostring(ev.id or "-"), ev.event_type,
    summary(type(ev.data) == "table" and ev.data or {}), extra or "")
end

--- One JSON line for an event: the envelope plus id, received_at, replayed.
function M.json_event(ev, extra)
  local t = {
    id = ev.id, received_at = ev.received_at and time.format(ev.received_at) or nil,
    event_type = ev.event_type, timestamp = ev.timestamp, data = ev.data,
    replayed = ev.replayed or nil,
  }
  for k, v in pairs(extra or {}) do t[k] = v end
  return json.encode(t)
end

--- POSTs an event's body, as received, to url. Returns status and elapsed
-- seconds, or nil and a pivday.Error.
function M.forward(url, raw, timeout)
  local started = pivday.now()
  local res, err = pivday.http.request{
    method = "POST", url = url, body = raw, timeout = timeout or 10, connect_timeout = 5,
    headers = { ["content-type"] = "application/json", ["user-agent"] = "piv.day-webhook/1.0" },
  }
  if not res then return nil, err end
  return res.status, pivday.now() - started
end

local function parse_args(args)
  local o, rest = cli.parse(args, SPEC)
  if not o then return nil, rest end
  if o.help then return nil, nil end
  if #rest > 0 then return nil, "unexpected argument '" .. rest[1] .. "'" end
  local opts = { host = o.host, path = o.path, public_url = o.public_url, allow = o.allow,
    journal = o.journal or os.getenv("PIVDAY_JOURNAL"), forward_to = o.forward_to, json = o.json,
    heartbeat = 30 }
  if opts.journal == "" then opts.journal = nil end
  if o.port then
    opts.port = math.tointeger(tonumber(o.port))
    if not opts.port or opts.port < 0 or opts.port > 65535 then return nil, "--port needs a number 0-65535" end
  end
  if o.heartbeat then
    opts.heartbeat = tonumber(o.heartbeat)
    if not opts.heartbeat or opts.heartbeat < 0 then return nil, "--heartbeat needs seconds >= 0" end
  end
  if o.path and not o.path:match("^/[%w%-%._~/]+$") then return nil, "--path must start with / and be URL-safe" end
  if o.public_url and not o.public_url:match("^https?://[^/]") then return nil, "--public-url needs an http(s) URL" end
  if o.forward_to and not o.forward_to:match("^https?://[^/]") then return nil, "--forward-to needs an http(s) URL" end
  return opts
end

--- `pivday listen ...`. Returns the exit status (0 ok, 1 failure, 2 usage).
function M.main(args)
  local opts, err = parse_args(args or {})
  if not opts then return require("pivday.cli").usage_exit("listen", err, USAGE) end
  io.stdout:setvbuf("line")
  local out = io.stdout
  local info = opts.json and io.stderr or io.stdout
  local status = 0
  pivday.run(function()
    local ok_allow, hooks, herr = pcall(pivday.webhooks, {
      host = opts.host, port = opts.port, path = opts.path, public_url = opts.public_url,
      journal = opts.journal, allow = opts.allow,
    })
    if not ok_allow then -- a bad --allow CIDR raises: it is the user's input
      io.stderr:write("pivday listen: ", tostring(hooks):gsub("^bad argument #1 to 'webhooks' ", ""), "\n")
      status = 2
      return
    end
    if not hooks then
      io.stderr:write("pivday listen: ", tostring(herr), "\n")
      status = 1
      return
    end
    info:write("Listening. Register this webhook URL in the API key's settings:\n  ", hooks.url, "\n")
    if hooks.url ~= hooks.local_url then info:write("  (served locally at ", hooks.local_url, ")\n") end
    if opts.journal then info:write("Journal: ", opts.journal, "\n") end
    if opts.forward_to then info:write("Forwarding to ", opts.forward_to, "\n") end
    info:write("Ctrl-C stops.\n")
    info:flush()

    local last = pivday.now()
    hooks:on("*", function(ev)
      last = pivday.now()
      local tag = ev.replayed and "  (replayed from the journal)" or ""
      if opts.json then
        out:write(M.json_event(ev), "\n")
      else
        out:write(M.format_event(ev, tag), "\n")
      end
      if opts.forward_to then
        local code, ferr = M.forward(opts.forward_to, ev.raw)
        local line
        if code then
          line = ("  -> #%s forwarded: %d in %.0f ms"):format(tostring(ev.id), code, ferr * 1000)
        else
          line = ("  -> #%s forward failed: %s"):format(tostring(ev.id), tostring(ferr))
        end
        info:write(line, "\n")
        -- A failed forward leaves the event pending (journal: delivered again
        -- after a restart, or with `pivday events replay`).
        -- A pivday.Error (not a string) is reported without a traceback.
        if not code or code < 200 or code > 299 then
          error(pivday.Error{ kind = "local", code = "FORWARD_FAILED", message = ("forward to %s: %s")
            :format(opts.forward_to, code and ("HTTP " .. code) or tostring(ferr)) }, 0)
        end
      end
    end)

    if opts.heartbeat > 0 then
      pivday.daemon(function()
        while not hooks:closed() do
          pivday.sleep(math.min(opts.heartbeat, 5))
          local idle = pivday.now() - last
          if idle >= opts.heartbeat and not hooks:closed() then
            local s = hooks.stats
            info:write(("· %s listening; %d events, %d duplicates, %d rejected requests so far\n")
              :format(time.format(os.time()), s.received, s.duplicates, s.rejected))
            last = pivday.now()
          end
        end
      end)
    end

    local sig = pivday.wait_signal()
    hooks:close()
    info:write(("%s: stopped (%d events received)\n"):format(sig, hooks.stats.received))
  end)
  return status
end

return M
