"""The command line as cobra/pflag parse it: the subcommands and their flags, aliases, flag
value conversion (bool, int, Go durations), subcommand lookup, flag parsing and argument
count checks, with cobra's error texts."""
import json

from .consts import HelmError


# Flag kinds: bool, str, strs (repeatable), dur (Go duration), int, fmt (output).
GLOBAL_FLAGS = {"namespace": ("n", "str"), "kubeconfig": (None, "str"), "kube-context": (None, "str"),
                "registry-config": (None, "str")}
COMMANDS = {
    "install": {
        "use": "helm install [NAME] [CHART] [flags]", "args": ("min", 1),
        "flags": {"create-namespace": (None, "bool"), "version": (None, "str"),
                  "values": ("f", "strs"), "timeout": (None, "dur"),
                  "wait": (None, "bool"), "wait-for-jobs": (None, "bool"),
                  "description": (None, "str"), "output": ("o", "fmt"),
                  "plain-http": (None, "bool")}},
    "upgrade": {
        "use": "helm upgrade [RELEASE] [CHART] [flags]", "args": ("exact", 2),
        "flags": {"version": (None, "str"), "values": ("f", "strs"),
                  "timeout": (None, "dur"), "wait": (None, "bool"),
                  "wait-for-jobs": (None, "bool"), "description": (None, "str"),
                  "output": ("o", "fmt"), "plain-http": (None, "bool")}},
    "rollback": {
        "use": "helm rollback <RELEASE> [REVISION] [flags]", "args": ("min", 1),
        "flags": {"timeout": (None, "dur"), "wait": (None, "bool"),
                  "wait-for-jobs": (None, "bool")}},
    "uninstall": {
        "use": "helm uninstall RELEASE_NAME [...] [flags]", "args": ("min", 1),
        "flags": {"timeout": (None, "dur"), "description": (None, "str"),
                  "wait": (None, "bool")}},
    "status": {
        "use": "helm status RELEASE_NAME [flags]", "args": ("exact", 1),
        "flags": {"output": ("o", "fmt")}},
    "history": {
        "use": "helm history RELEASE_NAME [flags]", "args": ("exact", 1),
        "flags": {"max": (None, "int"), "output": ("o", "fmt")}},
    "list": {
        "use": "helm list [flags]", "args": ("exact", 0),
        "flags": {"all": ("a", "bool"), "output": ("o", "fmt")}},
    "version": {
        "use": "helm version [flags]", "args": ("exact", 0),
        "flags": {"short": (None, "bool")}},
}
ALIASES = {"ls": "list", "hist": "history", "un": "uninstall", "del": "uninstall",
           "delete": "uninstall"}
DEFAULTS = {"timeout": 300.0, "max": 256, "output": "table"}


def goquote(s):
    return json.dumps(s, ensure_ascii=False)


def parse_bool(v):
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError("strconv.ParseBool: parsing %s: invalid syntax" % goquote(v))


def parse_int(v):
    """strconv.ParseInt(v, 0, 64) as pflag's int flags use it."""
    body = v[1:] if v[:1] in "+-" else v
    try:
        if not body.isascii() or not body or body[:1] == "_" or v != v.strip():
            raise ValueError
        if body.isdigit() and len(body) > 1 and body[0] == "0":
            n = int(v, 8)  # Go's base 0 reads a leading 0 as octal
        else:
            n = int(v, 0)
    except ValueError:
        raise ValueError("strconv.ParseInt: parsing %s: invalid syntax" % goquote(v))
    if not -(1 << 63) <= n < (1 << 63):
        raise ValueError("strconv.ParseInt: parsing %s: value out of range" % goquote(v))
    return n


DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
             "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(orig):
    """Go's time.ParseDuration, returning seconds; same error texts."""
    s, neg, total = orig, False, 0.0
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("time: invalid duration %s" % goquote(orig))
    while s:
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        whole, s = s[:i], s[i:]
        frac = ""
        if s[:1] == ".":
            s = s[1:]
            j = 0
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            frac, s = s[:j], s[j:]
        if not whole and not frac:
            raise ValueError("time: invalid duration %s" % goquote(orig))
        k = 0
        while k < len(s) and s[k] != "." and not "0" <= s[k] <= "9":
            k += 1
        if k == 0:
            raise ValueError("time: missing unit in duration %s" % goquote(orig))
        unit, s = s[:k], s[k:]
        if unit not in DUR_UNITS:
            raise ValueError("time: unknown unit %s in duration %s" % (goquote(unit), goquote(orig)))
        value = float(int(whole or "0"))
        if frac:
            value += int(frac) / (10 ** len(frac))
        total += value * DUR_UNITS[unit]
    return -total if neg else total


def convert(kind, v):
    if kind == "bool":
        return parse_bool(v)
    if kind == "int":
        return parse_int(v)
    if kind == "dur":
        return parse_duration(v)
    if kind == "fmt":
        if v not in ("table", "json", "yaml"):
            raise ValueError("invalid format type")
        return v
    return v


def find_subcommand(argv):
    """Locate the subcommand the way cobra does, skipping global flags before it."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return None, argv
        if a.startswith("-") and len(a) > 1:
            if a in ("-n", "--namespace"):
                i += 1
            i += 1
            continue
        return a, argv[:i] + argv[i + 1:]
    return None, argv


def parse_flags(spec, args):
    """pflag-compatible parsing with interspersed positionals. Returns (opts, positionals)."""
    flags = dict(GLOBAL_FLAGS)
    flags.update(spec)
    shorts = {sh: name for name, (sh, _) in flags.items() if sh}
    opts, pos = {}, []

    def setv(name, raw):
        sh, kind = flags[name]
        try:
            val = convert(kind, raw)
        except ValueError as e:
            shown = ("-%s, --%s" % (sh, name)) if sh else ("--" + name)
            raise HelmError("invalid argument %s for %s flag: %s" % (goquote(raw), goquote(shown), e))
        if kind == "strs":
            opts.setdefault(name, []).append(val)
        else:
            opts[name] = val

    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            pos.extend(args[i:])
            break
        if a.startswith("--"):
            body = a[2:]
            if body[:1] in ("-", "="):
                raise HelmError("bad flag syntax: %s" % a)
            name, eq, val = body.partition("=")
            if name in ("help",) and name not in flags:
                raise HelpRequested()
            if name not in flags:
                raise HelmError("unknown flag: --%s" % name)
            if flags[name][1] == "bool":
                setv(name, val if eq else "true")
            elif eq:
                setv(name, val)
            elif i < len(args):
                setv(name, args[i])
                i += 1
            else:
                raise HelmError("flag needs an argument: --%s" % name)
        elif a.startswith("-") and len(a) > 1:
            rest = a[1:]
            while rest:
                c = rest[0]
                if c not in shorts:
                    if c == "h":
                        raise HelpRequested()
                    raise HelmError("unknown shorthand flag: %s in -%s" % ("'%s'" % c, a[1:]))
                name = shorts[c]
                if flags[name][1] == "bool":
                    if len(rest) > 2 and rest[1] == "=":
                        setv(name, rest[2:])
                        rest = ""
                    else:
                        setv(name, "true")
                        rest = rest[1:]
                    continue
                if len(rest) > 2 and rest[1] == "=":
                    setv(name, rest[2:])
                elif len(rest) > 1:
                    setv(name, rest[1:])
                elif i < len(args):
                    setv(name, args[i])
                    i += 1
                else:
                    raise HelmError("flag needs an argument: '%s' in -%s" % (c, a[1:]))
                rest = ""
        else:
            pos.append(a)
    return opts, pos


class HelpRequested(Exception):
    pass


def check_args(cmd, pos):
    how, n = COMMANDS[cmd]["args"]
    use = COMMANDS[cmd]["use"]
    if how == "min" and len(pos) < n:
        msg = '"helm %s" requires at least %d argument%s' % (cmd, n, "" if n == 1 else "s")
    elif how == "exact" and n == 0 and pos:
        msg = '"helm %s" accepts no arguments' % cmd
    elif how == "exact" and len(pos) != n:
        msg = '"helm %s" requires %d argument%s' % (cmd, n, "" if n == 1 else "s")
    else:
        return
    raise HelmError("%s\n\nUsage:  %s" % (msg, use))
