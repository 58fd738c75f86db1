"""Server-side Tables for kubectl get (Accept: ...;as=Table): per-kind columns."""
from .selectors import field_value
from .util import ts_age


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
