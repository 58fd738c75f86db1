"""Discovery documents (/api/v1, /apis/G/V resource lists) and the /openapi/v3 stubs (a PATCH
operation per kind advertising fieldValidation)."""
import hashlib
import json

from .util import VERSION


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
