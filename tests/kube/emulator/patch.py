"""Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
(lists merged by their merge keys, the $patch/$setElementOrder/$retainKeys/
$deleteFromPrimitiveList directives)."""
from .errors import ApiError, bad_request
from .util import deepcopy


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
