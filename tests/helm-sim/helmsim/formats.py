"""Time and output formats: nanosecond clocks, RFC 3339 and Go's time.String/ANSIC, Go-style
JSON, a small YAML emitter, and helm's tab-aligned tables."""
import json
import time


def now_ns():
    return time.time_ns()


def rfc3339nano(ns):
    """Go's time.Time JSON form (RFC3339Nano, local zone) of a Unix time in ns."""
    secs, frac = divmod(ns, 1_000_000_000)
    lt = time.localtime(secs)
    s = time.strftime("%Y-%m-%dT%H:%M:%S", lt)
    if frac:
        s += ("." + "%09d" % frac).rstrip("0")
    off = lt.tm_gmtoff
    if off == 0:
        return s + "Z"
    sign = "+" if off > 0 else "-"
    off = abs(off)
    return s + "%s%02d:%02d" % (sign, off // 3600, off % 3600 // 60)


def parse_rfc3339(s):
    """Inverse of rfc3339nano: (unix seconds, nanoseconds, utc offset seconds, zulu)."""
    if not s:
        return None
    date, _, rest = s.partition("T")
    hms, zone = rest[:8], rest[8:]
    frac = 0
    if zone.startswith("."):
        j = 1
        while j < len(zone) and zone[j].isdigit():
            j += 1
        digits = zone[1:j]
        frac = int((digits + "000000000")[:9])
        zone = zone[j:]
    if zone == "Z":
        off = 0
    else:
        off = (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    y, mo, d = (int(x) for x in date.split("-"))
    h, mi, se = (int(x) for x in hms.split(":"))
    import calendar
    secs = calendar.timegm((y, mo, d, h, mi, se, 0, 0, 0)) - off
    return secs, frac, off, zone == "Z"


def go_time_string(s):
    """Go's time.Time.String() ("2006-01-02 15:04:05.999999999 -0700 MST"), as helm list prints."""
    p = parse_rfc3339(s)
    if p is None:
        return "-"
    secs, frac, off, zulu = p
    base = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs + off))
    if frac:
        base += ("." + "%09d" % frac).rstrip("0")
    sign = "+" if off >= 0 else "-"
    num = "%s%02d%02d" % (sign, abs(off) // 3600, abs(off) % 3600 // 60)
    lt = time.localtime(secs)
    if lt.tm_gmtoff == off and not (zulu and lt.tm_zone != "UTC"):
        name = lt.tm_zone
    elif zulu:
        name = "UTC"
    else:
        name = num
    return "%s %s %s" % (base, num, name)


def ansic(s):
    p = parse_rfc3339(s)
    if p is None:
        return ""
    secs, _, off, _ = p
    return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(secs + off))


def go_json(obj):
    """encoding/json's Encoder output: compact, HTML-escaped, newline-terminated."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if "<" in s or ">" in s or "&" in s or "\u2028" in s or "\u2029" in s:
        s = (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
             .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return s + "\n"


YAML_PLAIN_BAD = set(":#{}[],&*!|>'\"%@`\n\t")


def yaml_scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    s = str(v)
    if (s == "" or s.strip() != s or any(c in YAML_PLAIN_BAD for c in s) or s[0] in "-?"
            or s.lower() in ("true", "false", "null", "yes", "no", "on", "off", "~")
            or s.replace(".", "", 1).replace("-", "", 1).isdigit()):
        return json.dumps(s)
    return s


def yaml_dump(v, indent=0):
    """A small YAML emitter (keys sorted, as sigs.k8s.io/yaml output is)."""
    pad = " " * indent
    out = []
    if isinstance(v, dict):
        if not v:
            return pad + "{}\n"
        for k in sorted(v):
            x = v[k]
            if isinstance(x, dict) and x:
                out.append("%s%s:\n%s" % (pad, yaml_scalar(k), yaml_dump(x, indent + 2)))
            elif isinstance(x, list) and x:
                out.append("%s%s:\n%s" % (pad, yaml_scalar(k), yaml_dump(x, indent)))
            elif isinstance(x, str) and "\n" in x:
                body = "".join(pad + "  " + ln + "\n" if ln else "\n" for ln in x.rstrip("\n").split("\n"))
                out.append("%s%s: |%s\n%s" % (pad, yaml_scalar(k), "" if x.endswith("\n") else "-", body))
            else:
                out.append("%s%s: %s\n" % (pad, yaml_scalar(k),
                                           "[]" if x == [] else "{}" if x == {} else yaml_scalar(x)))
        return "".join(out)
    if isinstance(v, list):
        if not v:
            return pad + "[]\n"
        for x in v:
            if isinstance(x, (dict, list)) and x:
                inner = yaml_dump(x, indent + 2)
                out.append(pad + "- " + inner[indent + 2:])
            else:
                out.append("%s- %s\n" % (pad, yaml_scalar(x)))
        return "".join(out)
    return pad + yaml_scalar(v) + "\n"


def table(rows):
    """uitable-like columns: cells padded to the column width, tab separated."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "".join("\t".join(str(c).ljust(w) for c, w in zip(r, widths)) + "\n" for r in rows)
