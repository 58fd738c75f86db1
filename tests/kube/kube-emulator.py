#!/usr/bin/python3
"""kube-emulator: an emulated Kubernetes API server for real helm 3 and kubectl.

Python 3 standard library only; plain HTTP (no TLS). Serves discovery, /version,
/openapi/v3, CRUD + list + watch + patch (merge, JSON, strategic merge, apply) of
the built-in kinds helm charts use (and of kinds defined by CRDs), decodes the
protobuf bodies helm's release storage sends, runs emulated controllers and a
kubelet (Deployments -> ReplicaSets -> Pods, StatefulSets, DaemonSets, Jobs), garbage
collects by ownerReferences and persists its state to a directory.

See tests/kube/README.md for what it supports and what it does not.
"""
import argparse
import base64
import collections
import csv
import datetime
import hashlib
import heapq
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v1.31.0"
EMU_READY = "emulator.helmq.dev/ready"  # "never": the pod (and its workload) never becomes ready
EMU_JOB = "emulator.helmq.dev/job"  # "fail": the Job's pods fail, the Job fails (BackoffLimitExceeded)

LOG_LEVELS = {"debug": 10, "info": 20, "error": 40}
_log_level = 20
_log_file = sys.stderr
_log_lock = threading.Lock()


def log(level, msg):
    if LOG_LEVELS[level] < _log_level:
        return
    line = "%s kube-emulator %s %s\n" % (
        datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3], level.upper(), msg)
    with _log_lock:
        try:
            _log_file.write(line)
            _log_file.flush()
        except (OSError, ValueError):
            pass


def now_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_age(ts):
    try:
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return "<unknown>"
    s = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    if s < 120:
        return "%ds" % max(s, 0)
    if s < 7200:
        return "%dm" % (s // 60)
    if s < 172800:
        return "%dh" % (s // 3600)
    return "%dd" % (s // 86400)


def deepcopy(o):
    return json.loads(json.dumps(o))


def strip_nulls(o):
    """What decoding into the typed structs of the real API server does to JSON nulls."""
    if isinstance(o, dict):
        return {k: strip_nulls(v) for k, v in o.items() if v is not None}
    if isinstance(o, list):
        return [strip_nulls(v) for v in o]
    return o


def dsub(parent, key):
    """parent[key] as a dict, created (or replacing a null) when needed."""
    v = parent.get(key)
    if not isinstance(v, dict):
        v = parent[key] = {}
    return v


SAFE = "bcdfghjklmnpqrstvwxz2456789"


def rand_suffix(n=5):
    return "".join(random.choice(SAFE) for _ in range(n))


def hash10(obj):
    h = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).digest()
    return "".join(SAFE[b % len(SAFE)] for b in h[:10])


# --------------------------------------------------------------------------- errors

class ApiError(Exception):
    def __init__(self, code, reason, message, name=None, kind=None, group=None, causes=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.name, self.kind, self.group, self.causes = name, kind, group, causes
        self.empty_details = False

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "reason": self.reason}
        det = {}
        if self.name is not None:
            det["name"] = self.name
        if self.group:
            det["group"] = self.group
        if self.kind is not None:
            det["kind"] = self.kind
        if self.causes:
            det["causes"] = self.causes
        if det or self.empty_details:
            st["details"] = det
        st["code"] = self.code  # the real API's field order: ... reason, details, code
        return st


def not_found(rt, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (rt.qual_plural(), name),
                    name, rt.plural, rt.group)


def already_exists(rt, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qual_plural(), name),
                    name, rt.plural, rt.group)


def conflict(rt, name):
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    'please apply your changes to the latest version and try again'
                    % (rt.qual_plural(), name), name, rt.plural, rt.group)


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


def invalid(rt, name, field, detail):
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s: %s' % (rt.kind, name or "", field, detail),
                    name or "", rt.kind, rt.group,
                    [{"reason": "FieldValueInvalid", "message": detail, "field": field}])


# --------------------------------------------------------------------------- resource types

class RType:
    def __init__(self, group, version, kind, plural, namespaced, short=(), status=False,
                 scale=False, generation=False, categories=(), crd=None, verbs=None, review=False):
        self.group, self.version, self.kind, self.plural = group, version, kind, plural
        self.verbs, self.review = verbs, review  # review: a create-only kind answered, never stored
        self.namespaced, self.short, self.status, self.scale = namespaced, list(short), status, scale
        self.generation, self.categories, self.crd = generation, list(categories), crd
        self.singular = kind.lower()
        self.key = "%s/%s" % (group, plural)

    @property
    def gv(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    def qual_plural(self):
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural


def _builtin_types():
    A = ["all"]
    t = [
        RType("", "v1", "Namespace", "namespaces", False, ["ns"], status=True),
        RType("", "v1", "Secret", "secrets", True),
        RType("", "v1", "ConfigMap", "configmaps", True, ["cm"]),
        RType("", "v1", "Service", "services", True, ["svc"], status=True, categories=A),
        RType("", "v1", "ServiceAccount", "serviceaccounts", True, ["sa"]),
        RType("", "v1", "Pod", "pods", True, ["po"], status=True, categories=A),
        RType("", "v1", "Event", "events", True, ["ev"]),
        RType("", "v1", "Endpoints", "endpoints", True, ["ep"]),
        RType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ["pvc"], status=True),
        RType("", "v1", "ResourceQuota", "resourcequotas", True, ["quota"], status=True),
        RType("", "v1", "LimitRange", "limitranges", True, ["limits"]),
        RType("apps", "v1", "Deployment", "deployments", True, ["deploy"], status=True, scale=True,
              generation=True, categories=A),
        RType("apps", "v1", "ReplicaSet", "replicasets", True, ["rs"], status=True, scale=True,
              generation=True, categories=A),
        RType("apps", "v1", "StatefulSet", "statefulsets", True, ["sts"], status=True, scale=True,
              generation=True, categories=A),
        RType("apps", "v1", "DaemonSet", "daemonsets", True, ["ds"], status=True, generation=True,
              categories=A),
        RType("apps", "v1", "ControllerRevision", "controllerrevisions", True),
        RType("batch", "v1", "Job", "jobs", True, status=True, generation=True, categories=A),
        RType("batch", "v1", "CronJob", "cronjobs", True, ["cj"], status=True, generation=True,
              categories=A),
        RType("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
        RType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
        RType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
        RType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
        RType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
              False, ["crd", "crds"], status=True, generation=True),
        RType("networking.k8s.io", "v1", "Ingress", "ingresses", True, ["ing"], status=True,
              generation=True),
        RType("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ["netpol"],
              generation=True),
        RType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ["pdb"],
              status=True, generation=True),
        RType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True,
              ["hpa"], status=True, generation=True, categories=A),
        RType("coordination.k8s.io", "v1", "Lease", "leases", True),
        RType("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ["sc"]),
        RType("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ["pc"]),
        # access reviews (kubectl auth can-i / whoami): answered by the RBAC engine, never stored
        RType("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
              verbs=["create"], review=True),
        RType("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False,
              verbs=["create"], review=True),
        RType("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", True,
              verbs=["create"], review=True),
        RType("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False,
              verbs=["create"], review=True),
        RType("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False,
              verbs=["create"], review=True),
    ]
    return t


class Registry:
    """The served resource types: the built-in ones and those CRDs define."""

    def __init__(self):
        self.lock = threading.Lock()
        self.builtin = _builtin_types()
        self.custom = []
        self._index()

    def _index(self):
        self.all = self.builtin + self.custom
        self.by_gv_plural = {(t.gv, t.plural): t for t in self.all}
        self.by_key = {t.key: t for t in self.all}
        self.by_gvk = {(t.gv, t.kind): t for t in self.all}

    def lookup(self, gv, plural):
        return self.by_gv_plural.get((gv, plural))

    def groups(self):
        out = collections.OrderedDict()
        for t in self.all:
            if t.group:
                out.setdefault(t.group, [])
                if t.version not in out[t.group]:
                    out[t.group].append(t.version)
        return out

    def set_crds(self, crds):
        custom = []
        for crd in crds:
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            if not names.get("plural") or not names.get("kind") or not spec.get("group"):
                continue
            for v in spec.get("versions") or []:
                if not v.get("served", True):
                    continue
                t = RType(spec["group"], v.get("name", "v1"), names["kind"], names["plural"],
                          spec.get("scope", "Namespaced") == "Namespaced", names.get("shortNames") or [],
                          status="status" in ((v.get("subresources") or {})), generation=True,
                          categories=names.get("categories") or [], crd=crd["metadata"]["name"])
                t.singular = names.get("singular") or names["kind"].lower()
                t.storage_version = [x.get("name") for x in spec.get("versions") or [] if x.get("storage")]
                custom.append(t)
        with self.lock:
            self.custom = custom
            self._index()


# --------------------------------------------------------------------------- selectors

def _split_top(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def parse_label_selector(s):
    reqs = []
    for term in _split_top(s or ""):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", term)
        if m:
            reqs.append((m.group(1), m.group(2), {x.strip() for x in m.group(3).split(",") if x.strip()}))
            continue
        if term.startswith("!"):
            reqs.append((term[1:].strip(), "!exists", None))
            continue
        m = re.match(r"^([^=!<>\s]+)\s*(==|=|!=)\s*(\S*)$", term)
        if m:
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
            continue
        m = re.match(r"^([^=!<>\s]+)\s*([<>])\s*(-?\d+)$", term)
        if m:
            reqs.append((m.group(1), m.group(2), int(m.group(3))))
            continue
        if re.match(r"^[A-Za-z0-9./_-]+$", term):
            reqs.append((term, "exists", None))
            continue
        raise bad_request("unable to parse requirement: %s" % term)
    return reqs


def match_labels(reqs, labels):
    labels = labels or {}
    for key, op, val in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and v != val:
            return False
        if op == "!=" and has and v == val:
            return False
        if op == "in" and (not has or v not in val):
            return False
        if op == "notin" and has and v in val:
            return False
        if op == "exists" and not has:
            return False
        if op == "!exists" and has:
            return False
        if op in "<>":
            try:
                iv = int(v)
            except (TypeError, ValueError):
                return False
            if (op == "<" and not iv < val) or (op == ">" and not iv > val):
                return False
    return True


def selector_from_label_selector(sel):
    """A metav1.LabelSelector (matchLabels/matchExpressions) as requirements."""
    reqs = []
    for k, v in ((sel or {}).get("matchLabels") or {}).items():
        reqs.append((k, "=", v))
    for e in (sel or {}).get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(e.get("operator"))
        if op:
            reqs.append((e.get("key"), op, set(e.get("values") or [])))
    return reqs


def parse_field_selector(s):
    reqs = []
    for term in (s or "").split(","):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise bad_request("invalid field selector: %s" % term)
        reqs.append((m.group(1).strip(), m.group(2) == "!=", m.group(3).strip()))
    return reqs


def field_value(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def match_fields(reqs, obj):
    for path, neg, val in reqs:
        if (field_value(obj, path) == val) == neg:
            return False
    return True


# --------------------------------------------------------------------------- patches

def json_merge_patch(orig, patch):
    if not isinstance(patch, dict):
        return deepcopy(patch)
    result = dict(orig) if isinstance(orig, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = json_merge_patch(result.get(k), v)
    return result


def _ptr(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request("invalid JSON pointer %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    doc = deepcopy(doc)
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list")

    def parent(path):
        parts = _ptr(path)
        if not parts:
            raise bad_request("cannot operate on the root")
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path):
        cur = doc
        for p in _ptr(path):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    def add(path, value):
        c, k = parent(path)
        if isinstance(c, list):
            c.insert(len(c) if k == "-" else int(k), value)
        else:
            c[k] = value

    def remove(path):
        c, k = parent(path)
        if isinstance(c, list):
            return c.pop(int(k))
        return c.pop(k)

    try:
        for op in ops:
            o, path = op.get("op"), op.get("path", "")
            if o == "add":
                add(path, deepcopy(op.get("value")))
            elif o == "remove":
                remove(path)
            elif o == "replace":
                c, k = parent(path)
                if isinstance(c, list):
                    c[int(k)] = deepcopy(op.get("value"))
                else:
                    if k not in c:
                        raise KeyError(k)
                    c[k] = deepcopy(op.get("value"))
            elif o == "move":
                add(path, remove(op["from"]))
            elif o == "copy":
                add(path, deepcopy(get(op["from"])))
            elif o == "test":
                if get(path) != op.get("value"):
                    raise bad_request("the test operation at %s failed" % path)
            else:
                raise bad_request("unknown JSON patch op %r" % o)
    except ApiError:
        raise
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request: "
                       "json patch: %s" % e)
    return doc


# Strategic merge patch: merge keys of the built-in types' lists (by field name; the
# few ambiguous names are resolved from the elements).
SMP_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "hostAliases": "ip", "ownerReferences": "uid",
    "conditions": "type", "secrets": "name", "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey", "readinessGates": "conditionType",
    "podIPs": "ip", "hostIPs": "ip", "containerStatuses": "name", "initContainerStatuses": "name",
}
SMP_PRIMITIVE_MERGE = {"finalizers"}


def _smp_key(field, *lists):
    if field == "ports":
        for lst in lists:
            for e in lst or []:
                if isinstance(e, dict) and "containerPort" in e:
                    return "containerPort"
        return "port"
    return SMP_MERGE_KEYS.get(field)


def _smp_strip(v):
    """A patch value used as-is (no original): directives dropped, nulls dropped."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k.startswith("$") or x is None:
                continue
            out[k] = _smp_strip(x)
        return out
    if isinstance(v, list):
        return [_smp_strip(x) for x in v if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    return v


def smp_apply(orig, patch):
    if not isinstance(patch, dict):
        return deepcopy(patch)
    if not isinstance(orig, dict):
        orig = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return _smp_strip({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    result = dict(orig)
    orders, deletes = {}, {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k[len("$setElementOrder/"):]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            deletes[k[len("$deleteFromPrimitiveList/"):]] = v
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            merged = smp_apply(result.get(k), v)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            result[k] = _smp_list(k, result.get(k), v)
        else:
            result[k] = v
    for f, vals in deletes.items():
        if isinstance(result.get(f), list):
            result[f] = [x for x in result[f] if x not in (vals or [])]
    for f, order in orders.items():
        if isinstance(result.get(f), list):
            result[f] = _smp_order(f, result[f], order or [])
    if "$retainKeys" in patch:
        keep = set(patch.get("$retainKeys") or [])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(field, orig, patch):
    orig = orig if isinstance(orig, list) else []
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [_smp_strip(e) for e in patch if not (isinstance(e, dict) and e.get("$patch") == "replace")]
    key = _smp_key(field, patch, orig)
    if key is None or not all(isinstance(e, dict) for e in patch):
        if field in SMP_PRIMITIVE_MERGE:
            return list(orig) + [x for x in patch if x not in orig]
        return _smp_strip(patch)
    out = list(orig)
    for e in patch:
        kv = e.get(key)
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == kv), None)
        if e.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_smp_strip(e))
        else:
            out[idx] = smp_apply(out[idx], e)
    return out


def _smp_order(field, lst, order):
    key = _smp_key(field, lst, order)
    if key is None or not all(isinstance(x, dict) for x in order):
        ordered = [x for x in order if x in lst]
        return ordered + [x for x in lst if x not in ordered]
    ordered, used = [], set()
    for o in order:
        for i, e in enumerate(lst):
            if i not in used and isinstance(e, dict) and e.get(key) == o.get(key):
                ordered.append(e)
                used.add(i)
                break
    return ordered + [e for i, e in enumerate(lst) if i not in used]


# --------------------------------------------------------------------------- protobuf

def _varint(b, i):
    shift = result = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return result, i
        shift += 7


def pb_fields(b):
    i, out = 0, []
    while i < len(b):
        key, i = _varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            v = bytes(b[i:i + n])
            if len(v) != n:
                raise ValueError("truncated field")
            i += n
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.append((f, v))
    return out


def _s(v):
    return v.decode("utf-8")


def _pb_map(entries, val=_s):
    out = {}
    for e in entries:
        k, v = "", b""
        for f, x in pb_fields(e):
            if f == 1:
                k = _s(x)
            elif f == 2:
                v = x
        out[k] = val(v)
    return out


def _pb_objectmeta(b):
    m, labels, ann, owners, fin = {}, [], [], [], []
    for f, v in pb_fields(b):
        if f in (1, 2, 3, 5, 6) and v:
            m[{1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}[f]] = _s(v)
        elif f == 7:
            m["generation"] = v
        elif f == 11:
            labels.append(v)
        elif f == 12:
            ann.append(v)
        elif f == 13:
            owners.append(v)
        elif f == 14:
            fin.append(_s(v))
    if labels:
        m["labels"] = _pb_map(labels)
    if ann:
        m["annotations"] = _pb_map(ann)
    if fin:
        m["finalizers"] = fin
    if owners:
        refs = []
        for o in owners:
            r = {}
            for f, v in pb_fields(o):
                if f in (1, 3, 4, 5):
                    r[{1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}[f]] = _s(v)
                elif f == 6:
                    r["controller"] = bool(v)
                elif f == 7:
                    r["blockOwnerDeletion"] = bool(v)
            refs.append(r)
        m["ownerReferences"] = refs
    return m


def _b64(v):
    return base64.b64encode(v).decode()


def decode_protobuf(body):
    """The k8s protobuf envelope (magic k8s\\0 + runtime.Unknown) of a Secret,
    ConfigMap or DeleteOptions, as the equivalent JSON object."""
    if body[:4] != b"k8s\x00":
        raise bad_request("protobuf body without the k8s envelope magic")
    api_version = kind = ""
    raw = b""
    for f, v in pb_fields(body[4:]):
        if f == 1:
            for g, x in pb_fields(v):
                if g == 1:
                    api_version = _s(x)
                elif g == 2:
                    kind = _s(x)
        elif f == 2:
            raw = v
    obj = {"apiVersion": api_version, "kind": kind}
    fields = pb_fields(raw)
    if kind == "Secret":
        data, sdata = [], []
        for f, v in fields:
            if f == 1:
                obj["metadata"] = _pb_objectmeta(v)
            elif f == 2:
                data.append(v)
            elif f == 3:
                obj["type"] = _s(v)
            elif f == 4:
                sdata.append(v)
            elif f == 5:
                obj["immutable"] = bool(v)
        if data:
            obj["data"] = _pb_map(data, _b64)
        if sdata:
            obj["stringData"] = _pb_map(sdata)
    elif kind == "ConfigMap":
        data, bdata = [], []
        for f, v in fields:
            if f == 1:
                obj["metadata"] = _pb_objectmeta(v)
            elif f == 2:
                data.append(v)
            elif f == 3:
                bdata.append(v)
            elif f == 4:
                obj["immutable"] = bool(v)
        if data:
            obj["data"] = _pb_map(data)
        if bdata:
            obj["binaryData"] = _pb_map(bdata, _b64)
    elif kind == "DeleteOptions":
        for f, v in fields:
            if f == 1:
                obj["gracePeriodSeconds"] = v
            elif f == 2:
                pre = {}
                for g, x in pb_fields(v):
                    pre[{1: "uid", 2: "resourceVersion"}.get(g, "x")] = _s(x)
                obj["preconditions"] = pre
            elif f == 3:
                obj["orphanDependents"] = bool(v)
            elif f == 4:
                obj["propagationPolicy"] = _s(v)
            elif f == 5:
                obj.setdefault("dryRun", []).append(_s(v))
    else:
        raise ApiError(415, "UnsupportedMediaType",
                       "the emulator decodes protobuf only for Secret, ConfigMap and DeleteOptions, not %r" % kind)
    return obj


# --------------------------------------------------------------------------- authentication / authorization

RBAC_GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SA_PREFIX = "system:serviceaccount:"


def sa_split(username):
    """(namespace, name) of a service account's username system:serviceaccount:NS:NAME, else None."""
    if not username.startswith(SA_PREFIX):
        return None
    rest = username[len(SA_PREFIX):].split(":")
    if len(rest) != 2 or not rest[0] or not rest[1]:
        return None
    return rest[0], rest[1]


def sa_groups(ns):
    return ["system:serviceaccounts", "system:serviceaccounts:" + ns]


def _bootstrap_rbac():
    """The bootstrap ClusterRoles/ClusterRoleBindings of a real cluster that this emulator models
    (created at start when missing; an admin may change or delete them afterwards)."""
    lbl = {"kubernetes.io/bootstrapping": "rbac-defaults"}
    ann = {"rbac.authorization.kubernetes.io/autoupdate": "true"}

    def cr(name, rules):
        return {"metadata": {"name": name, "labels": lbl, "annotations": ann}, "rules": rules}

    def crb(name, role, groups):
        return {"metadata": {"name": name, "labels": lbl, "annotations": ann},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups]}
    roles = [
        cr("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                             {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        cr("system:discovery", [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                                     "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                                 "verbs": ["get"]}]),
        cr("system:public-info-viewer", [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version",
                                                              "/version/"], "verbs": ["get"]}]),
        cr("system:basic-user", [{"apiGroups": ["authorization.k8s.io"],
                                  "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                                  "verbs": ["create"]},
                                 {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
                                  "verbs": ["create"]}]),
    ]
    bindings = [
        crb("cluster-admin", "cluster-admin", [MASTERS]),
        crb("system:discovery", "system:discovery", [AUTHENTICATED]),
        crb("system:public-info-viewer", "system:public-info-viewer", [AUTHENTICATED, UNAUTHENTICATED]),
        crb("system:basic-user", "system:basic-user", [AUTHENTICATED]),
    ]
    return roles, bindings


def _verb_ok(rule, verb):
    verbs = rule.get("verbs") or []
    return "*" in verbs or verb in verbs


def rule_allows(rule, a):
    """rbac/v1 RuleAllows: a is a dict verb/group/resource/sub/name (resource request) or verb/path."""
    if not _verb_ok(rule, a["verb"]):
        return False
    if a.get("path") is not None:
        for u in rule.get("nonResourceURLs") or []:
            if u == "*" or u == a["path"] or (u.endswith("*") and a["path"].startswith(u[:-1])):
                return True
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and a["group"] not in groups:
        return False
    sub = a.get("sub") or ""
    combined = a["resource"] + ("/" + sub if sub else "")
    for r in rule.get("resources") or []:
        if r == "*" or r == combined or (sub and r == "*/" + sub):
            break
    else:
        return False
    names = rule.get("resourceNames") or []
    return not names or a.get("name", "") in names


def _breakdown(rule):
    """One atom per group x resource x verb (x resourceName), or per URL x verb (rbac BreakdownRule)."""
    out = []
    for g in rule.get("apiGroups") or []:
        for r in rule.get("resources") or []:
            for v in rule.get("verbs") or []:
                if rule.get("resourceNames"):
                    for n in rule["resourceNames"]:
                        out.append({"apiGroups": [g], "resources": [r], "resourceNames": [n], "verbs": [v]})
                else:
                    out.append({"apiGroups": [g], "resources": [r], "verbs": [v]})
    for u in rule.get("nonResourceURLs") or []:
        for v in rule.get("verbs") or []:
            out.append({"nonResourceURLs": [u], "verbs": [v]})
    return out


def _rule_covers(owner, atom):
    """rbac validation ruleCovers(owner, servant) for an atom of a broken-down rule."""
    ov = owner.get("verbs") or []
    if "*" not in ov and atom["verbs"][0] not in ov:
        return False
    if atom.get("nonResourceURLs"):
        u = atom["nonResourceURLs"][0]
        return any(o == "*" or o == u or (o.endswith("*") and u.startswith(o[:-1]))
                   for o in owner.get("nonResourceURLs") or [])
    og = owner.get("apiGroups") or []
    if "*" not in og and atom["apiGroups"][0] not in og:
        return False
    orr = owner.get("resources") or []
    r = atom["resources"][0]
    if "*" not in orr and r not in orr:
        if "/" not in r or "*/" + r.split("/", 1)[1] not in orr:
            return False
    on = owner.get("resourceNames") or []
    if on:
        an = atom.get("resourceNames") or []
        if not an or an[0] not in on:
            return False
    return True


def _q(v):
    return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')


def _qlist(vs):  # Go's %q of a []string
    return "[" + " ".join(_q(v) for v in vs) + "]"


def compact_string(rule):
    """rbacv1helpers.CompactString: {APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}."""
    parts = []
    for label, key in (("APIGroups", "apiGroups"), ("Resources", "resources"),
                       ("NonResourceURLs", "nonResourceURLs"), ("ResourceNames", "resourceNames"),
                       ("Verbs", "verbs")):
        if rule.get(key):
            parts.append("%s:%s" % (label, _qlist(rule[key])))
    return "{" + ", ".join(parts) + "}"


def _compact(atoms):
    """CompactRules: atoms of one group+resource without resourceNames merged into one rule."""
    out, simple = [], collections.OrderedDict()
    for a in atoms:
        if a.get("apiGroups") and not a.get("resourceNames"):
            k = (a["apiGroups"][0], a["resources"][0])
            if k in simple:
                if a["verbs"][0] not in simple[k]["verbs"]:
                    simple[k]["verbs"].append(a["verbs"][0])
                continue
            simple[k] = {"apiGroups": [k[0]], "resources": [k[1]], "verbs": list(a["verbs"])}
            out.append(simple[k])
        else:
            out.append(a)
    return out


class Rbac:
    """RBAC as the real authorizer evaluates it: system:masters is allowed everything (the
    privileged-group authorizer); otherwise ClusterRoleBindings (in every namespace and at
    the cluster scope) and the RoleBindings of the request's namespace grant the rules of the
    Role/ClusterRole they reference to their User/Group/ServiceAccount subjects."""

    def __init__(self, store):
        self.store = store
        self.gen = 1
        self.built = 0
        self.idx = None
        store.listeners.append(self._on_event)

    def _on_event(self, etype, rt, obj):
        if rt.group == RBAC_GROUP:
            self.gen += 1

    def _index(self):
        st = self.store
        with st.lock:
            if self.built == self.gen and self.idx is not None:
                return self.idx
            idx = {"crbs": [], "rbs": {}, "roles": {}, "croles": {}}
            for (k, n, name), o in st.objs.items():
                if k == RBAC_GROUP + "/clusterrolebindings":
                    idx["crbs"].append(o)
                elif k == RBAC_GROUP + "/rolebindings":
                    idx["rbs"].setdefault(n, []).append(o)
                elif k == RBAC_GROUP + "/roles":
                    idx["roles"][(n, name)] = o
                elif k == RBAC_GROUP + "/clusterroles":
                    idx["croles"][name] = o
            idx["crbs"].sort(key=lambda o: o["metadata"]["name"])
            for v in idx["rbs"].values():
                v.sort(key=lambda o: o["metadata"]["name"])
            self.idx, self.built = idx, self.gen
            return idx

    @staticmethod
    def _subject(binding, user, groups, binding_ns):
        for s in binding.get("subjects") or []:
            kind, name = s.get("kind"), s.get("name")
            if kind == "User" and name == user:
                return 'User "%s"' % name
            if kind == "Group" and name in groups:
                return 'Group "%s"' % name
            if kind == "ServiceAccount":
                ns = s.get("namespace") or binding_ns
                if ns and user == "%s%s:%s" % (SA_PREFIX, ns, name):
                    return 'ServiceAccount "%s/%s"' % (name, ns)
        return None

    def visit(self, user, groups, namespace):
        """[(source description, rules)], [resolution errors] for user/groups in namespace ("" = cluster)."""
        idx = self._index()
        out, errs = [], []
        for b in idx["crbs"]:
            subj = self._subject(b, user, groups, "")
            if subj is None:
                continue
            ref = b.get("roleRef") or {}
            role = idx["croles"].get(ref.get("name")) if ref.get("kind") == "ClusterRole" else None
            if role is None:
                errs.append('clusterrole.rbac.authorization.k8s.io "%s" not found' % ref.get("name"))
                continue
            out.append(('ClusterRoleBinding "%s" of ClusterRole "%s" to %s'
                        % (b["metadata"]["name"], ref.get("name"), subj), role.get("rules") or []))
        if namespace:
            for b in idx["rbs"].get(namespace, []):
                subj = self._subject(b, user, groups, namespace)
                if subj is None:
                    continue
                ref = b.get("roleRef") or {}
                if ref.get("kind") == "Role":
                    role = idx["roles"].get((namespace, ref.get("name")))
                    miss = 'role.rbac.authorization.k8s.io "%s" not found' % ref.get("name")
                else:
                    role = idx["croles"].get(ref.get("name"))
                    miss = 'clusterrole.rbac.authorization.k8s.io "%s" not found' % ref.get("name")
                if role is None:
                    errs.append(miss)
                    continue
                out.append(('RoleBinding "%s/%s" of %s "%s" to %s'
                            % (b["metadata"]["name"], namespace, ref.get("kind"), ref.get("name"), subj),
                            role.get("rules") or []))
        return out, errs

    def rules_for(self, user, groups, namespace):
        sources, errs = self.visit(user, groups, namespace)
        return [r for _, rules in sources for r in rules], errs

    def authorize(self, user, groups, a):
        if MASTERS in groups:
            return True, ""
        ns = a.get("namespace", "") if a.get("path") is None else ""
        sources, errs = self.visit(user, groups, ns)
        for desc, rules in sources:
            for r in rules:
                if rule_allows(r, a):
                    return True, "RBAC: allowed by " + desc
        return False, ("RBAC: [%s]" % ", ".join(errs) if len(errs) > 1 else "RBAC: " + errs[0]) if errs else ""

    def confirm_no_escalation(self, user, groups, namespace, rules):
        """None, or the real API's message when rules grant what user/groups do not hold in namespace."""
        owner, errs = self.rules_for(user, groups, namespace)
        missing = []
        for rule in rules:
            for atom in _breakdown(rule):
                if not any(_rule_covers(o, atom) for o in owner):
                    missing.append(atom)
        if not missing:
            return None
        msg = "user %s (groups=%s) is attempting to grant RBAC permissions not currently held:\n%s" % (
            _q(user), _qlist(groups), "\n".join(sorted({compact_string(r) for r in _compact(missing)})))
        if errs:
            msg += "; resolution errors: [%s]" % ", ".join(errs)
        return msg


_rbac = None  # the Rbac engine of the running server (main() installs it)


def authorize(user, groups, verb, resource, namespace, name, api_group="", path=None):
    """The single authorization decision of every request: (allowed, reason).

    user/groups are the authenticated (or impersonated) identity; verb is the Kubernetes
    verb (get list watch create update patch delete deletecollection, impersonate, bind,
    escalate) or, for a non-resource request (path set), the lower-case HTTP method;
    resource may carry a subresource ("deployments/status"). Evaluated by the Rbac engine
    of the running server; without one (the module imported, no server) everything is allowed."""
    if _rbac is None:
        return True, ""
    if path is not None:
        return _rbac.authorize(user, groups, {"verb": verb, "path": path})
    res, _, sub = resource.partition("/")
    return _rbac.authorize(user, groups, {"verb": verb, "group": api_group, "resource": res, "sub": sub,
                                          "namespace": namespace or "", "name": name or ""})


def forbidden(user, verb, resource, api_group, namespace, name, reason=""):
    where = ' in the namespace "%s"' % namespace if namespace else " at the cluster scope"
    base = resource.split("/")[0]
    subject = '%s "%s"' % (base if not api_group else base + "." + api_group, name) if name else \
        (base if not api_group else base + "." + api_group)
    msg = '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s"%s' % (
        subject, user, verb, resource, api_group, where)
    if reason:
        msg += ": " + reason
    return ApiError(403, "Forbidden", msg, name or None, base, api_group)


def forbidden_path(user, verb, path, reason=""):
    msg = 'forbidden: User "%s" cannot %s path "%s"' % (user, verb, path)
    if reason:
        msg += ": " + reason
    e = ApiError(403, "Forbidden", msg)
    e.empty_details = True  # the real API answers "details":{} here
    return e


def unauthorized():
    return ApiError(401, "Unauthorized", "Unauthorized")


# --------------------------------------------------------------------------- store

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


# --------------------------------------------------------------------------- defaults

def _default_pod_spec(spec):
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        img = c.get("image") or ""
        tag = img.rsplit("/", 1)[-1]
        c.setdefault("imagePullPolicy", "Always" if (":" not in tag or tag.endswith(":latest")) and "@" not in tag
                     else "IfNotPresent")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def _alloc_ip(store):
    store.ip_counter += 1
    n = store.ip_counter
    return "10.96.%d.%d" % ((n // 250) % 256, n % 250 + 1)


def defaults_on_create(store, rt, obj):
    k = rt.kind
    spec = obj.get("spec")
    if k == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif k == "Secret":
        obj.setdefault("type", "Opaque")
        sd = obj.pop("stringData", None)
        if sd:
            data = obj.setdefault("data", {})
            for kk, v in sd.items():
                data[kk] = base64.b64encode(str(v).encode()).decode()
    elif k == "Service":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if not spec.get("clusterIP"):
                spec["clusterIP"] = _alloc_ip(store)
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
            if spec["type"] in ("NodePort", "LoadBalancer") and not p.get("nodePort"):
                p["nodePort"] = 30000 + random.randrange(2767)
        st = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        st = {"loadBalancer": {}}
        if spec["type"] == "LoadBalancer":
            spec.setdefault("externalTrafficPolicy", "Cluster")
            st["loadBalancer"] = {"ingress": [{"ip": "172.18.%d.%d" % (random.randrange(256),
                                                                      random.randrange(1, 255)),
                                               "ipMode": "VIP"}]}
        obj["status"] = st
    elif k == "PersistentVolumeClaim":
        obj["status"] = {"phase": "Bound", "accessModes": (spec or {}).get("accessModes", []),
                         "capacity": ((spec or {}).get("resources") or {}).get("requests", {})}
    elif k in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        spec = obj.setdefault("spec", {})
        if k != "DaemonSet":
            spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        if k == "Deployment":
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        elif k == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
            spec.setdefault("persistentVolumeClaimRetentionPolicy",
                            {"whenDeleted": "Retain", "whenScaled": "Retain"})
        elif k == "DaemonSet":
            spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                               "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        if k == "ReplicaSet":
            spec.pop("revisionHistoryLimit", None)
        _default_pod_spec((spec.get("template") or {}).get("spec"))
        obj["status"] = {}
    elif k == "Job":
        spec = obj.setdefault("spec", {})
        uid = obj["metadata"]["uid"]
        name = obj["metadata"]["name"]
        if spec.get("completions") is None:
            spec["completions"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        spec.setdefault("manualSelector", False)
        if not spec.get("selector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        tm = dsub(dsub(spec, "template"), "metadata")
        lab = dsub(tm, "labels")
        lab.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                    "controller-uid": uid, "job-name": name})
        _default_pod_spec(spec["template"].get("spec"))
        obj["status"] = {}
    elif k == "CronJob":
        spec = obj.setdefault("spec", {})
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        obj["status"] = {}
    elif k == "Pod":
        _default_pod_spec(spec)
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort",
                         "conditions": [{"type": "PodScheduled", "status": "True",
                                         "lastTransitionTime": now_ts()}]}
        if isinstance(spec, dict):
            spec.setdefault("nodeName", "emulated-node")
    elif k == "CustomResourceDefinition":
        obj["status"] = {"acceptedNames": deepcopy((spec or {}).get("names") or {}),
                         "storedVersions": [v.get("name") for v in (spec or {}).get("versions") or []
                                            if v.get("storage")],
                         "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                                         "lastTransitionTime": now_ts(), "message": "no conflicts found"},
                                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                                         "lastTransitionTime": now_ts(),
                                         "message": "the initial names have been accepted"}]}


def defaults_on_update(store, rt, old, obj):
    k = rt.kind
    if k == "Service":
        spec = obj.setdefault("spec", {})
        ospec = old.get("spec") or {}
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if not spec.get("clusterIP"):
                spec["clusterIP"] = ospec.get("clusterIP") or _alloc_ip(store)
            elif ospec.get("clusterIP") and spec["clusterIP"] != ospec["clusterIP"]:
                raise invalid(rt, old["metadata"]["name"], "spec.clusterIPs[0]",
                              "Invalid value: []string{\"%s\"}: may not change once set" % spec["clusterIP"])
            spec["clusterIPs"] = [spec["clusterIP"]]
            for f in ("ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
                if f in ospec:
                    spec.setdefault(f, ospec[f])
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
    elif k == "Secret":
        obj.setdefault("type", old.get("type", "Opaque"))
        sd = obj.pop("stringData", None)
        if sd:
            data = obj.setdefault("data", {})
            for kk, v in sd.items():
                data[kk] = base64.b64encode(str(v).encode()).decode()
    elif k == "Namespace":
        obj.setdefault("spec", old.get("spec", {}))
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif k in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"):
        spec = obj.setdefault("spec", {})
        if k in ("Deployment", "ReplicaSet", "StatefulSet"):
            spec.setdefault("replicas", 1)
        if k == "Job":
            ospec = old.get("spec") or {}
            for f in ("selector", "completions", "parallelism", "backoffLimit", "completionMode",
                      "suspend", "podReplacementPolicy", "manualSelector"):
                if spec.get(f) is None and f in ospec:
                    spec[f] = ospec[f]
            tm = dsub(dsub(spec, "template"), "metadata")
            dsub(tm, "labels").update({
                x: y for x, y in (((ospec.get("template") or {}).get("metadata") or {}).get("labels") or {}).items()
                if x in ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name",
                         "controller-uid", "job-name")})
        _default_pod_spec((spec.get("template") or {}).get("spec"))
    elif k == "Pod":
        _default_pod_spec(obj.get("spec"))
        if isinstance(obj.get("spec"), dict):
            obj["spec"].setdefault("nodeName", (old.get("spec") or {}).get("nodeName", "emulated-node"))


# --------------------------------------------------------------------------- controllers

class Controllers:
    """Emulated kube-controller-manager and kubelet, driven by store events and timers."""

    WATCHED = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "Pod"}

    def __init__(self, store, ready_delay):
        self.store = store
        self.reg = store.reg
        self.delay = ready_delay
        self.cv = threading.Condition()
        self.queue = collections.OrderedDict()
        self.timers = []
        self.ready_at = {}
        self.seq = 0
        store.listeners.append(self.on_event)
        for (k, ns, name), o in list(store.objs.items()):
            if o.get("kind") in self.WATCHED:
                self.enqueue(o.get("kind"), ns, name)

    def on_event(self, etype, rt, obj):
        if rt.kind not in self.WATCHED:
            return
        m = obj["metadata"]
        if etype != "DELETED":
            self.enqueue(rt.kind, m.get("namespace", ""), m["name"])
        ref = controller_of(obj)
        if ref:
            self.enqueue(ref.get("kind"), m.get("namespace", ""), ref.get("name"))

    def enqueue(self, kind, ns, name, after=0.0):
        with self.cv:
            if after > 0:
                self.seq += 1
                heapq.heappush(self.timers, (time.monotonic() + after, self.seq, (kind, ns, name)))
            else:
                self.queue[(kind, ns, name)] = True
            self.cv.notify()

    def run(self):
        while True:
            with self.cv:
                while True:
                    nowm = time.monotonic()
                    while self.timers and self.timers[0][0] <= nowm:
                        self.queue[heapq.heappop(self.timers)[2]] = True
                    if self.queue:
                        break
                    self.cv.wait(self.timers[0][0] - nowm if self.timers else 5.0)
                item, _ = self.queue.popitem(last=False)
            try:
                self.reconcile(*item)
            except ApiError as e:
                log("debug", "reconcile %s: %s" % (item, e.message))
            except Exception as e:  # a controller bug must not kill the controller
                log("error", "reconcile %s failed: %r" % (item, e))

    def rt(self, kind):
        return self.reg.by_gvk[{"Deployment": ("apps/v1", "Deployment"), "ReplicaSet": ("apps/v1", "ReplicaSet"),
                                "StatefulSet": ("apps/v1", "StatefulSet"), "DaemonSet": ("apps/v1", "DaemonSet"),
                                "Job": ("batch/v1", "Job"), "Pod": ("v1", "Pod")}[kind]]

    def reconcile(self, kind, ns, name):
        if kind not in self.WATCHED:
            return
        rt = self.rt(kind)
        with self.store.lock:
            obj = self.store.get(rt, ns, name)
            if obj is None:
                return
            getattr(self, "reconcile_" + kind.lower())(rt, obj)

    # -- helpers
    def _set_status(self, rt, obj, status):
        if obj.get("status") == status:
            return obj
        new = dict(obj)
        new["status"] = status
        new["metadata"] = dict(obj["metadata"])
        return self.store._put(rt, new, "MODIFIED")

    def _pods(self, owner):
        return self.store.owned_by(owner["metadata"]["uid"], self.rt("Pod"), owner["metadata"].get("namespace", ""))

    def _new_pod(self, owner, owner_rt, name, template, extra_labels=None):
        tm = deepcopy((template or {}).get("metadata") or {})
        labels = tm.get("labels") or {}
        labels.update(extra_labels or {})
        meta = {"name": name, "namespace": owner["metadata"]["namespace"], "labels": labels,
                "ownerReferences": [owner_ref(owner, owner_rt)]}
        if tm.get("annotations"):
            meta["annotations"] = tm["annotations"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": deepcopy((template or {}).get("spec") or {})}
        pod = self.store.create(self.rt("Pod"), meta["namespace"], pod)
        self.ready_at[pod["metadata"]["uid"]] = time.monotonic() + self.delay
        self.enqueue("Pod", meta["namespace"], name, after=self.delay + 0.001)
        return pod

    def _delete(self, rt, obj):
        try:
            self.store.delete(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], "Background")
        except ApiError:
            pass

    @staticmethod
    def pod_ready(p):
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (p.get("status") or {}).get("conditions") or [])

    @staticmethod
    def _conds(old_conds, wanted):
        """wanted: [(type, status, reason, message)]; keeps timestamps of unchanged ones."""
        old = {c.get("type"): c for c in old_conds or []}
        out, ts = [], now_ts()
        for t, s, r, msg in wanted:
            o = old.get(t)
            if o and o.get("status") == s and o.get("reason") == r:
                out.append(o)
                continue
            out.append({"type": t, "status": s, "reason": r, "message": msg,
                        "lastUpdateTime": ts, "lastTransitionTime": ts})
        return out

    # -- kubelet
    def reconcile_pod(self, rt, pod):
        st = pod.get("status") or {}
        if st.get("phase") != "Pending":
            return
        uid = pod["metadata"]["uid"]
        due = self.ready_at.setdefault(uid, time.monotonic() + self.delay)
        left = due - time.monotonic()
        if left > 0:
            self.enqueue("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], after=left + 0.001)
            return
        self.ready_at.pop(uid, None)
        ann = pod["metadata"].get("annotations") or {}
        spec = pod.get("spec") or {}
        owner = controller_of(pod) or {}
        ts = now_ts()
        run_to_completion = owner.get("kind") == "Job" or (
            not owner and spec.get("restartPolicy") in ("Never", "OnFailure"))
        never = ann.get(EMU_READY) == "never"
        fail = ann.get(EMU_JOB) == "fail"
        cstat = []
        for c in spec.get("containers") or []:
            if run_to_completion:
                state = {"terminated": {"exitCode": 1 if fail else 0, "reason": "Error" if fail else "Completed",
                                        "startedAt": ts, "finishedAt": ts}}
            else:
                state = {"running": {"startedAt": ts}}
            cstat.append({"name": c.get("name"), "image": c.get("image"), "imageID": "", "containerID":
                          "emulated://" + uid[:12], "ready": not never and not run_to_completion,
                          "started": not run_to_completion, "restartCount": 0, "state": state})
        if run_to_completion:
            phase = "Failed" if fail else "Succeeded"
            ready = "False"
            reason = "PodCompleted"
        else:
            phase = "Running"
            ready = "False" if never else "True"
            reason = "ContainersNotReady" if never else ""
        conds = [{"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": ts},
                 {"type": "Initialized", "status": "True", "lastTransitionTime": ts},
                 {"type": "Ready", "status": ready, "lastTransitionTime": ts},
                 {"type": "ContainersReady", "status": ready, "lastTransitionTime": ts},
                 {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts}]
        if reason:
            for c in conds[2:4]:
                c["reason"] = reason
        n = int(uid.replace("-", "")[:4], 16)
        self._set_status(rt, pod, {"phase": phase, "conditions": conds, "hostIP": "172.18.0.2",
                                   "hostIPs": [{"ip": "172.18.0.2"}],
                                   "podIP": "10.244.%d.%d" % (n // 250 % 256, n % 250 + 1),
                                   "podIPs": [{"ip": "10.244.%d.%d" % (n // 250 % 256, n % 250 + 1)}],
                                   "startTime": ts, "qosClass": st.get("qosClass", "BestEffort"),
                                   "containerStatuses": cstat})

    # -- ReplicaSet
    def reconcile_replicaset(self, rt, rs):
        want = (rs.get("spec") or {}).get("replicas", 1)
        pods = [p for p in self._pods(rs) if (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
        hashl = ((rs["metadata"].get("labels") or {}).get("pod-template-hash"))
        while len(pods) < want:
            pods.append(self._new_pod(rs, rt, "%s-%s" % (rs["metadata"]["name"], rand_suffix()),
                                      rs["spec"].get("template"),
                                      {"pod-template-hash": hashl} if hashl else None))
        if len(pods) > want:
            pods.sort(key=lambda p: (self.pod_ready(p), p["metadata"]["creationTimestamp"]))
            for p in pods[:len(pods) - want]:
                self._delete(self.rt("Pod"), p)
            pods = pods[len(pods) - want:]
        ready = sum(1 for p in pods if self.pod_ready(p))
        tl = ((rs["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        st = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
              "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)}
        if not tl:
            st["fullyLabeledReplicas"] = len(pods)
        for k in ("readyReplicas", "availableReplicas", "fullyLabeledReplicas"):
            if st[k] == 0:
                del st[k]
        self._set_status(rt, rs, st)

    # -- Deployment
    def reconcile_deployment(self, rt, d):
        rs_rt = self.rt("ReplicaSet")
        spec = d.get("spec") or {}
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        tmpl = spec.get("template") or {}
        h = hash10(tmpl)
        want = spec.get("replicas", 1)
        owned = [r for r in self.store.owned_by(d["metadata"]["uid"], rs_rt, ns)
                 if (controller_of(r) or {}).get("uid") == d["metadata"]["uid"]]

        def strip_hash(t):
            t = deepcopy(t or {})
            (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
            if t.get("metadata") is not None and t["metadata"].get("labels") == {}:
                t["metadata"].pop("labels")
            return t

        want_t = strip_hash(tmpl)
        new = next((r for r in owned if strip_hash(r["spec"].get("template")) == want_t), None)
        revs = [int((r["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0") or 0)
                for r in owned]
        maxrev = max(revs) if revs else 0
        if spec.get("paused"):
            return
        if new is None:
            t = deepcopy(tmpl)
            dsub(dsub(t, "metadata"), "labels")["pod-template-hash"] = h
            sel = deepcopy(spec.get("selector") or {})
            dsub(sel, "matchLabels")["pod-template-hash"] = h
            labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
            labels["pod-template-hash"] = h
            rsname = "%s-%s" % (name, h)
            if self.store.get(rs_rt, ns, rsname) is not None:
                rsname = "%s-%s" % (name, rand_suffix(10))
            new = self.store.create(rs_rt, ns, {
                "metadata": {"name": rsname, "namespace": ns, "labels": labels,
                             "annotations": {"deployment.kubernetes.io/revision": str(maxrev + 1),
                                             "deployment.kubernetes.io/desired-replicas": str(want),
                                             "deployment.kubernetes.io/max-replicas": str(want)},
                             "ownerReferences": [owner_ref(d, rt)]},
                "spec": {"replicas": want, "minReadySeconds": spec.get("minReadySeconds", 0),
                         "selector": sel, "template": t}})
            owned.append(new)
        else:
            ann = dict(new["metadata"].get("annotations") or {})
            rev = int(ann.get("deployment.kubernetes.io/revision", "0") or 0)
            if new["spec"].get("replicas") != want or rev < maxrev:
                n2 = deepcopy(new)
                n2["spec"]["replicas"] = want
                if rev < maxrev:
                    n2["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = \
                        str(maxrev + 1)
                new = self.store.update(rs_rt, ns, new["metadata"]["name"], n2, check_rv=False)
        for r in owned:
            if r["metadata"]["uid"] != new["metadata"]["uid"] and r["spec"].get("replicas", 0) != 0:
                r2 = deepcopy(r)
                r2["spec"]["replicas"] = 0
                self.store.update(rs_rt, ns, r["metadata"]["name"], r2, check_rv=False)
        # old ReplicaSets beyond revisionHistoryLimit
        old = sorted((r for r in owned if r["metadata"]["uid"] != new["metadata"]["uid"]),
                     key=lambda r: int((r["metadata"].get("annotations") or {}).get(
                         "deployment.kubernetes.io/revision", "0") or 0))
        limit = spec.get("revisionHistoryLimit", 10)
        for r in old[:max(0, len(old) - limit)]:
            self._delete(rs_rt, r)
        owned = [self.store.get(rs_rt, ns, r["metadata"]["name"]) for r in owned]
        owned = [r for r in owned if r is not None]
        new = self.store.get(rs_rt, ns, new["metadata"]["name"]) or new
        sts = [r.get("status") or {} for r in owned]
        nst = new.get("status") or {}
        replicas = sum(s.get("replicas", 0) for s in sts)
        ready = sum(s.get("readyReplicas", 0) for s in sts)
        avail = sum(s.get("availableReplicas", 0) for s in sts)
        updated = nst.get("replicas", 0)
        new_ok = nst.get("availableReplicas", 0) >= want and nst.get("observedGeneration") == \
            new["metadata"].get("generation") and replicas == want
        old_st = d.get("status") or {}
        conds = self._conds(old_st.get("conditions"), [
            ("Available", "True" if avail >= want else "False",
             "MinimumReplicasAvailable" if avail >= want else "MinimumReplicasUnavailable",
             "Deployment has minimum availability." if avail >= want
             else "Deployment does not have minimum availability."),
            ("Progressing", "True", "NewReplicaSetAvailable" if new_ok else "ReplicaSetUpdated",
             ('ReplicaSet "%s" has successfully progressed.' if new_ok else
              'ReplicaSet "%s" is progressing.') % new["metadata"]["name"])])
        st = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": replicas,
              "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": avail,
              "unavailableReplicas": max(0, want - avail), "conditions": conds}
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"):
            if st[k] == 0:
                del st[k]
        self._set_status(rt, d, st)

    # -- StatefulSet
    def reconcile_statefulset(self, rt, s):
        spec = s.get("spec") or {}
        ns, name = s["metadata"]["namespace"], s["metadata"]["name"]
        want = spec.get("replicas", 1)
        rev = "%s-%s" % (name, hash10(spec.get("template") or {}))
        pod_rt = self.rt("Pod")
        pods = {p["metadata"]["name"]: p for p in self._pods(s)}
        for pname, p in list(pods.items()):
            m = re.match(r"^%s-(\d+)$" % re.escape(name), pname)
            if not m or int(m.group(1)) >= want or \
                    (p["metadata"].get("labels") or {}).get("controller-revision-hash") != rev:
                self._delete(pod_rt, p)
                del pods[pname]
        for i in range(want):
            pname = "%s-%d" % (name, i)
            if pname not in pods and self.store.get(pod_rt, ns, pname) is None:
                pods[pname] = self._new_pod(s, rt, pname, spec.get("template"), {
                    "controller-revision-hash": rev, "statefulset.kubernetes.io/pod-name": pname,
                    "apps.kubernetes.io/pod-index": str(i)})
        ready = sum(1 for p in pods.values() if self.pod_ready(p))
        old = s.get("status") or {}
        cur = rev if ready == want else old.get("currentRevision", rev)
        st = {"observedGeneration": s["metadata"].get("generation", 1), "replicas": len(pods),
              "readyReplicas": ready, "currentReplicas": len(pods) if cur == rev else 0,
              "updatedReplicas": len(pods), "availableReplicas": ready,
              "currentRevision": cur, "updateRevision": rev, "collisionCount": 0}
        for k in ("readyReplicas", "availableReplicas"):
            if st[k] == 0:
                del st[k]
        self._set_status(rt, s, st)

    # -- DaemonSet (one emulated node)
    def reconcile_daemonset(self, rt, ds):
        spec = ds.get("spec") or {}
        h = hash10(spec.get("template") or {})
        pods = self._pods(ds)
        for p in pods:
            if (p["metadata"].get("labels") or {}).get("controller-revision-hash") != h:
                self._delete(self.rt("Pod"), p)
        pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == h]
        if not pods:
            pods = [self._new_pod(ds, rt, "%s-%s" % (ds["metadata"]["name"], rand_suffix()),
                                  spec.get("template"), {"controller-revision-hash": h})]
        ready = sum(1 for p in pods if self.pod_ready(p))
        st = {"observedGeneration": ds["metadata"].get("generation", 1), "desiredNumberScheduled": 1,
              "currentNumberScheduled": 1, "updatedNumberScheduled": 1, "numberMisscheduled": 0,
              "numberReady": ready, "numberAvailable": ready}
        if not ready:
            st["numberUnavailable"] = 1
            del st["numberAvailable"]
        self._set_status(rt, ds, st)

    # -- Job
    def reconcile_job(self, rt, job):
        spec = job.get("spec") or {}
        st = dict(job.get("status") or {})
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in st.get("conditions") or []):
            return
        if spec.get("suspend"):
            return
        completions = spec.get("completions") or 1
        parallelism = spec.get("parallelism", 1)
        backoff = spec.get("backoffLimit", 6)
        pods = self._pods(job)
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        active = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        ts = now_ts()
        st.setdefault("startTime", ts)
        if failed:
            st.update({"failed": backoff + 1, "active": 0, "ready": 0, "terminating": 0,
                       "uncountedTerminatedPods": {}})
            if succeeded:
                st["succeeded"] = succeeded
            st["conditions"] = [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastProbeTime": ts, "lastTransitionTime": ts},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastProbeTime": ts, "lastTransitionTime": ts}]
            for p in active:
                self._delete(self.rt("Pod"), p)
            self._set_status(rt, job, st)
            return
        if succeeded >= completions:
            st.update({"succeeded": succeeded, "active": 0, "ready": 0, "terminating": 0,
                       "completionTime": ts, "uncountedTerminatedPods": {}})
            st["conditions"] = [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastProbeTime": ts,
                 "lastTransitionTime": ts},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastProbeTime": ts,
                 "lastTransitionTime": ts}]
            self._set_status(rt, job, st)
            return
        need = min(parallelism, completions - succeeded) - len(active)
        for _ in range(max(0, need)):
            active.append(self._new_pod(job, rt, "%s-%s" % (job["metadata"]["name"], rand_suffix()),
                                        spec.get("template")))
        st["active"] = len(active)
        st["ready"] = 0
        st["terminating"] = 0
        st["uncountedTerminatedPods"] = {}
        if succeeded:
            st["succeeded"] = succeeded
        self._set_status(rt, job, st)


# --------------------------------------------------------------------------- discovery / openapi / tables

VERBS_NS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def resource_list(reg, gv):
    res = []
    for t in reg.all:
        if t.gv != gv:
            continue
        r = {"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
             "verbs": t.verbs or VERBS_NS,
             "storageVersionHash": hashlib.sha256(t.key.encode()).hexdigest()[:12]}
        if t.short:
            r["shortNames"] = t.short
        if t.categories:
            r["categories"] = t.categories
        res.append(r)
        if t.status:
            res.append({"name": t.plural + "/status", "singularName": "", "namespaced": t.namespaced,
                        "kind": t.kind, "verbs": ["get", "patch", "update"]})
        if t.scale:
            res.append({"name": t.plural + "/scale", "singularName": "", "namespaced": t.namespaced,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}


def openapi_root(reg):
    paths = {}
    gvs = ["v1"] + ["%s/%s" % (g, v) for g, vs in reg.groups().items() for v in vs]
    for gv in gvs:
        p = "api/v1" if gv == "v1" else "apis/" + gv
        doc = json.dumps(openapi_gv(reg, gv), sort_keys=True).encode()
        paths[p] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (p, hashlib.sha256(doc).hexdigest()[:32].upper())}
    return {"paths": paths}


def openapi_gv(reg, gv):
    """A stub OpenAPI v3 document: one PATCH operation per kind that advertises the
    fieldValidation query parameter (what helm's and kubectl's verifiers look for)."""
    paths = {}
    prefix = "/api/v1" if gv == "v1" else "/apis/" + gv
    for t in reg.all:
        if t.gv != gv or t.review:
            continue
        p = "%s/%s%s/{name}" % (prefix, "namespaces/{namespace}/" if t.namespaced else "", t.plural)
        params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                  {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                  {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
        gvk = {"group": t.group, "version": t.version, "kind": t.kind}
        paths[p] = {
            "patch": {"operationId": "patch" + t.kind, "parameters": params,
                      "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                      "responses": {"200": {"description": "OK"}}},
            "get": {"operationId": "read" + t.kind, "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (helmq emulator)", "version": VERSION},
            "paths": paths, "components": {"schemas": {}}}


def table_for(rt, items, rv, include_object):
    cols = [("Name", "string", "name")]
    kind = rt.kind

    def c(o, path, default=""):
        v = field_value(o, path)
        return v if v != "" else default

    extra = []
    if kind == "Deployment":
        extra = [("Ready", "string", lambda o: "%d/%d" % ((o.get("status") or {}).get("readyReplicas", 0),
                                                         (o.get("spec") or {}).get("replicas", 1))),
                 ("Up-to-date", "integer", lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
                 ("Available", "integer", lambda o: (o.get("status") or {}).get("availableReplicas", 0))]
    elif kind in ("ReplicaSet",):
        extra = [("Desired", "integer", lambda o: (o.get("spec") or {}).get("replicas", 1)),
                 ("Current", "integer", lambda o: (o.get("status") or {}).get("replicas", 0)),
                 ("Ready", "integer", lambda o: (o.get("status") or {}).get("readyReplicas", 0))]
    elif kind == "StatefulSet":
        extra = [("Ready", "string", lambda o: "%d/%d" % ((o.get("status") or {}).get("readyReplicas", 0),
                                                         (o.get("spec") or {}).get("replicas", 1)))]
    elif kind == "Pod":
        extra = [("Ready", "string", lambda o: "%d/%d" % (
            sum(1 for s in (o.get("status") or {}).get("containerStatuses") or [] if s.get("ready")),
            len((o.get("spec") or {}).get("containers") or []))),
            ("Status", "string", lambda o: c(o, "status.phase")),
            ("Restarts", "integer", lambda o: 0)]
    elif kind == "Service":
        extra = [("Type", "string", lambda o: c(o, "spec.type")),
                 ("Cluster-IP", "string", lambda o: c(o, "spec.clusterIP", "<none>")),
                 ("External-IP", "string", lambda o: ",".join(
                     i.get("ip", "") for i in ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
                  or "<none>"),
                 ("Port(s)", "string", lambda o: ",".join(
                     "%s/%s" % (p.get("port"), p.get("protocol", "TCP")) for p in (o.get("spec") or {}).get("ports") or [])
                  or "<none>")]
    elif kind in ("ConfigMap", "Secret"):
        if kind == "Secret":
            extra.append(("Type", "string", lambda o: o.get("type", "")))
        extra.append(("Data", "integer", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})))
    elif kind == "Job":
        extra = [("Status", "string", lambda o: next(
            (cc["type"] for cc in (o.get("status") or {}).get("conditions") or []
             if cc.get("type") in ("Complete", "Failed") and cc.get("status") == "True"), "Running")),
            ("Completions", "string", lambda o: "%d/%d" % ((o.get("status") or {}).get("succeeded", 0),
                                                           (o.get("spec") or {}).get("completions", 1)))]
    elif kind == "Namespace":
        extra = [("Status", "string", lambda o: c(o, "status.phase"))]
    defs = [{"name": n, "type": ty, "format": fmt, "description": "", "priority": 0} for n, ty, fmt in cols]
    defs += [{"name": n, "type": ty, "format": "", "description": "", "priority": 0} for n, ty, _ in extra]
    defs.append({"name": "Age", "type": "string", "format": "", "description": "", "priority": 0})
    rows = []
    for o in items:
        cells = [o["metadata"]["name"]] + [fn(o) for _, _, fn in extra] + \
            [ts_age(o["metadata"].get("creationTimestamp"))]
        row = {"cells": cells}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": defs, "rows": rows}


def wants_table(accept):
    return "as=Table" in (accept or "")


# --------------------------------------------------------------------------- HTTP

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


class Handler(BaseHTTPRequestHandler):
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

    # -- authentication, impersonation
    @classmethod
    def _file_token(cls, tok):
        """The token file (kube-apiserver's --token-auth-file CSV: token,user,uid,"group1,group2"),
        re-read whenever it changes, so users can be added while the server runs."""
        with cls._tf_lock:
            try:
                st = os.stat(cls.token_file)
                sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                sig = None
            if sig != cls._tf_sig:
                users = {}
                if sig is not None:
                    try:
                        with open(cls.token_file, newline="") as f:
                            for row in csv.reader(f):
                                if len(row) < 2 or not row[0].strip() or row[0].lstrip().startswith("#"):
                                    continue
                                groups = [g.strip() for g in (row[3] if len(row) > 3 else "").split(",") if g.strip()]
                                users[row[0].strip()] = (row[1].strip(), groups + [AUTHENTICATED])
                    except OSError as e:
                        log("error", "cannot read the token file %s: %s" % (cls.token_file, e))
                cls._tf_users, cls._tf_sig = users, sig
            return cls._tf_users.get(tok)

    def _authenticate(self):
        auth = self.headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            tok = auth[7:].strip()
            ident = self.tokens.get(tok)
            if ident is None and self.token_file:
                ident = self._file_token(tok)
            if ident is None:
                raise unauthorized()
            return ident
        if self.anonymous == "admin":  # the emulator's historical default: no token = the admin
            return "admin", [MASTERS, AUTHENTICATED]
        if self.anonymous == "anonymous":  # the real API's default (--anonymous-auth=true)
            return ANONYMOUS, [UNAUTHENTICATED]
        raise unauthorized()

    def _impersonate(self, user, groups):
        """The real API's impersonation filter: every Impersonate-* header needs verb impersonate."""
        h = self.headers
        imp_user = (h.get("Impersonate-User") or "").strip()
        imp_groups = [g for g in (h.get_all("Impersonate-Group") or [])]
        extras = [(urllib.parse.unquote(k[len("Impersonate-Extra-"):].lower()), v) for k, v in h.items()
                  if k.lower().startswith("impersonate-extra-")]
        imp_uid = (h.get("Impersonate-Uid") or "").strip()
        if not (imp_user or imp_groups or extras or imp_uid):
            return user, groups
        if not imp_user:
            raise ApiError(500, "InternalError", 'Internal Server Error: "%s": requested groups/extra/uid '
                           'without impersonating a user' % self.path)
        checks = []
        sa = sa_split(imp_user)
        if sa:
            checks.append(("serviceaccounts", "", sa[0], sa[1]))
        else:
            checks.append(("users", "", "", imp_user))
        checks += [("groups", "", "", g) for g in imp_groups]
        checks += [("userextras/" + k, "authentication.k8s.io", "", v) for k, v in extras]
        if imp_uid:
            checks.append(("uids", "authentication.k8s.io", "", imp_uid))
        for res, grp, ns, name in checks:
            allowed, reason = authorize(user, groups, "impersonate", res, ns, name, grp)
            if not allowed:
                raise forbidden(user, "impersonate", res, grp, ns, name, reason)
        new_groups = list(imp_groups)
        if sa and not imp_groups:  # a service account's groups are known: the server adds them
            new_groups = sa_groups(sa[0])
        if imp_user == ANONYMOUS:
            if UNAUTHENTICATED not in new_groups:
                new_groups.append(UNAUTHENTICATED)
        elif AUTHENTICATED not in new_groups and UNAUTHENTICATED not in new_groups:
            new_groups.append(AUTHENTICATED)
        return imp_user, new_groups

    def _user(self):
        """The request's identity (user, groups), after authentication and impersonation."""
        return self._ident

    def _check_escalation(self, rt, ns, obj, url_name):
        """RBAC's escalation prevention on a Role/ClusterRole/RoleBinding/ClusterRoleBinding write."""
        if rt.group != RBAC_GROUP or _rbac is None or not isinstance(obj, dict):
            return
        user, groups = self._ident
        if MASTERS in groups:
            return
        name = (obj.get("metadata") or {}).get("name") or url_name or ""
        if rt.kind in ("Role", "ClusterRole"):
            # the escalate check uses the URL's name: "" for a create, as the real API
            if authorize(user, groups, "escalate", rt.plural, ns, url_name or "", RBAC_GROUP)[0]:
                return
            if rt.kind == "ClusterRole" and obj.get("aggregationRule"):
                full = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                        {"nonResourceURLs": ["*"], "verbs": ["*"]}]
                if _rbac.confirm_no_escalation(user, groups, ns, full) is not None:
                    raise ApiError(403, "Forbidden", '%s "%s" is forbidden: must have cluster-admin privileges '
                                   'to use the aggregationRule' % (rt.qual_plural(), name), name, rt.plural, rt.group)
            rules = obj.get("rules") or []
        else:
            ref = obj.get("roleRef") or {}
            ref_res = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            if authorize(user, groups, "bind", ref_res, ns, ref.get("name") or "", RBAC_GROUP)[0]:
                return
            ref_rt = self.store.reg.by_key[RBAC_GROUP + "/" + ref_res]
            role = self.store.get(ref_rt, ns if ref_res == "roles" else "", ref.get("name") or "")
            if role is None:
                raise not_found(ref_rt, ref.get("name") or "")
            rules = role.get("rules") or []
        msg = _rbac.confirm_no_escalation(user, groups, ns, rules)
        if msg is not None:
            raise ApiError(403, "Forbidden", '%s "%s" is forbidden: %s' % (rt.qual_plural(), name, msg),
                           name, rt.plural, rt.group)

    def _review(self, rt, ns, body):
        """SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
        SelfSubjectRulesReview, SelfSubjectReview: answered, never stored."""
        user, groups = self._ident
        spec = body.get("spec") or {}
        out = {"kind": rt.kind, "apiVersion": rt.gv, "metadata": dict(body.get("metadata") or {}),
               "spec": spec}
        out["metadata"]["creationTimestamp"] = None
        if rt.kind == "SelfSubjectReview":
            out.pop("spec")
            out["status"] = {"userInfo": {"username": user, "groups": groups}}
            return self._send(201, out)
        if rt.kind == "SelfSubjectRulesReview":
            rns = spec.get("namespace") or ""
            rules, errs = _rbac.rules_for(user, groups, rns) if _rbac else \
                ([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}], [])
            st = {"resourceRules": [], "nonResourceRules": [], "incomplete": bool(errs)}
            for r in rules:
                if r.get("resources"):
                    rr = {"verbs": r.get("verbs") or [], "apiGroups": r.get("apiGroups") or [],
                          "resources": r["resources"]}
                    if r.get("resourceNames"):
                        rr["resourceNames"] = r["resourceNames"]
                    st["resourceRules"].append(rr)
                if r.get("nonResourceURLs"):
                    st["nonResourceRules"].append({"verbs": r.get("verbs") or [],
                                                   "nonResourceURLs": r["nonResourceURLs"]})
            if errs:
                st["evaluationError"] = ", ".join(errs)
            out["status"] = st
            return self._send(201, out)
        if rt.kind == "SubjectAccessReview" or rt.kind == "LocalSubjectAccessReview":
            if not spec.get("user") and not spec.get("groups"):
                raise invalid(rt, "", "spec.user", "Invalid value: \"\": at least one of user or group must be specified")
            user, groups = spec.get("user") or "", list(spec.get("groups") or [])
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if (ra is None) == (nra is None):
            raise invalid(rt, "", "spec.resourceAttributes",
                          "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified")
        if rt.kind == "LocalSubjectAccessReview" and (ra is None or (ra.get("namespace") or "") != ns):
            raise bad_request("spec.resourceAttributes.namespace must match namespace: %s" % ns)
        if ra is not None:
            res = (ra.get("resource") or "") + ("/" + ra["subresource"] if ra.get("subresource") else "")
            allowed, reason = authorize(user, groups, ra.get("verb") or "", res, ra.get("namespace") or "",
                                        ra.get("name") or "", ra.get("group") or "")
        else:
            allowed, reason = authorize(user, groups, nra.get("verb") or "", "", "", "", path=nra.get("path") or "")
        out["status"] = {"allowed": allowed}
        if reason:
            out["status"]["reason"] = reason
        return self._send(201, out)

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
            traceback.print_exc(file=_log_file)
            try:
                self._send(500, ApiError(500, "InternalError", "internal error: %r" % e).status())
            except OSError:
                self.close_connection = True
        ms = (time.monotonic() - t0) * 1000
        lvl = "error" if self._code >= 500 else "debug"
        if lvl == "error" or _log_level <= LOG_LEVELS["debug"]:
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


# --------------------------------------------------------------------------- main

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
    global _log_level, _log_file, _rbac
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
    _log_level = LOG_LEVELS[args.log_level]
    if args.log:
        _log_file = open(args.log, "a", buffering=1)
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
    _rbac = Rbac(store) if args.authorization == "RBAC" else None
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
