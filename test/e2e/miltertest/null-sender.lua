-- The null sender is not deferred at RCPT (sender-verification callouts must work) but at DATA.
dofile(COMMON)

local conn = smtp_session("bounce.example.net", "198.51.100.1")
mail(conn, "<>", SMFIR_CONTINUE)
rcpt(conn, "<postmaster@example.com>", SMFIR_CONTINUE)
rcpt(conn, "<abuse@example.com>", SMFIR_CONTINUE)
data(conn, SMFIR_REPLYCODE)
check("abort", mt.abort(conn))
check("disconnect", mt.disconnect(conn))
