"""Release state on disk: Store (one JSON file of revisions per namespace/release under
$HELM_SIM_STATE) and ReleaseLock (an flock per release, signals blocked while held)."""
import fcntl
import json
import os
import signal


class Store:
    """Release state under $HELM_SIM_STATE; one JSON file per release, all revisions."""

    def __init__(self, root):
        self.root = root

    def rel_path(self, ns, name):
        return os.path.join(self.root, "releases", ns, name + ".json")

    def load(self, ns, name):
        try:
            with open(self.rel_path(ns, name), "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return []
        return sorted(data["revisions"], key=lambda r: r["version"])

    def save(self, ns, name, revs):
        path = self.rel_path(ns, name)
        if not revs:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.tmp.%d" % (path, os.getpid())
        body = json.dumps({"name": name, "namespace": ns,
                           "revisions": sorted(revs, key=lambda r: r["version"])},
                          ensure_ascii=False, indent=1)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body + "\n")
        os.replace(tmp, path)

    def lock(self, ns, name):
        return ReleaseLock(os.path.join(self.root, "locks", ns, name + ".lock"))

    def list_names(self, ns):
        try:
            entries = os.listdir(os.path.join(self.root, "releases", ns))
        except FileNotFoundError:
            return []
        return sorted(e[:-5] for e in entries if e.endswith(".json"))


class ReleaseLock:
    """flock on a per-release lock file; termination signals are held off inside,
    so a signal never tears a read-modify-write of the state."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
        return False
