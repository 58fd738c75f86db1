"""The HTTP server: Server (TLS sniffed per connection, TCP_NODELAY, backlog 1024) and Handler
(request bodies, JSON and Status answers, routing of discovery/openapi/health/resources, the
verbs get/list/create/update/patch/delete/deletecollection, /status and /scale)."""
import json
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import util
from .authn import AuthMixin
from .discovery import openapi_gv, openapi_root, resource_list
from .errors import ApiError, bad_request, conflict, not_found
from .patch import json_merge_patch, json_patch, smp_apply
from .protobuf import decode_protobuf
from .rbac import AUTHENTICATED, MASTERS, authorize, forbidden, forbidden_path
from .selectors import parse_field_selector, parse_label_selector
from .tables import table_for, wants_table
from .util import LOG_LEVELS, VERSION, deepcopy, log
from .watch import WatchMixin


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    ssl_ctx = None  # --tls: a connection whose first byte is a TLS handshake is served over TLS

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()

    def finish_request(self, request, client_address):
        """Runs in the connection's thread. With --tls the port speaks both: TLS (what clients
        using the kubeconfig speak: client-go sends credentials only over TLS) and plain HTTP
        (curl http://..., as before), told apart by the first byte (0x16: a TLS handshake)."""
        conn = request
        if self.ssl_ctx is not None:
            try:
                request.settimeout(60)
                first = request.recv(1, socket.MSG_PEEK)
                request.settimeout(None)
            except OSError:
                return
            if first == b"\x16":
                try:
                    conn = self.ssl_ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    log("debug", "TLS handshake from %s failed: %s" % (client_address[0], e))
                    return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            if conn is not request:
                try:
                    conn.close()
                except OSError:
                    pass


class Handler(AuthMixin, WatchMixin, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-emulator"
    sys_version = ""
    store = None
    ctrl = None
    tokens = {}  # bearer token -> (user, groups): the admin's and --user's
    token_file = None  # --token-auth-file
    _tf_lock = threading.Lock()
    _tf_sig = None
    _tf_users = {}
    anonymous = "admin"  # requests without a token: admin | anonymous | reject (--anonymous)
    _ident = ("admin", [MASTERS, AUTHENTICATED])

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        pass

    # -- plumbing
    def _body(self):
        if getattr(self, "_body_cache", None) is not None:
            return self._body_cache
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = b""
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(n)
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if n else b""
        self._body_cache = data
        return data

    def _send(self, code, obj, ctype="application/json"):
        self._body()
        data = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._code = code

    def _obj_body(self):
        data = self._body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if not data:
            return None
        if ctype == "application/vnd.kubernetes.protobuf":
            try:
                return decode_protobuf(data)
            except ApiError:
                raise
            except (ValueError, UnicodeDecodeError, IndexError) as e:
                raise bad_request("cannot decode the protobuf body: %s" % e)
        try:
            return json.loads(data)
        except ValueError as e:
            if ctype.endswith("yaml"):
                raise ApiError(415, "UnsupportedMediaType",
                               "the emulator accepts YAML bodies only when they are JSON")
            raise bad_request("the body is not valid JSON: %s" % e)


    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _handle(self):
        t0 = time.monotonic()
        self._code = 0
        self._body_cache = None
        u = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}
        self._ident = None
        try:
            self._raw_path = u.path or "/"
            self._ident = self._impersonate(*self._authenticate())
            self._route(u.path.rstrip("/") or "/", q)
        except ApiError as e:
            self._send(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            log("error", "%s %s: internal error %r" % (self.command, self.path, e))
            import traceback
            traceback.print_exc(file=util._log_file)
            try:
                self._send(500, ApiError(500, "InternalError", "internal error: %r" % e).status())
            except OSError:
                self.close_connection = True
        ms = (time.monotonic() - t0) * 1000
        lvl = "error" if self._code >= 500 else "debug"
        if lvl == "error" or util._log_level <= LOG_LEVELS["debug"]:
            ct = self.headers.get("Content-Type") if self.command in ("POST", "PUT", "PATCH") else None
            who = self._ident[0] if self._ident else "-"
            log(lvl, "%s %s %d %.1fms%s%s" % (self.command, self.path, self._code, ms, " " + ct if ct else "",
                                              "" if who == "admin" else " user=" + who))

    def _route(self, path, q):
        reg = self.store.reg
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path != "/" else []
        if not ((parts[:1] == ["api"] and len(parts) >= 3) or (parts[:1] == ["apis"] and len(parts) >= 4)):
            # a non-resource request (discovery, /version, /openapi, health): authorized by path
            user, groups = self._ident
            verb = self.command.lower()
            allowed, reason = authorize(user, groups, verb, "", "", "", path=self._raw_path)
            if not allowed:
                raise forbidden_path(user, verb, self._raw_path, reason)
        if path in ("/healthz", "/readyz", "/livez"):
            return self._send(200, b"ok", "text/plain")
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "31", "gitVersion": VERSION,
                                    "gitCommit": "helmq-emulator", "gitTreeState": "clean",
                                    "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
                                    "compiler": "gc", "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "%s:%d" % self.server.server_address[:2]}]})
        if path == "/apis":
            groups = []
            for g, vs in reg.groups().items():
                gvs = [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in vs]
                groups.append({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/openapi/v3":
            return self._send(200, openapi_root(reg))
        if path.startswith("/openapi/v3/"):
            p = path[len("/openapi/v3/"):]
            gv = "v1" if p == "api/v1" else p[len("apis/"):] if p.startswith("apis/") else None
            if gv and (gv == "v1" or any(t.gv == gv for t in reg.all)):
                return self._send(200, openapi_gv(reg, gv))
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not parts or parts[0] not in ("api", "apis"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[0] == "api":
            if len(parts) < 2 or parts[1] != "v1":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            gv, rest = "v1", parts[2:]
        else:
            if len(parts) == 2:
                vs = reg.groups().get(parts[1])
                if not vs:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                gvs = [{"groupVersion": "%s/%s" % (parts[1], v), "version": v} for v in vs]
                return self._send(200, {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1],
                                        "versions": gvs, "preferredVersion": gvs[0]})
            if len(parts) < 3:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            gv, rest = "%s/%s" % (parts[1], parts[2]), parts[3:]
        if not rest:
            if gv != "v1" and not any(t.gv == gv for t in reg.all):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._send(200, resource_list(reg, gv))
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = reg.lookup(gv, plural)
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if ns is not None and not rt.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and sub not in ("status", "scale", "finalize") or (sub == "scale" and not rt.scale):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self._resource(rt, ns, name, sub, q)

    def _resource(self, rt, ns, name, sub, q):
        m = self.command
        watch = q.get("watch") in ("true", "1")
        if name is None:
            verb = {"GET": "watch" if watch else "list", "HEAD": "list", "POST": "create",
                    "DELETE": "deletecollection"}.get(m)
        else:
            verb = {"GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(m)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if rt.namespaced and ns is None and verb not in ("list", "watch"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        user, groups = self._user()
        res = rt.plural + ("/" + sub if sub else "")
        # as the real API's RequestInfo: a request on namespaces/NAME is in the namespace NAME
        authz_ns = name if rt.kind == "Namespace" and name else (ns or "")
        allowed, reason = authorize(user, groups, verb, res, authz_ns, name or "", api_group=rt.group)
        if not allowed:
            raise forbidden(user, verb, res, rt.group, authz_ns, name or "", reason)
        if rt.review:
            if verb != "create":
                raise ApiError(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested resource")
            body = self._obj_body()
            if not isinstance(body, dict):
                raise bad_request("the body of a create must be an object")
            return self._review(rt, ns, body)
        dry = "dryRun" in q and q.get("dryRun") != ""
        st = self.store
        nsk = ns if rt.namespaced else ""
        if verb in ("list", "watch"):
            lreqs = parse_label_selector(q.get("labelSelector", ""))
            freqs = parse_field_selector(q.get("fieldSelector", ""))
            if verb == "watch":
                return self._watch(rt, ns if rt.namespaced else None, lreqs, freqs, q)
            items, rv = st.list(rt, ns if rt.namespaced else None, lreqs, freqs)
            if wants_table(self.headers.get("Accept")):
                return self._send(200, table_for(rt, items, rv, q.get("includeObject", "Object")),
                                  "application/json;as=Table;v=v1;g=meta.k8s.io")
            return self._send(200, {"kind": rt.kind + "List", "apiVersion": rt.gv,
                                    "metadata": {"resourceVersion": str(rv)}, "items": items})
        if verb == "get":
            obj = st.get(rt, nsk, name)
            if obj is None:
                raise not_found(rt, name)
            if sub == "scale":
                return self._send(200, self._scale(rt, obj))
            if wants_table(self.headers.get("Accept")):
                return self._send(200, table_for(rt, [obj], obj["metadata"]["resourceVersion"],
                                                 q.get("includeObject", "Object")),
                                  "application/json;as=Table;v=v1;g=meta.k8s.io")
            return self._send(200, obj)
        if verb == "create":
            body = self._obj_body()
            if not isinstance(body, dict):
                raise bad_request("the body of a create must be an object")
            self._check_escalation(rt, nsk, body, "")
            obj = st.create(rt, nsk, body, dry_run=dry)
            return self._send(201, obj)
        if verb == "update":
            body = self._obj_body()
            if not isinstance(body, dict):
                raise bad_request("the body of an update must be an object")
            if sub == "scale":
                return self._set_scale(rt, nsk, name, body)
            if not sub:
                self._check_escalation(rt, nsk, body, name)
            obj = st.update(rt, nsk, name, body, subresource=sub, dry_run=dry)
            return self._send(200, obj)
        if verb == "patch":
            return self._patch(rt, nsk, name, sub, q, dry)
        if verb == "delete":
            opts = self._obj_body() or {}
            prop = q.get("propagationPolicy") or opts.get("propagationPolicy")
            if prop is None and (opts.get("orphanDependents") or q.get("orphanDependents") == "true"):
                prop = "Orphan"
            if prop not in (None, "Background", "Foreground", "Orphan"):
                raise bad_request("unknown propagationPolicy %r" % prop)
            obj = st.delete(rt, nsk, name, prop, opts.get("preconditions"), dry_run=dry or bool(opts.get("dryRun")))
            return self._send(200, obj)
        if verb == "deletecollection":
            opts = self._obj_body() or {}
            prop = q.get("propagationPolicy") or opts.get("propagationPolicy")
            items, _ = st.list(rt, ns if rt.namespaced else None,
                               parse_label_selector(q.get("labelSelector", "")),
                               parse_field_selector(q.get("fieldSelector", "")))
            gone = []
            for o in items:
                try:
                    gone.append(st.delete(rt, o["metadata"].get("namespace", ""), o["metadata"]["name"], prop,
                                          dry_run=dry))
                except ApiError:
                    pass
            return self._send(200, {"kind": rt.kind + "List", "apiVersion": rt.gv,
                                    "metadata": {"resourceVersion": str(st.rv)}, "items": gone})

    def _scale(self, rt, obj):
        sel = (obj.get("spec") or {}).get("selector") or {}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace"),
                             "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
                             "creationTimestamp": obj["metadata"]["creationTimestamp"]},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join("%s=%s" % kv for kv in (sel.get("matchLabels") or {}).items())}}

    def _set_scale(self, rt, ns, name, body):
        with self.store.lock:
            obj = self.store.get(rt, ns, name)
            if obj is None:
                raise not_found(rt, name)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            new = deepcopy(obj)
            new["spec"]["replicas"] = int((body.get("spec") or {}).get("replicas", 0))
            new = self.store.update(rt, ns, name, new)
            return self._send(200, self._scale(rt, new))

    def _patch(self, rt, ns, name, sub, q, dry):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        raw = self._body()
        try:
            patch = json.loads(raw or b"null")
        except ValueError as e:
            if ctype == "application/apply-patch+yaml":
                raise ApiError(415, "UnsupportedMediaType", "the emulator accepts apply patches only as JSON")
            raise bad_request("the patch is not valid JSON: %s" % e)
        st = self.store
        with st.lock:
            cur = st.get(rt, ns, name)
            if sub == "scale":
                if cur is None:
                    raise not_found(rt, name)
                cur_doc = self._scale(rt, cur)
            else:
                cur_doc = cur
            if cur is None:
                if ctype == "application/apply-patch+yaml":
                    if not isinstance(patch, dict):
                        raise bad_request("an apply patch must be an object")
                    self._check_escalation(rt, ns, patch, name)
                    obj = st.create(rt, ns, patch, dry_run=dry)
                    return self._send(201, obj)
                raise not_found(rt, name)
            if ctype == "application/merge-patch+json":
                new = json_merge_patch(cur_doc, patch)
            elif ctype == "application/json-patch+json":
                new = json_patch(cur_doc, patch)
            elif ctype == "application/strategic-merge-patch+json":
                if rt.crd:
                    raise ApiError(415, "UnsupportedMediaType",
                                   "the body of the request was in an unknown format - accepted media types include: "
                                   "application/json-patch+json, application/merge-patch+json, "
                                   "application/apply-patch+yaml")
                new = smp_apply(cur_doc, patch)
            elif ctype == "application/apply-patch+yaml":
                if not isinstance(patch, dict):
                    raise bad_request("an apply patch must be an object")
                patch = dict(patch)
                (patch.get("metadata") or {}).pop("resourceVersion", None)
                new = json_merge_patch(cur_doc, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               "the body of the request was in an unknown format - accepted media types include: "
                               "application/json-patch+json, application/merge-patch+json, "
                               "application/apply-patch+yaml, application/strategic-merge-patch+json")
            if not isinstance(new, dict):
                raise bad_request("the patch result is not an object")
            prv = ((patch if isinstance(patch, dict) else {}).get("metadata") or {}).get("resourceVersion")
            if prv and prv != cur["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if sub == "scale":
                return self._set_scale(rt, ns, name, new)
            new.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
            if not sub:
                self._check_escalation(rt, ns, new, name)
            obj = st.update(rt, ns, name, new, subresource=sub, dry_run=dry)
            return self._send(200, obj)
