"""Label selectors (=, ==, !=, in, notin, exists, !key, <, >) and field selectors (any dotted
path): parsing and matching; a LabelSelector object as requirements."""
import re

from .errors import bad_request


def _split_top(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def parse_label_selector(s):
    reqs = []
    for term in _split_top(s or ""):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", term)
        if m:
            reqs.append((m.group(1), m.group(2), {x.strip() for x in m.group(3).split(",") if x.strip()}))
            continue
        if term.startswith("!"):
            reqs.append((term[1:].strip(), "!exists", None))
            continue
        m = re.match(r"^([^=!<>\s]+)\s*(==|=|!=)\s*(\S*)$", term)
        if m:
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
            continue
        m = re.match(r"^([^=!<>\s]+)\s*([<>])\s*(-?\d+)$", term)
        if m:
            reqs.append((m.group(1), m.group(2), int(m.group(3))))
            continue
        if re.match(r"^[A-Za-z0-9./_-]+$", term):
            reqs.append((term, "exists", None))
            continue
        raise bad_request("unable to parse requirement: %s" % term)
    return reqs


def match_labels(reqs, labels):
    labels = labels or {}
    for key, op, val in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and v != val:
            return False
        if op == "!=" and has and v == val:
            return False
        if op == "in" and (not has or v not in val):
            return False
        if op == "notin" and has and v in val:
            return False
        if op == "exists" and not has:
            return False
        if op == "!exists" and has:
            return False
        if op in "<>":
            try:
                iv = int(v)
            except (TypeError, ValueError):
                return False
            if (op == "<" and not iv < val) or (op == ">" and not iv > val):
                return False
    return True


def selector_from_label_selector(sel):
    """A metav1.LabelSelector (matchLabels/matchExpressions) as requirements."""
    reqs = []
    for k, v in ((sel or {}).get("matchLabels") or {}).items():
        reqs.append((k, "=", v))
    for e in (sel or {}).get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(e.get("operator"))
        if op:
            reqs.append((e.get("key"), op, set(e.get("values") or [])))
    return reqs


def parse_field_selector(s):
    reqs = []
    for term in (s or "").split(","):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise bad_request("invalid field selector: %s" % term)
        reqs.append((m.group(1).strip(), m.group(2) == "!=", m.group(3).strip()))
    return reqs


def field_value(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def match_fields(reqs, obj):
    for path, neg, val in reqs:
        if (field_value(obj, path) == val) == neg:
            return False
    return True
