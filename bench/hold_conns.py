#!/usr/bin/env python3
"""Opens N TLS keep-alive connections, sends one request on each, and holds
them idle so the server's resident memory per idle connection can be read.

Prints "READY <opened> <failed>" on stdout once every connection is open (or
has failed), then holds them: each line "CHECK" on stdin answers "OPEN <n>",
the connections the server has not closed; stdin closing or SIGTERM ends it.

usage: hold_conns.py HOST PORT COUNT PATH [TOKEN]
"""

import select
import signal
import socket
import ssl
import sys
import threading

THREADS = 16


def request_bytes(host, path, token):
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock):
    """Reads one response with a Content-Length body; returns the status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return status


def opener(host, port, count, request, context, held, failures, lock):
    for _ in range(count):
        try:
            raw = socket.create_connection((host, port), timeout=30)
            tls = context.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(request)
            status = read_response(tls)
            if status >= 500:
                raise ConnectionError(f"status {status}")
            with lock:
                held.append(tls)
        except (OSError, ValueError, IndexError) as err:
            with lock:
                failures.append(repr(err))


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    host, port, count, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    token = sys.argv[5] if len(sys.argv) > 5 else ""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # HTTP/1.1 only: the idle state measured is a keep-alive h1 connection.
    context.set_alpn_protocols(["http/1.1"])
    request = request_bytes(host, path, token)
    held, failures, lock = [], [], threading.Lock()
    shares = [count // THREADS + (1 if i < count % THREADS else 0) for i in range(THREADS)]
    threads = [
        threading.Thread(
            target=opener,
            args=(host, port, share, request, context, held, failures, lock),
        )
        for share in shares
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr)
    print(f"READY {len(held)} {len(failures)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for line in sys.stdin:
        if line.strip() == "CHECK":
            print(f"OPEN {still_open(held)}", flush=True)
    for sock in held:
        sock.close()


def still_open(held):
    """Counts connections the server has not closed: an idle keep-alive
    connection has nothing to read, a closed one reads as EOF."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in held}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = 0
    for fd, _ in poller.poll(0):
        sock = by_fd[fd]
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                closed += 1
        except ssl.SSLWantReadError:
            pass
        except OSError:
            closed += 1
    return len(held) - closed


if __name__ == "__main__":
    main()
