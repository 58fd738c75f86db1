"""Charts: Chart.yaml parsing (the few keys helm-sim reads), reading a local chart directory or
packaged .tgz, and the rendered manifest stored with a release."""
import json
import os

from .consts import HelmError


def parse_chart_yaml(text):
    meta = {}
    for line in text.splitlines():
        if not line or line[0] in " \t#-":
            continue
        key, sep, val = line.partition(":")
        if not sep:
            continue
        val = val.strip()
        if val[:1] in ("'", '"'):
            q = val[0]
            end = val.find(q, 1)
            val = val[1:end] if end > 0 else val[1:]
        else:
            val = val.split(" #", 1)[0].strip()
        meta[key.strip()] = val
    return meta


def read_local_chart(path):
    if os.path.isdir(path):
        try:
            with open(os.path.join(path, "Chart.yaml"), encoding="utf-8") as f:
                y = parse_chart_yaml(f.read())
        except FileNotFoundError:
            raise HelmError("Chart.yaml file is missing")
    else:
        import tarfile
        try:
            with tarfile.open(path) as tf:
                member = next((m for m in tf.getmembers()
                               if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")), None)
                if member is None:
                    raise HelmError("Chart.yaml file is missing")
                y = parse_chart_yaml(tf.extractfile(member).read().decode("utf-8"))
        except (tarfile.TarError, OSError) as e:
            raise HelmError("file '%s' does not appear to be a gzipped archive; got '%s'" % (path, e))
    if not y.get("name"):
        raise HelmError("validation: chart.metadata.name is required")
    if not y.get("version"):
        raise HelmError("validation: chart.metadata.version is required")
    meta = {"name": y["name"], "version": y["version"]}
    if y.get("description"):
        meta["description"] = y["description"]
    meta["apiVersion"] = y.get("apiVersion") or "v1"
    if y.get("appVersion"):
        meta["appVersion"] = y["appVersion"]
    if y.get("type"):
        meta["type"] = y["type"]
    return meta


def render_manifest(name, meta, config):
    return ("---\n# Source: %(chart)s/templates/configmap.yaml\napiVersion: v1\nkind: ConfigMap\n"
            "metadata:\n  name: %(name)s-%(chart)s\n  labels:\n    app.kubernetes.io/instance: %(name)s\n"
            "    app.kubernetes.io/managed-by: Helm\n    helm.sh/chart: %(chart)s-%(version)s\n"
            "data:\n  values.json: %(values)s\n"
            % {"chart": meta["name"], "name": name, "version": meta["version"],
               "values": json.dumps(json.dumps(config or {}, separators=(",", ":")))})
