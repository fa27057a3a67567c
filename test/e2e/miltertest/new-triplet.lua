-- A first delivery attempt: each new (client /24, sender, recipient) triplet gets its own 451
-- (SMFIR_REPLYCODE) at RCPT, and the transaction goes on after it. retry-passes.lua retries.
dofile(COMMON)

local conn = smtp_session("client.example.net", "192.0.2.1")
mail(conn, "<sender@example.org>", SMFIR_CONTINUE)
rcpt(conn, "<grey@example.com>", SMFIR_REPLYCODE)
rcpt(conn, "<grey-too@example.com>", SMFIR_REPLYCODE)
check("abort", mt.abort(conn))
check("disconnect", mt.disconnect(conn))
