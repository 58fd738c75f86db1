"""The simulator: Sim (the invocation log, per-release knob files, the simulated work of an
operation with its faults and deadlines, SIGTERM/SIGINT handling, chart and values lookup,
release objects and their printing, and run(), which parses argv and dispatches) and main()."""
import json
import os
import signal
import sys
import time

from .charts import read_local_chart, render_manifest
from .cli import ALIASES, COMMANDS, HelpRequested, check_args, find_subcommand, goquote, parse_flags
from .commands import CommandsMixin
from .consts import Cancelled, HelmError, SIM_VERSION
from .formats import ansic, go_json, now_ns, rfc3339nano, yaml_dump
from .releases import canon, go_errno, merge_maps
from .storage import Store


def stdin_target():
    """What descriptor 0 is (a path, pipe:[N], ...), or null when it is closed."""
    try:
        return os.readlink("/proc/self/fd/0")
    except OSError:
        return None


class Sim(CommandsMixin):
    def __init__(self, argv):
        self.argv = argv
        self.root = os.environ.get("HELM_SIM_STATE") or os.path.join(
            os.environ.get("HOME", "/tmp"), ".helm-sim")
        self.store = Store(self.root)
        self.cmd = None
        self.release = None
        self.namespace = os.environ.get("HELM_NAMESPACE") or "default"
        self.log_extra = {}
        self.log_fd = None
        self.ended = False
        self.cancelled = False
        self.in_wait = False
        self.signal_mode = None

    # -- invocation log
    def log(self, event, **fields):
        rec = {"event": event, "pid": os.getpid(), "ppid": os.getppid(), "ts": time.time(),
               "argv": self.argv, "subcommand": self.cmd, "namespace": self.namespace,
               "release": self.release, "stdin": stdin_target()}
        rec.update(self.log_extra)
        rec.update(fields)
        line = (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            if self.log_fd is None:
                os.makedirs(self.root, exist_ok=True)
                self.log_fd = os.open(os.path.join(self.root, "invocations.log"),
                                      os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self.log_fd, line)
        except OSError as e:
            sys.stderr.write("helm-sim: cannot write invocation log: %s\n" % e)

    def end(self, code, **fields):
        if not self.ended:
            self.ended = True
            self.log("end", exit=code, **fields)

    # -- knobs
    def knobs(self, op):
        path = os.path.join(self.root, "knobs", self.namespace, "%s.json" % self.release)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read() or b"{}")
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as e:
            raise HelmError("helm-sim: invalid knob file %s: %s" % (path, e))
        if not isinstance(data, dict):
            raise HelmError("helm-sim: invalid knob file %s: not a JSON object" % path)
        # "any" covers the state-changing operations; status/history read only their own.
        # A section with "until" (epoch seconds) applies only before that moment: a
        # fault that ends on its own (an API server that comes back).
        def live(section):
            section = section or {}
            until = section.get("until")
            return {} if until is not None and time.time() >= float(until) else section
        k = dict(live(data.get("any"))) if op in ("install", "upgrade", "rollback", "uninstall") else {}
        k.update(live(data.get(op)))
        return k

    def check_reachable(self, knob, prefix=""):
        why = knob.get("unreachable") or os.environ.get("HELM_SIM_UNREACHABLE")
        if why and why not in ("0", "false"):
            detail = why if isinstance(why, str) and why not in ("1", "true") else (
                'Get "https://helm-sim.invalid/version": dial tcp: lookup helm-sim.invalid: '
                'no such host (simulated)')
            raise HelmError("%sKubernetes cluster unreachable: %s" % (prefix, detail))

    # -- the "work" of an operation: sleep, hang, crash, fail, deadline
    def work(self, op, knob, timeout):
        """Returns None on success or the error text (Go's error) of the failure."""
        sleep = knob.get("sleep")
        if sleep is None:
            sleep = float(os.environ.get("HELM_SIM_SLEEP") or 0)
        sleep = float(sleep)
        hang = bool(knob.get("hang"))
        exceeded = not hang and sleep > 0 and sleep > timeout
        if exceeded:
            sleep = max(timeout, 0.0)
        if knob.get("ignore_term"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.in_wait = True
        try:
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
                if self.cancelled:
                    raise Cancelled()
                if hang:
                    while True:
                        time.sleep(3600)
                deadline = time.monotonic() + sleep
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    time.sleep(left)
            finally:
                self.in_wait = False  # from here on the handler no longer raises
                if self.signal_mode == "cancel":
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        except Cancelled:
            return "context canceled"
        if knob.get("crash"):
            self.end(2, crash=True)
            sys.stdout.flush()
            sys.stderr.write("helm-sim: simulated crash during %s\n" % op)
            sys.stderr.flush()
            os._exit(2)
        if knob.get("lost"):
            # helm lost the API server mid-operation: it fails, and cannot record
            # the failure either, so the revision stays pending-* in its storage.
            prefix = {"install": "INSTALLATION FAILED: ", "upgrade": "UPGRADE FAILED: "}.get(op, "")
            text = "%s%s" % (prefix, knob["lost"])
            self.end(1, error=text)
            sys.stdout.flush()
            sys.stderr.write("Error: %s\n" % text)
            sys.stderr.flush()
            os._exit(1)
        if exceeded:
            return "context deadline exceeded"
        if knob.get("fail"):
            return str(knob["fail"])
        return None

    def install_signals(self, kind):
        """install/upgrade catch SIGTERM/SIGINT and fail the release (helm 3.17 does,
        printing 'Release NAME has been cancelled.'); rollback/uninstall have no handler
        in helm, so the process dies by the signal and the release stays pending."""
        self.signal_mode = kind
        if kind == "cancel":
            def handler(sig, frame):
                if self.cancelled:
                    return  # helm reads its signal channel once; later signals are swallowed
                self.cancelled = True
                sys.stdout.write("Release %s has been cancelled.\n" % self.release)
                sys.stdout.flush()
                if self.in_wait:
                    raise Cancelled()
            # Held off except while the operation waits, so the handler only fires there.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        else:
            def handler(sig, frame):
                self.end(-sig, signal=sig)
                signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
                os.kill(os.getpid(), sig)
                time.sleep(1)
                os._exit(128 + sig)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- chart and values
    def locate_chart(self, ref, version):
        meta = None
        if os.path.exists(ref):
            meta = read_local_chart(ref)
        elif os.path.isabs(ref) or ref.startswith("."):
            raise HelmError('path %s not found' % goquote(ref))
        else:
            if "://" in ref:
                scheme, _, rest = ref.partition("://")
                path = rest.split("?", 1)[0].rstrip("/")
            elif "/" in ref:
                scheme, path = "repo", ref
            else:
                raise HelmError("non-absolute URLs should be in form of repo_name/path_to_chart, got: %s" % ref)
            last = path.rsplit("/", 1)[-1]
            if scheme == "oci" and ":" in last:
                last, _, tag = last.partition(":")
                version = version or tag
            for ext in (".tgz", ".tar.gz"):
                if last.endswith(ext):
                    last = last[:-len(ext)]
                    cut = last.rfind("-")
                    if cut > 0 and last[cut + 1:cut + 2].isdigit():
                        version = version or last[cut + 1:]
                        last = last[:cut]
            name = last
            version = version or os.environ.get("HELM_SIM_CHART_VERSION") or "0.1.0"
            meta = {"name": name, "version": version}
            app = os.environ.get("HELM_SIM_APP_VERSION", "")
            catalog = self.chart_catalog()
            if name in catalog:
                versions = catalog[name] or {}
                if version not in versions:
                    repo = path.split("/", 1)[0] if scheme == "repo" else ref
                    raise HelmError("chart %s matching %s not found in %s index. (try 'helm repo "
                                    "update'): no chart version found for %s-%s"
                                    % (goquote(name), version, repo, name, version))
                app = (versions[version] or {}).get("appVersion", app)
            meta["apiVersion"] = "v2"
            if app:
                meta["appVersion"] = str(app)
        return {"metadata": meta, "lock": None, "templates": [], "values": {},
                "schema": None, "files": []}

    def chart_catalog(self):
        try:
            with open(os.path.join(self.root, "charts.json"), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise HelmError("helm-sim: invalid charts.json: %s" % e)

    def merge_values(self, files):
        base = {}
        modes = []
        for path in files or []:
            try:
                st = os.stat(path)
                with open(path, "rb") as f:
                    raw = f.read()
            except OSError as e:
                raise HelmError("open %s: %s" % (path, go_errno(e)))
            modes.append("%04o" % (st.st_mode & 0o7777))
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                data = json.loads(text)
            except ValueError as e:
                raise HelmError("failed to parse %s: error converting YAML to JSON: helm-sim reads "
                                "JSON values files only: %s" % (path, e))
            if data is None:
                continue
            if not isinstance(data, dict):
                kind = {list: "array", str: "string", bool: "bool"}.get(type(data), "number")
                raise HelmError("failed to parse %s: error unmarshaling JSON: while decoding JSON: "
                                "json: cannot unmarshal %s into Go value of type "
                                "map[string]interface {}" % (path, kind))
            base = merge_maps(base, canon(data))
        return base, modes

    # -- release objects
    def new_release(self, name, chart, config, version, status, desc, first=None, last=None):
        ts = rfc3339nano(now_ns())
        meta = chart["metadata"]
        rel = {"name": name,
               "info": {"first_deployed": first or ts, "last_deployed": last or ts,
                        "deleted": "", "description": desc, "status": status,
                        "notes": "helm-sim: release %s of %s-%s in namespace %s (simulated, nothing "
                                 "was deployed)\n" % (name, meta["name"], meta["version"],
                                                      self.namespace)},
               "chart": chart}
        if config:
            rel["config"] = config
        rel["manifest"] = render_manifest(name, meta, config)
        rel["version"] = version
        rel["namespace"] = self.namespace
        return rel

    def print_release(self, rel, fmt, header=None):
        if fmt == "json":
            sys.stdout.write(go_json(rel))
        elif fmt == "yaml":
            sys.stdout.write(yaml_dump(rel))
        else:
            if header:
                sys.stdout.write(header)
            info = rel["info"]
            out = "NAME: %s\n" % rel["name"]
            if info.get("last_deployed"):
                out += "LAST DEPLOYED: %s\n" % ansic(info["last_deployed"])
            out += "NAMESPACE: %s\nSTATUS: %s\nREVISION: %d\nTEST SUITE: None\n" % (
                rel["namespace"], info["status"], rel["version"])
            if info.get("notes"):
                out += "NOTES:\n%s\n" % info["notes"].strip()
            sys.stdout.write(out)


    # -- entry point
    def run(self):
        started = False
        try:
            cmd, rest = find_subcommand(self.argv)
            if cmd is None:
                sys.stdout.write("helm-sim: a simulated helm %s for tests.\n\nUsage:\n  helm [command]\n\n"
                                 "Available Commands: %s\n" % (SIM_VERSION, ", ".join(COMMANDS)))
                return 0
            cmd = ALIASES.get(cmd, cmd)
            if cmd not in COMMANDS:
                self.cmd = cmd
                self.log("start")
                started = True
                sys.stderr.write('Error: unknown command %s for "helm"\nRun \'helm --help\' for usage.\n'
                                 % goquote(cmd))
                self.end(1)
                return 1
            self.cmd = cmd
            try:
                opts, pos = parse_flags(COMMANDS[cmd]["flags"], rest)
            except HelpRequested:
                sys.stdout.write("Usage:  %s\n" % COMMANDS[cmd]["use"])
                return 0
            if "namespace" in opts and opts["namespace"]:
                self.namespace = opts["namespace"]
            if cmd in ("install", "upgrade", "rollback", "uninstall", "status", "history") and pos:
                self.release = pos[0]
            for path in opts.get("values") or []:
                try:
                    self.log_extra.setdefault("values_mode", "%04o" % (os.stat(path).st_mode & 0o7777))
                except OSError:
                    self.log_extra.setdefault("values_mode", None)
            if opts.get("values"):
                self.log_extra["values_files"] = opts["values"]
            self.log("start")
            started = True
            check_args(cmd, pos)
            ns = self.namespace
            if "/" in ns or ns in (".", ".."):
                raise HelmError('namespaces %s not found' % goquote(ns))
            code = getattr(self, "cmd_" + cmd)(opts, pos)
            sys.stdout.flush()
            self.end(code)
            return code
        except HelmError as e:
            sys.stdout.flush()
            sys.stderr.write("Error: %s\n" % e)
            if not started:
                self.log("start")
            self.end(1, error=str(e))
            return 1


def main():
    try:
        code = Sim(sys.argv[1:]).run()
        sys.stdout.flush()
    except BrokenPipeError:
        code = 1
    sys.exit(code)
