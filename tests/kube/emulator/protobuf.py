"""Protobuf request bodies: the k8s\0 envelope around runtime.Unknown, decoded by hand for
Secret, ConfigMap (helm's release storage) and DeleteOptions into their JSON form."""
import base64

from .errors import ApiError, bad_request


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
