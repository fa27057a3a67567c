-- Helpers shared by the miltertest scripts (loaded with dofile(COMMON)). Every script runs with
-- -D MILTER=inet:PORT@HOST (or unix:/path) and talks to the shim the way Postfix 3.7 does.
-- miltertest prints nothing when a script calls error(), it only exits 1; so each failure is
-- echoed as "FAIL: ..." first, and the test that runs the script shows that line.

local REPLY_NAMES = {
  [SMFIR_CONTINUE] = "SMFIR_CONTINUE",
  [SMFIR_ACCEPT] = "SMFIR_ACCEPT",
  [SMFIR_REJECT] = "SMFIR_REJECT",
  [SMFIR_TEMPFAIL] = "SMFIR_TEMPFAIL",
  [SMFIR_REPLYCODE] = "SMFIR_REPLYCODE",
  [SMFIR_DISCARD] = "SMFIR_DISCARD",
}

local function reply_name(code)
  return REPLY_NAMES[code] or string.format("0x%02x", code)
end

-- Echoes the failure, then raises it: miltertest exits with status 1.
function fail(message)
  mt.echo("FAIL: " .. message)
  error(message)
end

-- mt.* calls return nil on success or an error string.
function check(step, err)
  if err ~= nil then
    fail(step .. ": " .. tostring(err))
  end
end

-- mt.getreply returns only the reply command byte; the text of a RCPT-stage REPLYCODE is not
-- exposed (the integration tests check it byte for byte).
function expect(conn, step, want)
  local got = mt.getreply(conn)
  if got ~= want then
    fail(step .. ": got " .. reply_name(got) .. ", expected " .. reply_name(want))
  end
end

-- Connects and negotiates with Postfix's offer: v6, all steps 0x1fffff, all actions 0x1ff. The
-- man page says mt.negotiate(conn, version, actions, steps) but miltertest reads the third
-- argument as the steps and the fourth as the actions, which is what Postfix sends on the wire.
function open_milter()
  if MILTER == nil then
    fail("run with -D MILTER=inet:PORT@HOST")
  end
  local conn = mt.connect(MILTER, 20, 0.1)
  if conn == nil then
    fail("mt.connect(" .. MILTER .. ") failed")
  end
  mt.set_timeout(5)
  check("negotiate", mt.negotiate(conn, 6, 0x1fffff, 0x1ff))
  -- The decision travels in the replies to MAIL, RCPT and DATA: a filter that skips them, or
  -- asks for no reply to them, cannot greylist.
  for name, bit in pairs({ NOMAIL = SMFIP_NOMAIL, NORCPT = SMFIP_NORCPT, NR_MAIL = SMFIP_NR_MAIL,
                           NR_RCPT = SMFIP_NR_RCPT }) do
    if mt.test_option(conn, bit) then
      fail("the filter negotiated SMFIP_" .. name)
    end
  end
  return conn
end

-- A new milter connection for one SMTP session: CONNECT and HELO, their replies read only where
-- the filter did not negotiate SMFIP_NR_CONN / SMFIP_NR_HELO.
function smtp_session(host, ip)
  local conn = open_milter()
  check("conninfo", mt.conninfo(conn, host, ip))
  if not mt.test_option(conn, SMFIP_NR_CONN) then
    expect(conn, "CONNECT", SMFIR_CONTINUE)
  end
  check("helo", mt.helo(conn, host))
  if not mt.test_option(conn, SMFIP_NR_HELO) then
    expect(conn, "HELO", SMFIR_CONTINUE)
  end
  return conn
end

function mail(conn, sender, want)
  check("mailfrom", mt.mailfrom(conn, sender))
  expect(conn, "MAIL FROM:" .. sender, want)
end

function rcpt(conn, recipient, want)
  check("rcptto", mt.rcptto(conn, recipient))
  expect(conn, "RCPT TO:" .. recipient, want)
end

-- DATA must not be skipped: the null sender is decided there.
function data(conn, want)
  if mt.test_option(conn, SMFIP_NODATA) then
    fail("the filter negotiated SMFIP_NODATA")
  end
  check("data", mt.data(conn))
  if not mt.test_option(conn, SMFIP_NR_DATA) then
    expect(conn, "DATA", want)
  end
end

-- A header, end of headers and a body chunk, each only if not skipped, then end of message.
function end_of_message(conn, want)
  if not mt.test_option(conn, SMFIP_NOHDRS) then
    check("header", mt.header(conn, "Subject", "greylisting test"))
    if not mt.test_option(conn, SMFIP_NR_HDR) then
      expect(conn, "HEADER", SMFIR_CONTINUE)
    end
  end
  if not mt.test_option(conn, SMFIP_NOEOH) then
    check("eoh", mt.eoh(conn))
    if not mt.test_option(conn, SMFIP_NR_EOH) then
      expect(conn, "EOH", SMFIR_CONTINUE)
    end
  end
  if not mt.test_option(conn, SMFIP_NOBODY) then
    check("body", mt.bodystring(conn, "Hello.\r\n"))
    if not mt.test_option(conn, SMFIP_NR_BODY) then
      expect(conn, "BODY", SMFIR_CONTINUE)
    end
  end
  check("eom", mt.eom(conn))
  expect(conn, "EOM", want)
end

-- The X-Greylist header added at end of message, or nil.
function x_greylist(conn)
  if not mt.eom_check(conn, MT_HDRADD, "X-Greylist") then
    return nil
  end
  return mt.getheader(conn, "X-Greylist", 0)
end
