#!/usr/bin/python3
"""tests/lib/http_abuse.py: abusive HTTP clients for tests/api_abuse.t.

    http_abuse.py MODE PORT GOOD_PATH TOKEN EXPECT [MODE ARGS...]

Each mode abuses helmq-api on 127.0.0.1:PORT while a well-behaved client
(the "good" client) GETs GOOD_PATH with the bearer TOKEN every 100 ms on a
new connection and checks that the answer is 200 with EXPECT in its body.
Prints one JSON object: {"good": {...}, "abuse": {...}}; the good client's
figures are n, ok, failures (the first few), and latency p50/max in ms.

Modes:
  slowloris N INTERVAL_MS HOLD_S  N connections send a request's headers one
                                  byte every INTERVAL_MS, one more sends a
                                  body that way; how each one ended, when
  headers LIMIT                   oversized heads (one 64 KB header, many
                                  headers past LIMIT) and one just under it
  idle N HOLD_S PID               N connections that send nothing; when the
                                  server closed them; the server's CPU (PID);
                                  the good client starts once they are open
  pipeline RID POST_BODY          requests in one write, answered in order
  noread N HOLD_S PID             N connections pipeline GETs of GOOD_PATH
                                  and never read; the server's RSS and
                                  sockets while they stall, and after
Python 3 standard library only.
"""
import json
import os
import selectors
import socket
import sys
import threading
import time

HOST = "127.0.0.1"


def now_ms():
    return time.monotonic() * 1000.0


def request(method, path, token=None, body=None, extra=""):
    head = "%s %s HTTP/1.1\r\nHost: t\r\n" % (method, path)
    if token:
        head += "Authorization: Bearer %s\r\n" % token
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    head += extra + "\r\n"
    return head.encode() + (body.encode() if body is not None else b"")


def read_response(s, buf, head_only=False):
    """Reads one response from s; returns (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError("connection closed after %d bytes" % len(buf))
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_only else int(headers.get("content-length", "0"))
    while len(buf) < n:
        d = s.recv(65536)
        if not d:
            raise EOFError("connection closed in a body")
        buf += d
    return int(lines[0].split()[1]), headers, buf[:n].decode("utf-8", "replace"), buf[n:]


def until_eof(s, timeout):
    """Reads until the server closes; returns (bytes read, True if it closed)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return data, True
            data += d
    except ConnectionResetError:
        return data, True
    except socket.timeout:
        return data, False


class Good(threading.Thread):
    """The well-behaved client: a GET on a new connection every 100 ms."""

    def __init__(self, port, path, token, expect):
        super().__init__(daemon=True)
        self.port, self.path, self.token, self.expect = port, path, token, expect
        self.stop = threading.Event()
        self.lat, self.failures, self.n = [], [], 0

    def once(self):
        t0 = now_ms()
        try:
            s = socket.create_connection((HOST, self.port), timeout=10)
            try:
                s.sendall(request("GET", self.path, self.token))
                status, _, body, _ = read_response(s, b"")
            finally:
                s.close()
        except (OSError, EOFError) as e:
            return "%s: %s" % (type(e).__name__, e)
        if status != 200 or self.expect not in body:
            return "status %d: %s" % (status, body[:200])
        self.lat.append(now_ms() - t0)
        return None

    def run(self):
        while not self.stop.is_set():
            self.n += 1
            err = self.once()
            if err:
                self.failures.append(err)
            self.stop.wait(0.1)

    def report(self):
        self.stop.set()
        self.join()
        lat = sorted(self.lat)
        return {
            "n": self.n,
            "ok": len(lat),
            "failures": self.failures[:5],
            "p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
            "max_ms": round(lat[-1], 1) if lat else None,
        }


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def sockets_of(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def connect_many(port, n):
    """Opens n non-blocking connections; returns the sockets."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, port))
        socks.append(s)
    return socks


def watch_closes(socks, hold_s, t0, on_tick=None):
    """Waits up to hold_s for the server to close each socket (EOF or reset).
    Returns {sock: (ms after t0, bytes the server sent before closing)}."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed, got = {}, {s: b"" for s in socks}
    end = time.monotonic() + hold_s
    while len(closed) < len(socks) and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if d:
                got[s] += d
                continue
            closed[s] = (now_ms() - t0, got[s])
            sel.unregister(s)
        if on_tick:
            on_tick()
    sel.close()
    return closed


def slowloris(port, good, n, interval_ms, hold_s):
    head = request("GET", "/healthz", extra="X-Slow: " + "a" * 200 + "\r\n")
    body_head = request("POST", "/api/v1/helm/releases", good.token, extra="")
    body_head = body_head.replace(b"\r\n\r\n", b"\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n")
    t0 = now_ms()
    socks = connect_many(port, n)
    body = socket.create_connection((HOST, port), timeout=10)
    body.sendall(body_head)
    body.setblocking(False)
    sel = selectors.DefaultSelector()
    sent = {s: 0 for s in socks}
    closed, got = {}, {s: b"" for s in socks + [body]}
    for s in socks + [body]:
        sel.register(s, selectors.EVENT_READ)
    end = time.monotonic() + hold_s
    next_drip = time.monotonic()
    while len(closed) < n + 1 and time.monotonic() < end:
        if time.monotonic() >= next_drip:
            next_drip += interval_ms / 1000.0
            for s in socks + [body]:
                if s in closed:
                    continue
                try:
                    if s is body:
                        s.send(b"{")
                    elif sent[s] < len(head):
                        s.send(head[sent[s] : sent[s] + 1])
                        sent[s] += 1
                except OSError:
                    pass  # the server closed it: seen as EOF below
        for key, _ in sel.select(timeout=0.02):
            s = key.fileobj
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if d:
                got[s] += d
                continue
            closed[s] = now_ms() - t0
            sel.unregister(s)
    sel.close()

    def how(s):
        if s not in closed:
            return "open"
        line = got[s].split(b"\r\n", 1)[0].decode("latin-1")
        return line.split(" ", 2)[1] if line.startswith("HTTP/1.1 ") else "closed"

    ends = {}
    for s in socks:
        ends[how(s)] = ends.get(how(s), 0) + 1
    times = sorted(closed[s] for s in socks if s in closed)
    out = {
        "n": n,
        "ends": ends,
        "sent_max": max(sent.values()),
        "closed_min_ms": round(times[0]) if times else None,
        "closed_max_ms": round(times[-1]) if times else None,
        "body_sender": {"end": how(body), "closed_ms": round(closed[body]) if body in closed else None},
    }
    for s in socks + [body]:
        s.close()
    return out


def headers(port, good, limit):
    cases = [
        ("one 64 KB header", "X-Big: " + "b" * 65536 + "\r\n"),
        ("100 headers of 1 KB", "".join("X-H%d: %s\r\n" % (i, "h" * 1024) for i in range(100))),
        ("headers just past the limit", "".join("X-H%d: %s\r\n" % (i, "h" * 1000) for i in range(limit // 1000 + 1))),
        ("a 9 KB URL", None),
        ("a header just under the limit", "X-Under: " + "u" * (limit - 1024) + "\r\n"),
    ]
    out = {}
    for name, extra in cases:
        path = good.path if extra is not None else good.path + "?" + "q" * 9216
        s = socket.create_connection((HOST, port), timeout=10)
        r = {}
        try:
            s.sendall(request("GET", path, good.token, extra=extra or ""))
            status, hdrs, body, rest = read_response(s, b"")
            r = {"status": status, "connection": hdrs.get("connection"), "body": body[:300]}
            tail, eof = until_eof(s, 5 if hdrs.get("connection") == "close" else 0.5)
            r["closed"] = eof
        except (OSError, EOFError) as e:
            r = {"status": 0, "error": "%s: %s" % (type(e).__name__, e)}
        s.close()
        out[name] = r
        time.sleep(0.3)
    return out


def idle(port, good, n, hold_s, pid):
    t0 = now_ms()
    socks = connect_many(port, n)
    # let the connections land: the most sockets the server holds at once, looked at
    # until it holds n or 1.8 s have passed (they close after the 2 s idle timeout; a
    # server slowed by a sanitizer accepts the last of a 1,000-connection burst late)
    sockets_held = 0
    time.sleep(0.5)
    while True:
        sockets_held = max(sockets_held, sockets_of(pid))
        if sockets_held >= n or now_ms() - t0 >= 1800:
            break
        time.sleep(0.05)
    time.sleep(max(0.0, 1.0 - (now_ms() - t0) / 1000.0))
    good.start()  # while they are held (a newcomer in their very burst may be refused)
    c0, w0 = cpu_ticks(pid), time.monotonic()
    closed = watch_closes(socks, hold_s, t0)
    cpu = (cpu_ticks(pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - w0) * 100.0
    times = sorted(t for t, _ in closed.values())
    out = {
        "n": n,
        "server_sockets": sockets_held,
        "closed": len(closed),
        "closed_min_ms": round(times[0]) if times else None,
        "closed_max_ms": round(times[-1]) if times else None,
        "cpu_percent": round(cpu, 1),
        "alive": os.path.exists("/proc/%d" % pid),
    }
    for s in socks:
        s.close()
    return out


def pipeline(port, good, rid, post_body):
    P = "/api/v1/helm/releases"
    t = good.token
    reqs = [
        ("GET", request("GET", P + "/" + rid, t)),
        ("GET", request("GET", "/healthz")),
        ("HEAD", request("HEAD", P + "/" + rid, t)),
        ("POST", request("POST", P, t, body=post_body)),
        ("GET", request("GET", P + "/" + rid + "/history", t)),
    ]
    out = {}

    def run(name, reqs):
        s = socket.create_connection((HOST, port), timeout=15)
        s.sendall(b"".join(r for _, r in reqs))
        answers, buf = [], b""
        for method, _ in reqs:
            try:
                status, hdrs, body, buf = read_response(s, buf, head_only=(method == "HEAD"))
            except (OSError, EOFError):
                break
            answers.append({"status": status, "length": hdrs.get("content-length"),
                            "connection": hdrs.get("connection"), "body": body})
        last = answers[-1]["connection"] if answers else "close"
        tail, eof = until_eof(s, 5 if last == "close" else 0.5)
        s.close()
        out[name] = {"answers": answers, "closed": eof, "after": (buf + tail).decode("latin-1")[:200]}

    run("good", reqs)
    bad = [reqs[0], reqs[1], ("GET", b"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n"), reqs[0]]
    run("bad in the middle", bad)
    return out


def noread(port, good, n, hold_s, pid):
    rss0 = proc_status(pid, "VmRSS")
    socks0 = sockets_of(pid)
    one = request("GET", good.path, good.token)
    chunk = one * (65536 // len(one))
    socks = []
    for _ in range(n):
        # A small receive window, set before connecting (the window is agreed
        # in the handshake): the server's answers stall after a few KB rather
        # than after the megabytes loopback autotuning allows, so the test
        # does not depend on how fast the server is (a sanitizer build is
        # several times slower and was still answering when the hold ended).
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect((HOST, port))
        s.setblocking(False)
        socks.append(s)
    t0 = now_ms()
    sent, stalled_at = {s: 0 for s in socks}, {}
    # Send until every connection has been unable to send for 1 s: the
    # server's receive buffer and our own send buffer are full.
    last_progress = {s: time.monotonic() for s in socks}
    while len(stalled_at) < n and now_ms() - t0 < hold_s * 1000:
        for s in socks:
            if s in stalled_at:
                continue
            try:
                k = s.send(chunk)
                sent[s] += k
                last_progress[s] = time.monotonic()
            except BlockingIOError:
                if time.monotonic() - last_progress[s] > 1.0:
                    stalled_at[s] = now_ms() - t0
            except OSError:
                stalled_at[s] = now_ms() - t0
        time.sleep(0.01)
    rss_stalled = proc_status(pid, "VmRSS")
    socks_stalled = sockets_of(pid)
    # Keep not reading; the server may give up on them.
    end = time.monotonic() + hold_s
    while time.monotonic() < end and sockets_of(pid) > socks0:
        time.sleep(0.2)
    out = {
        "n": n,
        "requests_sent_per_conn": min(sent.values()) // len(one),
        "rss_before_kb": rss0,
        "rss_stalled_kb": rss_stalled,
        "rss_after_kb": proc_status(pid, "VmRSS"),
        "sockets_before": socks0,
        "sockets_stalled": socks_stalled,
        "sockets_after": sockets_of(pid),
        "released_after_ms": round(now_ms() - t0),
    }
    for s in socks:
        s.close()
    return out


def main():
    mode, port, path, token, expect = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    a = sys.argv[6:]
    good = Good(port, path, token, expect)
    if mode != "idle":
        good.start()
        time.sleep(0.3)
    if mode == "slowloris":
        abuse = slowloris(port, good, int(a[0]), int(a[1]), float(a[2]))
    elif mode == "headers":
        abuse = headers(port, good, int(a[0]))
    elif mode == "idle":
        abuse = idle(port, good, int(a[0]), float(a[1]), int(a[2]))
    elif mode == "pipeline":
        abuse = pipeline(port, good, a[0], a[1])
    elif mode == "noread":
        abuse = noread(port, good, int(a[0]), float(a[1]), int(a[2]))
    else:
        sys.exit("unknown mode " + mode)
    print(json.dumps({"good": good.report(), "abuse": abuse}))


if __name__ == "__main__":
    main()
