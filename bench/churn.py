#!/usr/bin/env python3
"""Account churn for bench/soak.sh: each worker thread runs, until the stop
file appears, the whole life of an account against a running gateway:

  register, log in, refresh three times, read /auth/me, change the password,
  log in with the new one, log out, log out everywhere, and an admin deletes
  the account.

Each account claims its own client address through X-Forwarded-For (the
gateway trusts 127.0.0.1 as a proxy in the soak config), so the per-address
registration and refresh limits see many clients, as they would in
production. Any answer other than the expected status is counted and the
first few are printed; the summary is one JSON line on stdout.

Usage: churn.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD THREADS STOP_FILE
"""

import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

BASE, ADMIN_EMAIL, ADMIN_PASSWORD, THREADS, STOP = sys.argv[1:6]
URL = urllib.parse.urlsplit(BASE)
CONTEXT = ssl._create_unverified_context()  # the soak's own throwaway CA

lock = threading.Lock()
counts = {"accounts": 0, "requests": 0, "unexpected": 0}
shown = 0


class Client:
    """One keep-alive TLS connection, reopened when the gateway closes it."""

    def __init__(self, address):
        self.address = address
        self.conn = None

    def call(self, method, path, body=None, token=None, want=200):
        headers = {"x-forwarded-for": self.address}
        if body is not None:
            headers["content-type"] = "application/json"
            body = json.dumps(body)
        if token:
            headers["authorization"] = "Bearer " + token
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    URL.hostname, URL.port, context=CONTEXT, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        record(method, path, response.status, want, data)
        if response.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        try:
            return json.loads(data) if data else {}
        except ValueError:
            return {}


def record(method, path, status, want, data):
    global shown
    with lock:
        counts["requests"] += 1
        if status != want:
            counts["unexpected"] += 1
            if shown < 10:
                shown += 1
                print(f"churn: {method} {path} -> {status} (wanted {want}): {data[:200]!r}",
                      file=sys.stderr)


def admin_token():
    client = Client("10.255.255.254")
    answer = client.call("POST", "/auth/login",
                         {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    return client, answer.get("refreshToken", ""), answer.get("accessToken", "")


def worker(index, admin):
    serial = 0
    while not os.path.exists(STOP):
        serial += 1
        # A fresh address per account: 10.<worker>.<serial>.
        client = Client(f"10.{index % 250}.{serial // 250 % 250}.{serial % 250 + 1}")
        email = f"soak-{index}-{serial}-{time.time_ns()}@example.com"
        first, second = "first soak password", "second soak password"
        reg = client.call("POST", "/auth/register", {"email": email, "password": first}, want=201)
        user_id = reg.get("user", {}).get("id")
        session = client.call("POST", "/auth/login", {"email": email, "password": first})
        refresh = session.get("refreshToken")
        for _ in range(3):
            rotated = client.call("POST", "/auth/refresh", {"refreshToken": refresh})
            refresh = rotated.get("refreshToken", refresh)
            access = rotated.get("accessToken")
        client.call("GET", "/auth/me", token=access)
        client.call("POST", "/auth/password",
                    {"currentPassword": first, "newPassword": second}, token=access, want=204)
        again = client.call("POST", "/auth/login", {"email": email, "password": second})
        client.call("POST", "/auth/logout", {"refreshToken": again.get("refreshToken")}, want=204)
        last = client.call("POST", "/auth/login", {"email": email, "password": second})
        client.call("POST", "/auth/logout-all", token=last.get("accessToken"), want=204)
        if user_id:
            admin.call("DELETE", f"/auth/users/{user_id}", token=admin_access(admin), want=204)
        if client.conn:
            client.conn.close()
        with lock:
            counts["accounts"] += 1


_admin = {"access": None, "refresh": None, "at": 0.0}
_admin_lock = threading.Lock()


def admin_access(admin):
    """The admin's access token, refreshed every five minutes."""
    with _admin_lock:
        if time.monotonic() - _admin["at"] > 300:
            answer = admin.call("POST", "/auth/refresh", {"refreshToken": _admin["refresh"]})
            _admin["access"] = answer.get("accessToken", _admin["access"])
            _admin["refresh"] = answer.get("refreshToken", _admin["refresh"])
            _admin["at"] = time.monotonic()
        return _admin["access"]


def main():
    client, refresh, access = admin_token()
    _admin.update(access=access, refresh=refresh, at=time.monotonic())
    threads = []
    for index in range(int(THREADS)):
        # Each worker deletes through its own admin connection.
        admin = Client(f"10.254.{index}.1")
        thread = threading.Thread(target=worker, args=(index, admin), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    client.call("POST", "/auth/logout", {"refreshToken": _admin["refresh"]}, want=204)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
