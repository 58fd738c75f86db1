#!/usr/bin/python3
"""tests/faults/helm_storage.py: real helm's release storage, read from the cluster.

  helm_storage.py export DIR  < secrets.json
      secrets.json is `kubectl get secrets -A -l owner=helm -o json`. Writes
      DIR/releases/NS/NAME.json ({"revisions": [...]}, helm's release records:
      version, info.status, chart.metadata.version, ...) for every release but
      the worker's own helmq-tenant-access: the layout of the simulated helm's
      state, which the fault suite's checker reads.
  helm_storage.py check DIR PREFIX < deployments.json
      deployments.json is `kubectl get deployments -A -o json`. Compares the
      cluster with helm's storage for the releases named PREFIX*: no release left
      pending-*; a release whose last revision is deployed has its Deployment
      (label app.kubernetes.io/instance=NAME) in its namespace; a Deployment of
      such a release exists only while helm has the release. Prints one problem
      per line and, last, the count as FQ_R_CLUSTER=N.
"""
import base64, gzip, json, os, sys


def decode(secret):
    raw = base64.b64decode(secret["data"]["release"])  # the Secret's own base64
    raw = base64.b64decode(raw)  # helm's
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def load(d):
    out = {}
    root = os.path.join(d, "releases")
    for ns in (os.listdir(root) if os.path.isdir(root) else []):
        for f in os.listdir(os.path.join(root, ns)):
            with open(os.path.join(root, ns, f)) as fh:
                out[(ns, f[:-5])] = sorted(json.load(fh)["revisions"], key=lambda r: r["version"])
    return out


def main():
    mode, d = sys.argv[1], sys.argv[2]
    if mode == "export":
        rels = {}
        for s in json.load(sys.stdin).get("items", []):
            r = decode(s)
            if r.get("name") == "helmq-tenant-access":
                continue
            rels.setdefault((r["namespace"], r["name"]), []).append(r)
        for (ns, name), revs in rels.items():
            os.makedirs(os.path.join(d, "releases", ns), exist_ok=True)
            with open(os.path.join(d, "releases", ns, name + ".json"), "w") as fh:
                json.dump({"revisions": sorted(revs, key=lambda r: r["version"])}, fh)
        return 0
    prefix = sys.argv[3]
    storage = {k: v for k, v in load(d).items() if k[1].startswith(prefix)}
    deploys = {}
    for dep in json.load(sys.stdin).get("items", []):
        inst = ((dep.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/instance", "")
        if inst.startswith(prefix):
            deploys.setdefault((dep["metadata"]["namespace"], inst), []).append(dep)
    problems = []
    for (ns, name), revs in sorted(storage.items()):
        last = revs[-1]["info"]["status"]
        if last.startswith("pending-"):
            problems.append("%s/%s: helm's release is left %s (revision %d)" % (ns, name, last, revs[-1]["version"]))
        if last == "deployed" and (ns, name) not in deploys:
            problems.append("%s/%s: deployed in helm's storage, but no Deployment in the cluster" % (ns, name))
    for (ns, name) in sorted(deploys):
        if (ns, name) not in storage:
            problems.append("%s/%s: a Deployment in the cluster, but helm has no such release" % (ns, name))
    for p in problems:
        print(p)
    print("FQ_R_CLUSTER=%d" % len(problems))
    return 0


sys.exit(main())
