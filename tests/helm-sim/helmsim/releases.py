"""Release helpers: Go-style errno and Atoi errors, release-name validation, values merging and
canonical form, --history-max pruning (HELM_MAX_HISTORY) and the chart label."""
import os

from .cli import goquote
from .consts import DEFAULT_MAX_HISTORY, ERR_INVALID_NAME, HelmError


def go_errno(e):
    msg = os.strerror(e.errno) if e.errno else str(e)
    return msg[:1].lower() + msg[1:]


def go_atoi(s):
    body = s[1:] if s[:1] in "+-" else s
    if not body or not body.isascii() or not body.isdigit():
        raise HelmError('could not convert revision to a number: strconv.Atoi: parsing %s: invalid syntax'
                        % goquote(s))
    return int(s)


def validate_name(name):
    """helm's chartutil.ValidateReleaseName: returns the error text or None."""
    if name == "":
        return "no name provided"
    if len(name) > 53:
        return ERR_INVALID_NAME
    for label in name.split("."):
        if not label or not label.isascii():
            return ERR_INVALID_NAME
        if not (label[0].isalnum() and label[-1].isalnum()):
            return ERR_INVALID_NAME
        for c in label:
            if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
                return ERR_INVALID_NAME
    return None


def canon(v):
    """Normalise values as helm's YAML->JSON round trip would: map keys sorted,
    integral floats printed as integers."""
    if isinstance(v, dict):
        return {k: canon(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [canon(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    return v


def merge_maps(a, b):
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_maps(out[k], v)
        else:
            out[k] = v
    return {k: out[k] for k in sorted(out)}


def max_history():
    try:
        return int(os.environ.get("HELM_MAX_HISTORY", DEFAULT_MAX_HISTORY))
    except ValueError:
        return DEFAULT_MAX_HISTORY


def prune(revs, max_hist):
    """helm's storage.removeLeastRecent(max-1) before creating a revision: drop the
    oldest revisions, never the last deployed one."""
    keep = max_hist - 1
    if max_hist <= 0 or len(revs) <= keep:
        return revs
    deployed = [r["version"] for r in revs if r["info"]["status"] == "deployed"]
    last_deployed = deployed[-1] if deployed else None
    drop = set()
    for r in revs:
        if len(revs) - len(drop) == keep:
            break
        if r["version"] != last_deployed:
            drop.add(r["version"])
    return [r for r in revs if r["version"] not in drop]


def chart_label(rel):
    meta = rel["chart"]["metadata"]
    return "%s-%s" % (meta["name"], meta["version"])
