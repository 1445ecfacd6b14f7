--- pivday.sandbox.sms: which outbound SMS texts the service accepts.
--
-- policy.sms: a text that fits the GSM-7 alphabet may have up to 1600
-- septets (extension characters such as "€" or "{" take two); any other text
-- is sent as UCS-2 and may have up to 670 UTF-16 code units. Control
-- characters other than \n and \r are forbidden.
local policy = require "pivday.sandbox.policy"

local M = {}

local GSM_BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
  .. "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
local GSM_EXTENDED = "^{}\\[~]|€\f"

local basic, extended = {}, {}
for _, c in utf8.codes(GSM_BASIC) do basic[c] = true end
for _, c in utf8.codes(GSM_EXTENDED) do extended[c] = true end

--- Checks an outbound text. Returns the encoding ("GSM-7" | "UCS-2") and its
-- length in septets/code units, or nil and the reason it is refused.
function M.check(text)
  if not utf8.len(text) then return nil, "message_body is not valid UTF-8" end
  local gsm, septets, units = true, 0, 0
  for _, c in utf8.codes(text) do
    if (c < 32 and c ~= 10 and c ~= 13) or c == 127 then
      return nil, ("message_body contains a forbidden control character (U+%04X)"):format(c)
    end
    if basic[c] then
      septets = septets + 1
    elseif extended[c] then
      septets = septets + 2
    else
      gsm = false
    end
    units = units + (c > 0xFFFF and 2 or 1)
  end
  if gsm then
    if septets > policy.sms.gsm7_max then
      return nil, ("message_body is too long: %d GSM-7 characters, the limit is %d")
        :format(septets, policy.sms.gsm7_max)
    end
    return "GSM-7", septets
  end
  if units > policy.sms.ucs2_max then
    return nil, ("message_body is too long: %d UCS-2 characters, the limit is %d")
      :format(units, policy.sms.ucs2_max)
  end
  return "UCS-2", units
end

--- The verification code in an inbound text (4 to 8 digits), or nil.
function M.extract_code(text)
  for digits in text:gmatch("%d+") do
    if #digits >= 4 and #digits <= 8 then return digits end
  end
  return nil
end

return M
