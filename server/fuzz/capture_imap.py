#!/usr/bin/env python3
"""Records what real IMAP clients send, as seeds for the `imap_session` fuzz target.

A TLS proxy: clients connect to it with implicit TLS (it presents the certificate and
key it is given, e.g. the server's own self-signed pair, so SCRAM-PLUS
tls-server-end-point still matches), it connects to the real server with TLS and
relays both ways. Everything a client sends on one connection is written to
OUT_DIR/<prefix>-<n>, after one byte 0x00 (the fuzz target's opening byte: "not
authenticated"), when the connection ends.

    capture_imap.py --listen 127.0.0.1:19932 --upstream 127.0.0.1:19931 \
        --cert data/tls/cert.pem --key data/tls/key.pem --out /tmp/cap --prefix curl

Runs until interrupted. docs/fuzzing.md says how the committed seeds were made.
"""
import argparse
import itertools
import os
import socket
import ssl
import threading


def relay(src, dst, record=None):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if record is not None:
                record.append(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(conn, args, n):
    upstream_ctx = ssl.create_default_context()
    upstream_ctx.check_hostname = False
    upstream_ctx.verify_mode = ssl.CERT_NONE
    host, port = args.upstream.rsplit(":", 1)
    try:
        upstream = upstream_ctx.wrap_socket(socket.create_connection((host, int(port))))
    except OSError as e:
        print(f"upstream: {e}")
        conn.close()
        return
    sent = []
    back = threading.Thread(target=relay, args=(upstream, conn), daemon=True)
    back.start()
    relay(conn, upstream, sent)
    back.join(timeout=5)
    path = os.path.join(args.out, f"{args.prefix}-{n:02}")
    with open(path, "wb") as f:
        f.write(b"\x00" + b"".join(sent))
    print(f"{path}: {sum(len(d) for d in sent)} bytes")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", default="session")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    host, port = args.listen.rsplit(":", 1)
    listener = socket.create_server((host, int(port)))
    counter = itertools.count(1)
    while True:
        raw, _ = listener.accept()
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as e:
            print(f"client handshake: {e}")
            raw.close()
            continue
        threading.Thread(target=handle, args=(conn, args, next(counter)), daemon=True).start()


if __name__ == "__main__":
    main()
