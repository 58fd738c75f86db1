"""The HTTP handler's identity side (a mixin of handler.Handler): bearer tokens (admin,
--user, --token-auth-file), anonymous requests, impersonation, the RBAC escalation check on
writes of roles and bindings, and the SelfSubject/SubjectAccessReview endpoints."""
import csv
import os
import urllib.parse

from . import rbac
from .errors import ApiError, bad_request, invalid, not_found
from .rbac import (
    ANONYMOUS, AUTHENTICATED, MASTERS, RBAC_GROUP, UNAUTHENTICATED, authorize, forbidden,
    sa_groups, sa_split, unauthorized)
from .util import log


class AuthMixin:
    """Authentication, impersonation and review methods of Handler (its class attributes hold the tokens)."""

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
        if rt.group != RBAC_GROUP or rbac._rbac is None or not isinstance(obj, dict):
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
                if rbac._rbac.confirm_no_escalation(user, groups, ns, full) is not None:
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
        msg = rbac._rbac.confirm_no_escalation(user, groups, ns, rules)
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
            rules, errs = rbac._rbac.rules_for(user, groups, rns) if rbac._rbac else \
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
