--- pivday.sandbox.handlers.account: GET /account.
local json = require "pivday.json"
local money = require "pivday.sandbox.money"
local reply = require "pivday.sandbox.reply"

local H = {}

-- The reference shows the e-mail masked: first letter, "***", the domain.
local function mask(email)
  local first, domain = email:match("^(.)[^@]*(@.+)$")
  if not first then return email end
  return first .. "***" .. domain
end

H["account.get"] = function(ctx)
  local a = ctx.account
  return reply.ok {
    user_id = a.user_id,
    balance = money.json(a.balance),
    email = mask(a.email),
    team_id = json.null,
    is_team_member = false,
  }
end

return H
