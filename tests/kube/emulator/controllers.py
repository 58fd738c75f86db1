"""The emulated controllers and kubelet, one thread driven by store events and timers:
Deployment -> ReplicaSets -> Pods, StatefulSets, DaemonSets, Jobs, and pod readiness."""
import collections
import heapq
import re
import threading
import time

from .errors import ApiError
from .store import controller_of, owner_ref
from .util import EMU_JOB, EMU_READY, deepcopy, dsub, hash10, log, now_ts, rand_suffix


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
