"""Watch streams (a mixin of handler.Handler): chunked ADDED/MODIFIED/DELETED events replayed
from a resourceVersion or from now, 410 Expired, timeoutSeconds, sendInitialEvents bookmarks."""
import json
import time

from .errors import ApiError, bad_request
from .selectors import match_fields, match_labels


class WatchMixin:
    def _watch(self, rt, ns, lreqs, freqs, q):
        st = self.store
        timeout = float(q.get("timeoutSeconds") or 1800)
        end = time.monotonic() + timeout
        rv_param = q.get("resourceVersion", "")
        initial = []
        with st.lock:
            if rv_param in ("", "0") or q.get("sendInitialEvents") == "true":
                items, rv = st.list(rt, ns, lreqs, freqs)
                initial = [("ADDED", o) for o in items]
                last = rv
            else:
                try:
                    last = int(rv_param)
                except ValueError:
                    raise bad_request("invalid resourceVersion %r" % rv_param)
                if last < st.base_rv:
                    last = None
        self._body()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self._code = 200

        def emit(etype, obj):
            data = json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        try:
            if last is None:
                emit("ERROR", ApiError(410, "Expired", "too old resource version: %s (%d)" % (rv_param, st.base_rv))
                     .status())
            else:
                for etype, obj in initial:
                    emit(etype, obj)
                if q.get("sendInitialEvents") == "true":
                    emit("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.gv, "metadata": {
                        "resourceVersion": str(last), "annotations": {"k8s.io/initial-events-end": "true"}}})
                while time.monotonic() < end:
                    with st.lock:
                        pending = st.since(last)
                        if not pending:
                            st.cond.wait(min(5.0, max(0.0, end - time.monotonic())))
                            pending = st.since(last)
                    for erv, etype, key, obj in pending:
                        last = erv
                        m = obj["metadata"]
                        if key != rt.key or (ns is not None and m.get("namespace", "") != ns):
                            continue
                        if not match_labels(lreqs, m.get("labels")) or not match_fields(freqs, obj):
                            continue
                        emit(etype, obj)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.close_connection = True
