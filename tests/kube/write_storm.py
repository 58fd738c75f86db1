#!/usr/bin/env python3
"""write_storm.py URL TOKEN NAMESPACE PREFIX THREADS OUT

Creates ConfigMaps named PREFIX-T-N from THREADS threads, as fast as the API
server answers, until it stops answering (it is being stopped). Writes the
names it got 201 Created for to OUT, one per line: an API server must still
have every one of them after a restart. Python 3 standard library only.
"""
import http.client
import json
import sys
import threading
import urllib.parse


def main():
    url, token, ns, prefix, threads, out = sys.argv[1:7]
    u = urllib.parse.urlparse(url)
    acked, lock = [], threading.Lock()

    def writer(t):
        n = 0
        while True:
            name = "%s-%d-%d" % (prefix, t, n)
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name}, "data": {"k": "v"}})
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
                c.request("POST", "/api/v1/namespaces/%s/configmaps" % ns, body,
                          {"Content-Type": "application/json", "Authorization": "Bearer " + token})
                status = c.getresponse().status
                c.close()
            except (OSError, http.client.HTTPException):
                return
            if status == 201:
                with lock:
                    acked.append(name)
            elif status >= 500:
                return
            n += 1

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(int(threads))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with open(out, "w") as f:
        f.write("".join(n + "\n" for n in acked))


if __name__ == "__main__":
    main()
