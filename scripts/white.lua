-- Generate a white site and download its archive.
--
--   pivday scripts/white.lua --name "Tech Blog" --tier v2_tier1 --niche "IT" --country DE --language de --out site.zip
local pivday = require "pivday"
local S = require "pivday.script"

local s = S.new{
  name = "white",
  summary = "Starts a white-site generation, waits for white.completed / white.failed (or polls\n"
    .. "with --poll), and saves the archive with --out.",
  listener = true,
  options = {
    name = { "value", "job name (2-20 characters)" },
    tier = { "value", "v2_tier1 | v2_tier2 | v2_tier3", "v2_tier1" },
    niche = { "value", "site niche (at most 25 characters)" },
    country = { "value", "country code", "DE" },
    language = { "value", "main language (ISO 639-1)", "en" },
    quality = { "value", "standard | premium" },
    domain = { "value", "the site's domain" },
    out = { "value", "file to save the archive to" },
    poll = { "flag", "poll instead of listening for the webhook" },
    timeout = { "value", "seconds to wait", "1800" },
  },
}
local o = s:parse(arg)
if not o.name then s:usage_error("--name is required") end
if not o.niche then s:usage_error("--niche is required") end
local api = s:client()
local hooks = not o.poll and s:listener() or nil
local result, err = pivday.flows.white{ api = api, hooks = hooks, name = o.name, tier_key = o.tier,
  niche = o.niche, country = o.country, language = o.language, quality = o.quality,
  domain = o.domain, download_to = o.out, timeout = tonumber(o.timeout) }
if hooks then hooks:close() end
s:finish(result, err)
