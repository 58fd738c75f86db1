"""The object store: objects by (resource, namespace, name), the global resourceVersion, the
event log watches replay, create/update/delete with their Status errors, garbage
collection of dependents by ownerReferences, and persistence to STATE_DIR/state.json."""
import collections
import json
import os
import re
import threading
import time
import uuid

from .defaults import defaults_on_create, defaults_on_update
from .errors import already_exists, bad_request, conflict, invalid, not_found
from .selectors import match_fields, match_labels
from .util import deepcopy, dsub, log, now_ts, rand_suffix, strip_nulls


def okey(rt, ns, name):
    return (rt.key, ns or "", name)


def owner_ref(obj, rt):
    return {"apiVersion": rt.gv, "kind": rt.kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_of(obj):
    for r in obj.get("metadata", {}).get("ownerReferences") or []:
        if r.get("controller"):
            return r
    return None


class Store:
    """All objects, the resourceVersion counter, the watch event log, persistence.

    Stored objects are never mutated in place (copy on write), so readers may
    serialize them without the lock."""

    WATCH_LOG = 50000

    def __init__(self, registry, state_dir):
        self.reg = registry
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.objs = {}
        self.rv = 0
        self.ip_counter = 0
        self.events = collections.deque()
        self.base_rv = 0
        self.listeners = []
        self.state_dir = state_dir
        self.state_file = os.path.join(state_dir, "state.json") if state_dir else None
        self._dirty = threading.Event()
        self._saved_lock = threading.Lock()
        self._stop = False
        self.load()

    # -- persistence
    def load(self):
        if not self.state_file or not os.path.exists(self.state_file):
            return
        with open(self.state_file) as f:
            st = json.load(f)
        self.rv = int(st.get("resourceVersion", 0))
        self.ip_counter = int(st.get("ipCounter", 0))
        for o in st.get("objects", []):
            rt = self.reg.by_gvk.get((o.get("apiVersion"), o.get("kind")))
            if rt is None and o.get("kind") != "CustomResourceDefinition":
                # a custom resource: register its CRDs first
                self.reg.set_crds([x for x in st.get("objects", []) if x.get("kind") == "CustomResourceDefinition"])
                rt = self.reg.by_gvk.get((o.get("apiVersion"), o.get("kind")))
            if rt is None:
                continue
            m = o["metadata"]
            self.objs[okey(rt, m.get("namespace"), m["name"])] = o
        self.reg.set_crds(self.crds())
        self.base_rv = self.rv
        log("info", "loaded %d objects at resourceVersion %d from %s" % (len(self.objs), self.rv, self.state_file))

    def save_now(self, final=False):
        """Write the state file. With final=True the store lock is taken and
        kept: the process is exiting, and no write may be applied (and
        acknowledged to a client) after the last snapshot."""
        if not self.state_file:
            if final:
                self.lock.acquire()
            return
        with self._saved_lock:
            if final:
                self.lock.acquire()
            with self.lock:
                snap = {"resourceVersion": self.rv, "ipCounter": self.ip_counter,
                        "objects": list(self.objs.values())}
                self._dirty.clear()
            data = json.dumps(snap, separators=(",", ":"))
            tmp = self.state_file + ".tmp.%d" % os.getpid()
            with open(tmp, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)

    def saver(self):
        while not self._stop:
            self._dirty.wait()
            if self._stop:
                break
            time.sleep(0.05)  # debounce
            try:
                self.save_now()
            except OSError as e:
                log("error", "cannot save state: %s" % e)

    def crds(self):
        return [o for (k, _, _), o in self.objs.items() if k == "apiextensions.k8s.io/customresourcedefinitions"]

    # -- primitive writes (call with the lock held)
    def _next_rv(self):
        self.rv += 1
        return self.rv

    def _record(self, etype, rt, obj):
        self.events.append((self.rv, etype, rt.key, obj))
        while len(self.events) > self.WATCH_LOG:
            old = self.events.popleft()
            self.base_rv = old[0]
        self._dirty.set()
        self.cond.notify_all()
        for fn in self.listeners:
            fn(etype, rt, obj)

    def _put(self, rt, obj, etype):
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        m = obj["metadata"]
        self.objs[okey(rt, m.get("namespace"), m["name"])] = obj
        self._record(etype, rt, obj)
        return obj

    def _remove(self, rt, obj):
        m = obj["metadata"]
        self.objs.pop(okey(rt, m.get("namespace"), m["name"]), None)
        obj = dict(obj)
        obj["metadata"] = dict(m, resourceVersion=str(self._next_rv()))
        self._record("DELETED", rt, obj)
        return obj

    # -- reads
    def since(self, rv):
        """Watch events after resourceVersion rv (call with the lock held)."""
        out = []
        for e in reversed(self.events):
            if e[0] <= rv:
                break
            out.append(e)
        out.reverse()
        return out

    def get(self, rt, ns, name):
        return self.objs.get(okey(rt, ns, name))

    def list(self, rt, ns=None, lreqs=(), freqs=()):
        with self.lock:
            items = [o for (k, n, _), o in self.objs.items()
                     if k == rt.key and (ns is None or n == ns)]
            rv = self.rv
        items = [o for o in items if match_labels(lreqs, o["metadata"].get("labels"))
                 and match_fields(freqs, o)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items, rv

    def owned_by(self, uid, rt=None, ns=None):
        out = []
        for (k, n, _), o in self.objs.items():
            if rt is not None and k != rt.key:
                continue
            if ns is not None and n != ns:
                continue
            for r in o["metadata"].get("ownerReferences") or []:
                if r.get("uid") == uid:
                    out.append(o)
                    break
        return out

    # -- writes with API semantics
    def create(self, rt, ns, obj, dry_run=False):
        with self.lock:
            obj = deepcopy(obj) if rt.crd else strip_nulls(obj)
            obj["apiVersion"], obj["kind"] = rt.gv, rt.kind
            m = dsub(obj, "metadata")
            if rt.namespaced:
                if m.get("namespace") and m["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
                m["namespace"] = ns
                if self.get(self.reg.by_key["/namespaces"], "", ns) is None:
                    raise not_found(self.reg.by_key["/namespaces"], ns)
            else:
                m.pop("namespace", None)
            if not m.get("name"):
                if m.get("generateName"):
                    m["name"] = m["generateName"] + rand_suffix()
                else:
                    raise invalid(rt, "", "metadata.name", "Required value: name or generateName is required")
            if not re.match(r"^[a-z0-9]([-a-z0-9.:]*[a-z0-9])?$", m["name"]) or len(m["name"]) > 253:
                raise invalid(rt, m["name"], "metadata.name",
                              "Invalid value: \"%s\": a lowercase RFC 1123 subdomain must consist of lower case "
                              "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                              "character" % m["name"])
            if self.get(rt, ns if rt.namespaced else "", m["name"]) is not None:
                raise already_exists(rt, m["name"])
            if rt.kind == "Namespace":
                existing = self.get(rt, "", m["name"])
                if existing is not None:
                    raise already_exists(rt, m["name"])
            m["uid"] = str(uuid.uuid4())
            m["creationTimestamp"] = now_ts()
            m.pop("resourceVersion", None)
            m.pop("deletionTimestamp", None)
            m.pop("selfLink", None)
            m.pop("managedFields", None)
            if rt.generation:
                m["generation"] = 1
            else:
                m.pop("generation", None)
            if rt.status and rt.kind not in ("Service",) and not rt.crd:
                obj.pop("status", None)
            defaults_on_create(self, rt, obj)
            if dry_run:
                obj["metadata"]["resourceVersion"] = str(self.rv)
                return obj
            obj = self._put(rt, obj, "ADDED")
            if rt.kind == "CustomResourceDefinition":
                self.reg.set_crds(self.crds())
            return obj

    def update(self, rt, ns, name, obj, subresource=None, dry_run=False, check_rv=True):
        with self.lock:
            old = self.get(rt, ns, name)
            if old is None:
                raise not_found(rt, name)
            obj = deepcopy(obj) if rt.crd else strip_nulls(obj)
            m = dsub(obj, "metadata")
            if m.get("name") and m["name"] != name:
                raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                  % (m["name"], name))
            rv = m.get("resourceVersion")
            if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if m.get("uid") and m["uid"] != old["metadata"]["uid"]:
                raise conflict(rt, name)
            obj["apiVersion"], obj["kind"] = rt.gv, rt.kind
            om = old["metadata"]
            m["name"] = name
            for k in ("uid", "creationTimestamp", "namespace", "generation", "deletionTimestamp"):
                if k in om:
                    m[k] = om[k]
                else:
                    m.pop(k, None)
            m.pop("managedFields", None)
            if subresource == "status":
                new = dict(old)
                new["metadata"] = dict(om)
                if "status" in obj:
                    new["status"] = obj["status"]
                obj = deepcopy(new)
            elif rt.status:
                if "status" in old:
                    obj["status"] = deepcopy(old["status"])
                else:
                    obj.pop("status", None)
            defaults_on_update(self, rt, old, obj)
            if rt.generation:
                strip = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}
                if strip(old) != strip(obj):
                    m["generation"] = om.get("generation", 1) + 1
            if dry_run:
                return obj
            same = {k: v for k, v in obj.items() if k != "metadata"} == \
                {k: v for k, v in old.items() if k != "metadata"} and \
                {k: v for k, v in m.items() if k != "resourceVersion"} == \
                {k: v for k, v in om.items() if k != "resourceVersion"}
            if same:
                return old  # a no-op update does not bump the resourceVersion (as the real API)
            obj = self._put(rt, obj, "MODIFIED")
            if rt.kind == "CustomResourceDefinition":
                self.reg.set_crds(self.crds())
            return obj

    def delete(self, rt, ns, name, propagation=None, preconditions=None, dry_run=False):
        with self.lock:
            old = self.get(rt, ns, name)
            if old is None:
                raise not_found(rt, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise conflict(rt, name)
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if dry_run:
                return old
            if propagation is None:
                propagation = "Orphan" if rt.kind in ("Job", "CronJob") else "Background"
            gone = self._remove(rt, old)
            self._collect(rt, old, propagation)
            if rt.kind == "CustomResourceDefinition":
                self.reg.set_crds(self.crds())
            return gone

    def _collect(self, rt, obj, propagation):
        """Garbage collection: dependents (ownerReferences) and namespace contents."""
        uid = obj["metadata"]["uid"]
        if rt.kind == "Namespace":
            ns = obj["metadata"]["name"]
            for (k, n, _), o in list(self.objs.items()):
                if n == ns and k in self.reg.by_key:
                    if self.objs.get((k, n, o["metadata"]["name"])) is o:
                        self._remove(self.reg.by_key[k], o)
            return
        if rt.kind == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            for (k, n, nm), o in list(self.objs.items()):
                if k == "%s/%s" % (spec.get("group"), names.get("plural")):
                    self._remove(self.reg.by_key.get(k) or rt, o)
        for dep in self.owned_by(uid):
            drt = self.reg.by_gvk.get((dep.get("apiVersion"), dep.get("kind")))
            if drt is None:
                continue
            refs = [r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if propagation == "Orphan" or refs:
                new = dict(dep)
                new["metadata"] = dict(dep["metadata"])
                if refs:
                    new["metadata"]["ownerReferences"] = refs
                else:
                    new["metadata"].pop("ownerReferences", None)
                self._put(drt, new, "MODIFIED")
            else:
                self._remove(drt, dep)
                self._collect(drt, dep, propagation)
