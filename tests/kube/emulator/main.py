"""The command line: argument parsing, the TLS certificate (openssl), the kubeconfig, the
bootstrap namespaces and RBAC objects, starting the server and its threads, and saving the
state on SIGTERM/SIGINT."""
import argparse
import base64
import os
import re
import signal
import ssl
import subprocess
import sys
import threading

from . import rbac, util
from .controllers import Controllers
from .handler import Handler, Server
from .rbac import AUTHENTICATED, MASTERS, RBAC_GROUP, Rbac, _bootstrap_rbac
from .resources import Registry
from .store import Store
from .util import LOG_LEVELS, log


def ensure_tls_cert(state_dir, host):
    """STATE_DIR/tls.crt and tls.key: a self-signed certificate (also its own CA) for 127.0.0.1,
    localhost and the listen host, made once with the openssl command and kept across restarts."""
    crt, key = os.path.join(state_dir, "tls.crt"), os.path.join(state_dir, "tls.key")
    if os.path.exists(crt) and os.path.exists(key):
        return crt, key
    san = ["IP:127.0.0.1", "IP:::1", "DNS:localhost"]
    if host and host not in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::"):
        san.append(("IP:" if re.match(r"^[0-9.]+$|:", host) else "DNS:") + host)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key + ".tmp", "-out", crt + ".tmp", "-days", "3650",
                    "-subj", "/CN=kube-emulator", "-addext", "subjectAltName=" + ",".join(san),
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.chmod(key + ".tmp", 0o600)
    os.replace(key + ".tmp", key)
    os.replace(crt + ".tmp", crt)
    return crt, key


def write_kubeconfig(path, server, token, ca_file=None):
    ca = ""
    if ca_file:
        with open(ca_file, "rb") as f:
            ca = "\n    certificate-authority-data: " + base64.b64encode(f.read()).decode()
    text = """apiVersion: v1
kind: Config
clusters:
- name: helmq-emulator
  cluster:
    server: %s%s
contexts:
- name: helmq-emulator
  context:
    cluster: helmq-emulator
    user: helmq-admin
    namespace: default
current-context: helmq-emulator
preferences: {}
users:
- name: helmq-admin
  user:
    token: %s
""" % (server, ca, token)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    ap = argparse.ArgumentParser(
        prog="kube-emulator.py",
        description="An emulated Kubernetes API server (plain HTTP) for real helm 3 and kubectl.")
    ap.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                    help="address to listen on; port 0 picks a free port (default 127.0.0.1:0)")
    ap.add_argument("--state-dir", required=True, metavar="DIR",
                    help="directory for the persisted state (state.json), created if missing")
    ap.add_argument("--kubeconfig-out", metavar="FILE", help="write a kubeconfig for this server to FILE")
    ap.add_argument("--address-file", metavar="FILE", help="write HOST:PORT to FILE once listening")
    ap.add_argument("--ready-delay-ms", type=int,
                    default=int(os.environ.get("KUBE_EMULATOR_READY_DELAY_MS", "300")), metavar="N",
                    help="delay before pods become ready/complete (default 300, env KUBE_EMULATOR_READY_DELAY_MS)")
    ap.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr")
    ap.add_argument("--log-level", choices=sorted(LOG_LEVELS), default=os.environ.get("KUBE_EMULATOR_LOG_LEVEL", "info"),
                    help="debug logs one line per request (method path code ms); default info "
                         "(env KUBE_EMULATOR_LOG_LEVEL)")
    ap.add_argument("--token", default="helmq-emulator-admin",
                    help="the admin's bearer token, written to the kubeconfig: user admin, groups "
                         "system:masters (allowed everything)")
    ap.add_argument("--user", action="append", default=[], metavar="TOKEN=NAME[=GROUP,GROUP...]",
                    help="one more bearer token and its user and groups (repeatable); e.g. "
                         "--user t1=helmq-worker=helmq-workers")
    ap.add_argument("--token-auth-file", metavar="FILE",
                    help="more tokens, in kube-apiserver's static token file format (CSV: "
                         "token,user,uid,\"group1,group2\"); re-read whenever it changes")
    ap.add_argument("--anonymous", choices=["admin", "anonymous", "reject"], default="admin",
                    help="requests without a bearer token: admin (default, as before: all-powerful), "
                         "anonymous (the real API's default: user system:anonymous, group "
                         "system:unauthenticated, so only /version, /healthz, ...) or reject (401)")
    ap.add_argument("--tls", action="store_true",
                    help="also accept TLS on the port (sniffed per connection; plain HTTP keeps working) "
                         "with a self-signed certificate made by openssl in STATE_DIR (tls.crt, tls.key); "
                         "the kubeconfig then says https:// with that CA. Needed for a kubeconfig's token "
                         "or impersonation to be sent at all: client-go sends credentials only over TLS")
    ap.add_argument("--authorization", choices=["RBAC", "AlwaysAllow"], default="RBAC",
                    help="RBAC (default) or AlwaysAllow (no authorization at all)")
    args = ap.parse_args(argv)
    if args.ready_delay_ms < 0:
        ap.error("--ready-delay-ms must be >= 0")
    m = re.match(r"^\[?([^\]]*)\]?:(\d+)$", args.listen)
    if not m or int(m.group(2)) > 65535:
        ap.error("--listen must be HOST:PORT, got %r" % args.listen)
    host, port = m.group(1) or "127.0.0.1", int(m.group(2))
    util._log_level = LOG_LEVELS[args.log_level]
    if args.log:
        util._log_file = open(args.log, "a", buffering=1)
    try:
        os.makedirs(args.state_dir, exist_ok=True)
    except OSError as e:
        ap.error("--state-dir %s: %s" % (args.state_dir, e))

    reg = Registry()
    try:
        store = Store(reg, args.state_dir)
    except (OSError, ValueError) as e:
        print("kube-emulator: cannot load state from %s: %s" % (args.state_dir, e), file=sys.stderr)
        return 1
    nsrt = reg.by_key["/namespaces"]
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        if store.get(nsrt, "", ns) is None:
            store.create(nsrt, "", {"metadata": {"name": ns}})
    ctrl = Controllers(store, args.ready_delay_ms / 1000.0)
    Handler.store, Handler.ctrl = store, ctrl
    tokens = {args.token: ("admin", [MASTERS, AUTHENTICATED])}
    for spec in args.user:
        tok, sep, rest = spec.partition("=")
        name, _, groups = rest.partition("=")
        if not sep or not tok or not name:
            ap.error("--user must be TOKEN=NAME[=GROUP,GROUP...], got %r" % spec)
        tokens[tok] = (name, [g for g in groups.split(",") if g] + [AUTHENTICATED])
    Handler.tokens = tokens
    Handler.token_file = args.token_auth_file
    Handler.anonymous = args.anonymous
    roles, bindings = _bootstrap_rbac()
    for kind, objs in (("clusterroles", roles), ("clusterrolebindings", bindings)):
        rt = reg.by_key[RBAC_GROUP + "/" + kind]
        for o in objs:
            if store.get(rt, "", o["metadata"]["name"]) is None:
                store.create(rt, "", o)
    rbac._rbac = Rbac(store) if args.authorization == "RBAC" else None
    try:
        srv = Server((host, port), Handler)
    except OSError as e:
        print("kube-emulator: cannot listen on %s: %s" % (args.listen, e), file=sys.stderr)
        return 1
    addr = "%s:%d" % srv.server_address[:2]
    url = "http://" + addr
    ca_file = None
    if args.tls:
        try:
            ca_file, key_file = ensure_tls_cert(args.state_dir, host)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(ca_file, key_file)
            ctx.set_alpn_protocols(["http/1.1"])
        except (OSError, ssl.SSLError, subprocess.CalledProcessError) as e:
            print("kube-emulator: --tls: cannot make or load the certificate: %s %s" % (
                e, getattr(e, "stderr", b"") or b""), file=sys.stderr)
            return 1
        srv.ssl_ctx = ctx
        url = "https://" + addr
    threading.Thread(target=ctrl.run, name="controllers", daemon=True).start()
    threading.Thread(target=store.saver, name="saver", daemon=True).start()
    if args.kubeconfig_out:
        write_kubeconfig(args.kubeconfig_out, url, args.token, ca_file)
    if args.address_file:
        write_atomic(args.address_file, addr + "\n")
    print("kube-emulator listening on %s (state %s)" % (url, args.state_dir), flush=True)
    log("info", "listening on %s, state %s, ready delay %d ms" % (url, args.state_dir, args.ready_delay_ms))

    def on_term(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        store._stop = True
        store._dirty.set()
        try:
            # keeps the store locked until exit: a handler thread still
            # running blocks instead of acknowledging a write that is lost
            store.save_now(final=True)
        except OSError as e:
            log("error", "cannot save state: %s" % e)
        log("info", "stopped; state saved at resourceVersion %d" % store.rv)
    return 0
