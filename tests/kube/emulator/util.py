"""Shared basics: the emulated version, the emulator's chart annotations, the log, time stamps,
copying helpers (deepcopy, strip_nulls, copy-on-write dsub) and random/hashed name suffixes."""
import datetime
import hashlib
import json
import random
import sys
import threading


VERSION = "v1.31.0"
EMU_READY = "emulator.helmq.dev/ready"  # "never": the pod (and its workload) never becomes ready
EMU_JOB = "emulator.helmq.dev/job"  # "fail": the Job's pods fail, the Job fails (BackoffLimitExceeded)

LOG_LEVELS = {"debug": 10, "info": 20, "error": 40}
_log_level = 20
_log_file = sys.stderr
_log_lock = threading.Lock()


def log(level, msg):
    if LOG_LEVELS[level] < _log_level:
        return
    line = "%s kube-emulator %s %s\n" % (
        datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3], level.upper(), msg)
    with _log_lock:
        try:
            _log_file.write(line)
            _log_file.flush()
        except (OSError, ValueError):
            pass


def now_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_age(ts):
    try:
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return "<unknown>"
    s = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    if s < 120:
        return "%ds" % max(s, 0)
    if s < 7200:
        return "%dm" % (s // 60)
    if s < 172800:
        return "%dh" % (s // 3600)
    return "%dd" % (s // 86400)


def deepcopy(o):
    return json.loads(json.dumps(o))


def strip_nulls(o):
    """What decoding into the typed structs of the real API server does to JSON nulls."""
    if isinstance(o, dict):
        return {k: strip_nulls(v) for k, v in o.items() if v is not None}
    if isinstance(o, list):
        return [strip_nulls(v) for v in o]
    return o


def dsub(parent, key):
    """parent[key] as a dict, created (or replacing a null) when needed."""
    v = parent.get(key)
    if not isinstance(v, dict):
        v = parent[key] = {}
    return v


SAFE = "bcdfghjklmnpqrstvwxz2456789"


def rand_suffix(n=5):
    return "".join(random.choice(SAFE) for _ in range(n))


def hash10(obj):
    h = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).digest()
    return "".join(SAFE[b % len(SAFE)] for b in h[:10])
