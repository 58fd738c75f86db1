"""Defaulting as the real API server does it on create and update: Services (clusterIP,
ports), workloads, Jobs, pod specs, Secrets (stringData), Namespaces; generation bumps."""
import base64
import random

from .errors import invalid
from .util import deepcopy, dsub, now_ts


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
