-- Three messages on one connection: a deferred one ended by ABORT (RSET), an authenticated one
-- to end of message, then (sendmail style, no ABORT after end of message) the same triplet
-- without authentication, which must not inherit the previous message's {auth_authen}.
dofile(COMMON)

local conn = smtp_session("relay.example.net", "198.51.100.200")
mail(conn, "<news@example.org>", SMFIR_CONTINUE)
rcpt(conn, "<reader@example.com>", SMFIR_REPLYCODE)
check("abort", mt.abort(conn))

check("macro", mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "carol"))
mail(conn, "<carol@example.org>", SMFIR_CONTINUE)
rcpt(conn, "<reader@example.com>", SMFIR_CONTINUE)
data(conn, SMFIR_CONTINUE)
end_of_message(conn, SMFIR_CONTINUE)

check("macro", mt.macro(conn, SMFIC_MAIL, "{mail_addr}", "carol@example.org"))
mail(conn, "<carol@example.org>", SMFIR_CONTINUE)
rcpt(conn, "<reader@example.com>", SMFIR_REPLYCODE)
check("disconnect", mt.disconnect(conn))
