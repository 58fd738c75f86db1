"""Resource types: RType (group, version, kind, plural, scope, subresources), the built-in
kinds, and the Registry that serves them and the kinds defined by CRDs."""
import collections
import threading


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
