-- The retry of new-triplet.lua after the delay, from another address in the same /24: the known
-- recipient continues, a new one in the same message still gets 451, and end of message adds
-- one X-Greylist header.
dofile(COMMON)

local conn = smtp_session("other.example.net", "192.0.2.77")
mail(conn, "<sender@example.org>", SMFIR_CONTINUE)
rcpt(conn, "<grey@example.com>", SMFIR_CONTINUE)
rcpt(conn, "<fresh@example.com>", SMFIR_REPLYCODE)
data(conn, SMFIR_CONTINUE)
end_of_message(conn, SMFIR_CONTINUE)
if mt.test_action(conn, SMFIF_ADDHDRS) then
  local value = x_greylist(conn)
  if value == nil or not string.find(value, "^delayed %d+ seconds by greyfleet%-") then
    fail("X-Greylist header: " .. tostring(value))
  end
  mt.echo("X-Greylist: " .. value)
end
check("disconnect", mt.disconnect(conn))
