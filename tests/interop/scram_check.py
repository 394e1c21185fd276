#!/usr/bin/env python3
"""SCRAM-SHA-256 and SCRAM-SHA-256-PLUS against cpmstore with an independent client:
Python's `scramp` computes the SCRAM messages, imaplib's `authenticate` carries them.

Reads the target from the environment (never argv, so the password is not in `ps`):
IMAP_HOST, IMAPS_PORT (implicit TLS), IMAP_USER, IMAP_PASSWORD.

Channel binding: Python's ssl module offers no keying-material exporter, so scramp
cannot do RFC 9266 `tls-exporter`; -PLUS is checked here with `tls-server-end-point`
(RFC 5929, a hash of the server certificate, which scramp computes itself), and with
`tls-exporter` by the Rust client in tests/tests/auth.rs.

Exits non-zero with a message on the first thing that is not as it should be.
"""
import base64
import imaplib
import os
import ssl
import sys

from scramp import ScramClient, make_channel_binding

HOST = os.environ["IMAP_HOST"]
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


def connect():
    return imaplib.IMAP4_SSL(HOST, IMAPS_PORT, ssl_context=ctx)


class Exchange:
    """An imaplib authobject driving a scramp client, with hooks to tamper."""

    def __init__(self, client, tamper_final=None):
        self.client = client
        self.tamper_final = tamper_final
        self.step = 0
        self.server_first = None
        self.server_verified = False

    def __call__(self, challenge):
        self.step += 1
        if self.step == 1:
            return self.client.get_client_first().encode()
        if self.step == 2:
            self.server_first = challenge.decode()
            self.client.set_server_first(self.server_first)
            final = self.client.get_client_final()
            if self.tamper_final:
                final = self.tamper_final(final)
            return final.encode()
        if self.step == 3:
            # Raises if the server's signature is wrong: the server proves it knows
            # the secrets too.
            self.client.set_server_final(challenge.decode())
            self.server_verified = True
            return b""
        raise AssertionError(f"unexpected challenge {challenge!r}")


def authenticate(mechanism, client, tamper_final=None):
    """Returns (ok, response text, exchange)."""
    imap = connect()
    exchange = Exchange(client, tamper_final)
    try:
        typ, data = imap.authenticate(mechanism, exchange)
        ok = typ == "OK"
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
        if ok:
            typ, _ = imap.select("INBOX")
            ok = typ == "OK"
        imap.logout()
        return ok, text, exchange
    except imaplib.IMAP4.error as e:
        try:
            imap.logout()
        except Exception:
            pass
        return False, str(e), exchange


def flip_proof_bit(final):
    head, proof = final.rsplit(",p=", 1)
    raw = bytearray(base64.b64decode(proof))
    raw[0] ^= 0x01
    return f"{head},p={base64.b64encode(bytes(raw)).decode()}"


def end_point_binding():
    """tls-server-end-point data of a fresh connection's certificate (the same
    certificate serves every connection)."""
    imap = connect()
    binding = make_channel_binding("tls-server-end-point", imap.sock)
    imap.logout()
    return binding


# Capabilities on implicit TLS.
imap = connect()
caps = imap.capabilities
imap.logout()
check("AUTH=SCRAM-SHA-256" in caps, "SCRAM-SHA-256 advertised on TLS")
check("AUTH=SCRAM-SHA-256-PLUS" in caps, "SCRAM-SHA-256-PLUS advertised on TLS")

# SCRAM-SHA-256, right password.
ok, text, ex = authenticate(
    "SCRAM-SHA-256", ScramClient(["SCRAM-SHA-256"], USER, PASSWORD)
)
check(ok, f"SCRAM-SHA-256 logs in ({text})")
check(ex.server_verified, "SCRAM-SHA-256 server signature verified by scramp")

# SCRAM-SHA-256-PLUS with tls-server-end-point.
binding = end_point_binding()
ok, text, ex = authenticate(
    "SCRAM-SHA-256-PLUS",
    ScramClient(["SCRAM-SHA-256-PLUS"], USER, PASSWORD, channel_binding=binding),
)
check(ok, f"SCRAM-SHA-256-PLUS (tls-server-end-point) logs in ({text})")
check(ex.server_verified, "SCRAM-SHA-256-PLUS server signature verified by scramp")

# Wrong password.
ok, text, _ = authenticate(
    "SCRAM-SHA-256", ScramClient(["SCRAM-SHA-256"], USER, PASSWORD + "x")
)
check(not ok and "AUTHENTICATIONFAILED" in text, f"wrong password refused ({text})")

# Tampered proof (right password, one bit of the proof flipped).
ok, text, _ = authenticate(
    "SCRAM-SHA-256",
    ScramClient(["SCRAM-SHA-256"], USER, PASSWORD),
    tamper_final=flip_proof_bit,
)
check(not ok and "AUTHENTICATIONFAILED" in text, f"tampered proof refused ({text})")

# -PLUS with channel binding data of another channel (a man in the middle).
ok, text, _ = authenticate(
    "SCRAM-SHA-256-PLUS",
    ScramClient(
        ["SCRAM-SHA-256-PLUS"],
        USER,
        PASSWORD,
        channel_binding=("tls-server-end-point", bytes(32)),
    ),
)
check(not ok and "AUTHENTICATIONFAILED" in text, f"wrong channel binding refused ({text})")

# Downgrade: a client able to bind says "y" (it thinks the server cannot), while the
# server advertised -PLUS: someone stripped -PLUS on the way. Must fail.
ok, text, _ = authenticate(
    "SCRAM-SHA-256",
    ScramClient(["SCRAM-SHA-256"], USER, PASSWORD, channel_binding=binding),
)
check(not ok and "AUTHENTICATIONFAILED" in text, f"GS2 flag y refused while -PLUS is offered ({text})")

# An unknown user gets a server-first-message of the same shape (same salt length,
# same iterations, and the same salt when asked again), then fails at the proof.
def first_of(user, password):
    ok, text, ex = authenticate("SCRAM-SHA-256", ScramClient(["SCRAM-SHA-256"], user, password))
    fields = dict(f.split("=", 1) for f in ex.server_first.split(","))
    return ok, text, fields

ok_known, _, known = first_of(USER, PASSWORD + "y")
ok_ghost, text, ghost = first_of("ghost-" + USER, PASSWORD)
_, _, ghost_again = first_of("ghost-" + USER, PASSWORD)
check(not ok_known and not ok_ghost and "AUTHENTICATIONFAILED" in text, "unknown user refused like a wrong password")
check(len(base64.b64decode(ghost["s"])) == len(base64.b64decode(known["s"])), "unknown user: same salt length")
check(ghost["i"] == known["i"], "unknown user: same iteration count")
check(ghost["s"] == ghost_again["s"], "unknown user: the same salt on every attempt")

print("all checks passed")
