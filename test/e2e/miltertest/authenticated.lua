-- A SASL-authenticated sender ({auth_authen} among the MAIL macros) is outgoing mail: never
-- deferred, and no X-Greylist header.
dofile(COMMON)

local conn = smtp_session("laptop.example.net", "203.0.113.9")
check("macro", mt.macro(conn, SMFIC_MAIL, "{auth_type}", "PLAIN", "{auth_authen}", "alice"))
mail(conn, "<alice@example.net>", SMFIR_CONTINUE)
rcpt(conn, "<friend@example.com>", SMFIR_CONTINUE)
rcpt(conn, "<colleague@example.com>", SMFIR_CONTINUE)
data(conn, SMFIR_CONTINUE)
end_of_message(conn, SMFIR_CONTINUE)
if x_greylist(conn) ~= nil then
  fail("X-Greylist added to outgoing mail")
end
check("disconnect", mt.disconnect(conn))
