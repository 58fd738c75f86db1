"""Authorization: the bootstrap ClusterRoles/Bindings, RBAC rule evaluation (the Rbac engine,
indexed from the store's bindings), the escalation check, authorize() (the one decision
every request goes through) and the 401/403 Status builders.

_rbac is the running server's engine, installed by main.main(); None (module imported
without a server) allows everything."""
import collections

from .errors import ApiError


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
