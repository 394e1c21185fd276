#!/usr/bin/env python3
"""Drives cpmstore with Python's imaplib, an independent IMAP client.

Reads the target from the environment (never argv, so the password is not in `ps`):
IMAP_HOST, IMAP_PORT (STARTTLS), IMAPS_PORT (implicit TLS), IMAP_USER, IMAP_PASSWORD.
Exits non-zero with a message on the first thing that is not as it should be.
"""
import email
import imaplib
import os
import ssl
import sys

HOST = os.environ["IMAP_HOST"]
PORT = int(os.environ["IMAP_PORT"])
IMAPS_PORT = int(os.environ["IMAPS_PORT"])
USER = os.environ["IMAP_USER"]
PASSWORD = os.environ["IMAP_PASSWORD"]

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


MESSAGE = (
    b"From: Alice <alice@example.net>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: =?UTF-8?B?SGVsbG8gd8O2cmxk?=\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <imaplib-1@example.net>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The quick brown fox.\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream; name=\"x.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=\"x.bin\"\r\n"
    b"\r\n"
    b"AAECAwQ=\r\n"
    b"--b1--\r\n"
)

# STARTTLS + LOGIN
m = imaplib.IMAP4(HOST, PORT)
check("LOGINDISABLED" in m.capabilities, "LOGINDISABLED before STARTTLS")
try:
    m.login(USER, PASSWORD)
    check(False, "LOGIN refused before STARTTLS")
except imaplib.IMAP4.error as e:
    check("PRIVACYREQUIRED" in str(e), "LOGIN before STARTTLS gets PRIVACYREQUIRED")
m.starttls(ssl_context=ctx)
typ, _ = m.login(USER, PASSWORD)
check(typ == "OK", "STARTTLS + LOGIN")
m.logout()

# Implicit TLS
m = imaplib.IMAP4_SSL(HOST, IMAPS_PORT, ssl_context=ctx)
typ, _ = m.login(USER, PASSWORD)
check(typ == "OK", "implicit TLS LOGIN")

typ, data = m.append("INBOX", r"(\Flagged)", imaplib.Time2Internaldate(784194745), MESSAGE)
check(typ == "OK" and b"APPENDUID" in data[0], f"APPEND with APPENDUID: {data}")
m.append("INBOX", None, None, b"Subject: second\r\n\r\nlazy dog\r\n")

typ, data = m.select("INBOX")
check(typ == "OK" and data[0] == b"2", f"SELECT says 2 messages: {data}")

typ, data = m.search(None, "FLAGGED")
check(data[0] == b"1", f"SEARCH FLAGGED: {data}")
typ, data = m.search("UTF-8", "BODY", "quick")
check(data[0] == b"1", f"SEARCH BODY: {data}")
typ, data = m.search(None, "OR", "SUBJECT", "second", "FROM", "alice")
check(data[0].split() == [b"1", b"2"], f"SEARCH OR: {data}")
typ, data = m.uid("SEARCH", None, "NOT", "FLAGGED")
check(data[0] == b"2", f"UID SEARCH NOT FLAGGED: {data}")

typ, data = m.fetch("1", "(BODYSTRUCTURE)")
bs = data[0].decode()
check('("text" "plain" ("charset" "utf-8")' in bs.lower().replace("\"TEXT\"", "\"text\""), f"BODYSTRUCTURE text part: {bs}")
check('"mixed"' in bs.lower(), f"BODYSTRUCTURE multipart/mixed: {bs}")
check("x.bin" in bs, f"BODYSTRUCTURE attachment name: {bs}")

typ, data = m.fetch("1", "(BODY.PEEK[] INTERNALDATE FLAGS)")
raw = data[0][1]
check(raw == MESSAGE, "BODY[] returns the exact bytes")
check(b"\\Seen" not in data[0][0], "BODY.PEEK does not set \\Seen")
parsed = email.message_from_bytes(raw)
check(parsed["Message-ID"] == "<imaplib-1@example.net>", "message parses")

typ, data = m.fetch("1", "(BODY[1])")
check(data[0][1] == b"The quick brown fox.", f"BODY[1]: {data}")
typ, data = m.fetch("1", "(FLAGS)")
check(b"\\Seen" in data[0], f"BODY[1] set \\Seen: {data}")

typ, data = m.store("2", "+FLAGS", r"(\Deleted)")
check(typ == "OK" and b"\\Deleted" in data[0], f"STORE: {data}")
typ, data = m.copy("1", "Archive")
check(typ == "OK", "COPY")
typ, data = m.expunge()
check(data == [b"2"], f"EXPUNGE: {data}")
typ, data = m.status("Archive", "(MESSAGES)")
check(b"MESSAGES 1" in data[0], f"STATUS after COPY: {data}")
m.logout()
print("imaplib: all checks passed")
