#!/usr/bin/env python3
"""Live test of the compose HAProxy config on loopback (run by check.sh when a relay binary
is available): three hybridge-relay processes *without* NATS, so a /cable/connect that
HAProxy sends to the wrong instance fails with 404. Through HAProxy (TLS, self-signed):

- /cable/new lands round-robin on some instance and returns its routing ID;
- /cable/connect/<routing id in UPPER case>/<tunnel id> must reach that same instance: 101.

Usage: haproxy_routing_test.py RELAY_BIN PEM_FILE
"""
import json
import os
import pathlib
import re
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent
relay_bin, pem = sys.argv[1], sys.argv[2]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


procs = []


def cleanup():
    for p in procs:
        p.kill()
        p.wait()


def start_relay(rid):
    p = subprocess.Popen(
        [relay_bin, "--listen", "127.0.0.1:0", "--routing-id", rid, "--rate-per-ip", "0", "--log", "warn"],
        stdout=subprocess.PIPE,
    )
    procs.append(p)
    info = json.loads(p.stdout.readline())
    return int(info["listen"].rsplit(":", 1)[1])


def upgrade(port, path):
    """Opens a WebSocket upgrade through HAProxy; returns (socket, status, headers)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: fido.cable\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    return s, status, headers


def main():
    rids = {"a00001": "relay-1", "a00002": "relay-2", "a00003": "relay-3"}
    ports = {name: start_relay(rid) for rid, name in rids.items()}
    front, stats = free_port(), free_port()
    cfg = (ROOT / "compose/haproxy/haproxy.cfg").read_text()
    cfg = cfg.replace("/usr/local/etc/haproxy/certs/relay.pem", pem)
    cfg = cfg.replace("/usr/local/etc/haproxy/routing.map", str(ROOT / "compose/haproxy/routing.map"))
    cfg = cfg.replace("bind :8443", f"bind 127.0.0.1:{front}").replace("bind :8404", f"bind 127.0.0.1:{stats}")
    cfg = re.sub(r"resolvers docker\n(    .*\n)+", "", cfg)
    cfg = cfg.replace(" port 9090", "").replace(" resolvers docker init-addr last,libc,none", "")
    cfg = cfg.replace("maxconn 100000", "maxconn 2000")  # within this machine's open-files limit
    for name, port in ports.items():
        cfg = cfg.replace(f"{name}:8080", f"127.0.0.1:{port}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        errlog = open(os.path.join(d, "stderr"), "w+")
        hp = subprocess.Popen(["haproxy", "-f", path], stdout=subprocess.DEVNULL, stderr=errlog)
        procs.append(hp)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or hp.poll() is not None:
                    errlog.seek(0)
                    raise SystemExit("haproxy did not start:\n" + errlog.read())
                time.sleep(0.1)
        time.sleep(2.5)  # health checks mark the servers up (rise 2, inter 2s)
        seen = set()
        for i in range(9):
            tid = secrets.token_hex(16).upper()
            phone, st, h = upgrade(front, f"/cable/new/{tid}")
            assert st == 101, f"/cable/new through haproxy: {st}"
            rid = h.get("x-cable-routing-id", "")
            seen.add(rid.lower())
            laptop, st, _ = upgrade(front, f"/cable/connect/{rid.upper()}/{tid}")
            assert st == 101, f"/cable/connect/{rid.upper()}/… reached the wrong instance: {st}"
            phone.close()
            laptop.close()
        assert seen == set(rids), f"/cable/new was not round-robin over all instances: {seen}"
        # A routing ID outside the map goes round-robin (and is unknown here: 404).
        s, st, _ = upgrade(front, f"/cable/connect/ffffff/{secrets.token_hex(16)}")
        assert st == 404, st
        s.close()
    print("haproxy routing: /cable/new round-robin over 3 relays, /cable/connect/<UPPER rid>/… reached the owner 9/9")


try:
    main()
finally:
    cleanup()
