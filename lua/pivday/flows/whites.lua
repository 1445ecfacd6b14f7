--- pivday.flows.whites: generate a white site and fetch its archive.
local pivday = require "pivday"
local Error = require "pivday.error"
local common = require "pivday.flows.common"

local M = {}

local NOT_CREATE = { hooks = true, api = true, timeout = true, download_to = true,
  poll_interval = true, progress = true }

-- Without a listener: the job is done when /download answers, failed when
-- the list filtered by status=failed holds it (the status integers are not
-- documented, the filter strings are).
local function poll_white(api, id)
  return function()
    local link, err = api.whites.download(id)
    if link then return { event_type = "white.completed", data = { job_id = id }, link = link } end
    if err.code ~= "NOT_READY" and not err.retryable then return nil, err end
    for w in api.whites.each{ status = "failed" } do
      if w.id == id then
        return { event_type = "white.failed", data = { job_id = id, error = "generation failed" } }
      end
    end
    return nil
  end
end

local function fetch(url, path)
  local res, err = pivday.http.request{ url = url, timeout = 300 }
  if not res then return nil, err end
  if res.status ~= 200 then
    return nil, Error.new{ kind = "protocol", code = "BAD_RESPONSE", status = res.status,
      message = "archive download answered " .. res.status }
  end
  local f, ferr = io.open(path, "wb")
  if not f then return nil, Error.new{ kind = "local", code = "WRITE_FAILED", message = ferr } end
  f:write(res.body)
  f:close()
  return #res.body
end

--- Starts a white generation, awaits white.completed / white.failed (or
-- polls without a listener), gets the download URL and, with download_to,
-- saves the archive there. opts: the whites.create fields, hooks, api,
-- timeout (1800), poll_interval (10), download_to, progress.
-- Returns {white=, url=, expires_at=, file=, bytes=, charged=, refunded=}.
function M.white(opts)
  common.need(opts, "name", "string", "white")
  local say = common.progress(opts, "white")
  local api = common.api(opts)
  local money = { charged = 0, refunded = 0 }
  local body = {}
  for k, v in pairs(opts) do if not NOT_CREATE[k] then body[k] = v end end

  local res, cents = common.charge(api, api.whites.create, body)
  if not res then return common.fail(cents, money) end
  money.charged = money.charged + cents
  local white = res.white
  say("generation of %q queued (%s), charged %s", white.name, white.id, common.amount(cents))

  local waiter = opts.hooks and opts.hooks:expect({ "white.completed", "white.failed" }, { job_id = white.id })
  local ev, werr = common.await_outcome(waiter, poll_white(api, white.id),
    opts.timeout or 1800, opts.poll_interval or 10, "white generation")
  if not ev then return common.fail(werr, money, { white = white }) end
  if ev.event_type == "white.failed" then
    money.refunded = money.refunded + cents
    say("generation failed: %s (fee refunded)", tostring(ev.data.error))
    return common.fail(Error.new{ kind = "api", code = "WHITE_FAILED", message = tostring(ev.data.error) },
      money, { white = white })
  end
  local link = ev.link
  if not link then
    local lerr
    link, lerr = api.whites.download(white.id)
    if not link then return common.fail(lerr, money, { white = white }) end
  end
  local out = { white = white, url = link.download_url or link.url, expires_at = link.expires_at,
    charged = common.amount(money.charged), refunded = common.amount(money.refunded) }
  say("generated; archive at %s", tostring(out.url))
  if opts.download_to then
    local n, ferr = fetch(out.url, opts.download_to)
    if not n then return common.fail(ferr, money, { white = white, url = out.url }) end
    out.file, out.bytes = opts.download_to, n
    say("saved %d bytes to %s", n, opts.download_to)
  end
  return out
end

return M
