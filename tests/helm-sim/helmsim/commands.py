"""The subcommands (a mixin of sim.Sim): install, upgrade, rollback, uninstall, status,
history, list and version, with helm 3.17's lifecycle, texts and output shapes."""
import json
import sys

from .cli import DEFAULTS, goquote
from .consts import ERR_NOT_FOUND, ERR_PENDING, HelmError, PENDING, SIM_VERSION
from .formats import ansic, go_json, go_time_string, now_ns, rfc3339nano, table, yaml_dump
from .releases import chart_label, go_atoi, max_history, prune, validate_name


class CommandsMixin:
    """cmd_NAME(opts, pos) -> exit code, one per subcommand; run() dispatches to them."""

    # -- subcommands
    def cmd_install(self, opts, pos):
        if len(pos) < 2:
            raise HelmError("INSTALLATION FAILED: must either provide a name or specify --generate-name")
        if len(pos) > 2:
            raise HelmError("INSTALLATION FAILED: expected at most two arguments, unexpected "
                            "arguments: %s" % ", ".join(pos[2:]))
        name = self.release
        try:
            chart = self.locate_chart(pos[1], opts.get("version", ""))
            config, _ = self.merge_values(opts.get("values"))
            knob = self.knobs("install")
            self.check_reachable(knob)
            err = validate_name(name)
            if err:
                raise HelmError('release name %s: %s' % (goquote(name), err))
        except HelmError as e:
            raise HelmError("INSTALLATION FAILED: %s" % e)
        self.install_signals("cancel")
        ns = self.namespace
        with self.store.lock(ns, name):
            revs = self.store.load(ns, name)
            if revs:
                raise HelmError("INSTALLATION FAILED: cannot re-use a name that is still in use")
            rel = self.new_release(name, chart, config, 1, "pending-install", "Initial install underway")
            self.store.save(ns, name, [rel])
        err = self.work("install", knob, opts.get("timeout", DEFAULTS["timeout"]))
        with self.store.lock(ns, name):
            revs = self.store.load(ns, name)
            for r in revs:
                if r["version"] == 1:
                    if err is None:
                        r["info"]["status"] = "deployed"
                        r["info"]["description"] = opts.get("description") or "Install complete"
                    else:
                        r["info"]["status"] = "failed"
                        r["info"]["description"] = 'Release %s failed: %s' % (goquote(name), err)
                    rel = r
            self.store.save(ns, name, revs)
        self.log_extra.update(revision=1, status=rel["info"]["status"])
        if err is not None:
            raise HelmError("INSTALLATION FAILED: %s" % err)
        self.print_release(rel, opts.get("output", "table"))
        return 0

    def cmd_upgrade(self, opts, pos):
        name = self.release
        chart = self.locate_chart(pos[1], opts.get("version", ""))
        config, _ = self.merge_values(opts.get("values"))
        try:
            knob = self.knobs("upgrade")
            self.check_reachable(knob)
            if validate_name(name):
                raise HelmError("release name is invalid: %s" % name)
        except HelmError as e:
            raise HelmError("UPGRADE FAILED: %s" % e)
        self.install_signals("cancel")
        ns = self.namespace
        with self.store.lock(ns, name):
            revs = self.store.load(ns, name)
            if not revs:
                raise HelmError('UPGRADE FAILED: %s has no deployed releases' % goquote(name))
            last = revs[-1]
            if last["info"]["status"] in PENDING:
                raise HelmError("UPGRADE FAILED: " + ERR_PENDING)
            if last["info"]["status"] == "deployed":
                current = last
            else:
                deployed = [r for r in revs if r["info"]["status"] == "deployed"]
                if deployed:
                    current = deployed[-1]
                elif last["info"]["status"] in ("failed", "superseded"):
                    current = last
                else:
                    raise HelmError('UPGRADE FAILED: %s has no deployed releases' % goquote(name))
            version = last["version"] + 1
            revs = prune(revs, max_history())
            rel = self.new_release(name, chart, config, version, "pending-upgrade", "Preparing upgrade",
                                   first=current["info"]["first_deployed"])
            revs.append(rel)
            self.store.save(ns, name, revs)
            current_version = current["version"]
        err = self.work("upgrade", knob, opts.get("timeout", DEFAULTS["timeout"]))
        with self.store.lock(ns, name):
            revs = self.store.load(ns, name)
            for r in revs:
                if r["version"] == version:
                    if err is None:
                        r["info"]["status"] = "deployed"
                        r["info"]["description"] = opts.get("description") or "Upgrade complete"
                    else:
                        r["info"]["status"] = "failed"
                        r["info"]["description"] = 'Upgrade %s failed: %s' % (goquote(name), err)
                    rel = r
                elif r["version"] == current_version and err is None:
                    r["info"]["status"] = "superseded"
            self.store.save(ns, name, revs)
        self.log_extra.update(revision=version, status=rel["info"]["status"])
        if err is not None:
            raise HelmError("UPGRADE FAILED: %s" % err)
        self.print_release(rel, opts.get("output", "table"),
                           header='Release %s has been upgraded. Happy Helming!\n' % goquote(name))
        return 0

    def cmd_rollback(self, opts, pos):
        name = self.release
        target = 0
        if len(pos) > 1:
            target = go_atoi(pos[1])
        self.install_signals("die")
        knob = self.knobs("rollback")
        self.check_reachable(knob)
        if validate_name(name):
            raise HelmError("prepareRollback: Release name is invalid: %s" % name)
        if target < 0:
            raise HelmError("invalid release revision number")
        ns = self.namespace
        with self.store.lock(ns, name):
            revs = self.store.load(ns, name)
            if not revs:
                raise HelmError(ERR_NOT_FOUND)
            current = revs[-1]
            prev_v = target or current["version"] - 1
            prev = [r for r in revs if r["version"] == prev_v]
            if not prev:
                raise HelmError("release has no %d version" % prev_v)
            prev = prev[0]
            version = current["version"] + 1
            rel = json.loads(json.dumps(prev))
            rel["info"] = {"first_deployed": current["info"]["first_deployed"],
                           "last_deployed": rfc3339nano(now_ns()), "deleted": "",
                           "description": "Rollback to %d" % prev_v, "status": "pending-rollback"}
            if prev["info"].get("notes"):
                rel["info"]["notes"] = prev["info"]["notes"]
            rel["version"] = version
            rel["namespace"] = current["namespace"]
            revs = prune(revs, max_history())
            revs.append(rel)
            self.store.save(ns, name, revs)
            current_version = current["version"]
        err = self.work("rollback", knob, opts.get("timeout", DEFAULTS["timeout"]))
        with self.store.lock(ns, name):
            revs = self.store.load(ns, name)
            for r in revs:
                if r["version"] == version:
                    continue
                if err is None and r["info"]["status"] == "deployed":
                    r["info"]["status"] = "superseded"
                elif err is not None and err != "context deadline exceeded" and r["version"] == current_version:
                    r["info"]["status"] = "superseded"
            for r in revs:
                if r["version"] == version:
                    if err is None:
                        r["info"]["status"] = "deployed"
                    elif err == "context deadline exceeded":
                        r["info"]["status"] = "failed"
                        r["info"]["description"] = "Release %s failed: %s" % (goquote(name), err)
                    else:
                        r["info"]["status"] = "failed"
                        r["info"]["description"] = "Rollback %s failed: %s" % (goquote(name), err)
                    rel = r
            self.store.save(ns, name, revs)
        self.log_extra.update(revision=version, status=rel["info"]["status"])
        if err == "context deadline exceeded":
            raise HelmError("release %s failed: %s" % (name, err))
        if err is not None:
            raise HelmError(err)
        sys.stdout.write("Rollback was a success! Happy Helming!\n")
        return 0

    def cmd_uninstall(self, opts, pos):
        self.install_signals("die")
        for name in pos:
            self.release = name
            self.uninstall_one(name, opts)
            sys.stdout.write('release "%s" uninstalled\n' % name)
        return 0

    def uninstall_one(self, name, opts):
        knob = self.knobs("uninstall")
        self.check_reachable(knob)
        if validate_name(name):
            raise HelmError("uninstall: Release name is invalid: %s" % name)
        ns = self.namespace
        timeout = opts.get("timeout", DEFAULTS["timeout"])
        with self.store.lock(ns, name):
            revs = self.store.load(ns, name)
            if not revs:
                raise HelmError("uninstall: Release not loaded: %s: %s" % (name, ERR_NOT_FOUND))
            rel = revs[-1]
            if rel["info"]["status"] == "uninstalled":
                self.store.save(ns, name, [])
                return
            if not knob.get("fail"):
                # The pre-delete stage passed: helm records the release as uninstalling.
                rel["info"]["status"] = "uninstalling"
                rel["info"]["deleted"] = rfc3339nano(now_ns())
                rel["info"]["description"] = "Deletion in progress (or silently failed)"
                self.store.save(ns, name, revs)
        err = self.work("uninstall", knob, timeout)
        if knob.get("fail"):
            # A failing pre-delete hook: helm returns before touching the stored release.
            raise HelmError(err or str(knob["fail"]))
        with self.store.lock(ns, name):
            # Without --keep-history helm purges every revision, even when deletion had errors.
            self.store.save(ns, name, [])
        self.log_extra.update(status="uninstalled")
        if err is not None:
            raise HelmError("uninstallation completed with 1 error(s): %s" % err)

    def cmd_status(self, opts, pos):
        name = self.release
        knob = self.knobs("status")
        self.check_reachable(knob)
        if validate_name(name):
            raise HelmError("releaseContent: Release name is invalid: %s" % name)
        if knob.get("fail"):
            raise HelmError(str(knob["fail"]))
        revs = self.store.load(self.namespace, name)
        if not revs:
            raise HelmError(ERR_NOT_FOUND)
        self.print_release(revs[-1], opts.get("output", "table"))
        return 0

    def cmd_history(self, opts, pos):
        name = self.release
        knob = self.knobs("history")
        self.check_reachable(knob)
        if validate_name(name):
            raise HelmError("release name is invalid: %s" % name)
        if knob.get("fail"):
            raise HelmError(str(knob["fail"]))
        revs = self.store.load(self.namespace, name)
        if not revs:
            raise HelmError(ERR_NOT_FOUND)
        n = opts.get("max", DEFAULTS["max"])
        revs = revs[-n:] if n > 0 else []
        rows = [{"revision": r["version"], "updated": r["info"]["last_deployed"],
                 "status": r["info"]["status"], "chart": chart_label(r),
                 "app_version": r["chart"]["metadata"].get("appVersion", ""),
                 "description": r["info"]["description"]} for r in revs]
        fmt = opts.get("output", "table")
        if fmt == "json":
            sys.stdout.write(go_json(rows))
        elif fmt == "yaml":
            sys.stdout.write(yaml_dump(rows))
        else:
            sys.stdout.write(table([("REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION", "DESCRIPTION")]
                                   + [(x["revision"], ansic(x["updated"]), x["status"], x["chart"],
                                       x["app_version"], x["description"]) for x in rows]))
        return 0

    def cmd_list(self, opts, pos):
        self.check_reachable({})
        ns = self.namespace
        rows = []
        for name in self.store.list_names(ns):
            revs = self.store.load(ns, name)
            if not revs:
                continue
            r = revs[-1]
            st = r["info"]["status"]
            if not opts.get("all") and st not in ("deployed", "failed"):
                continue
            rows.append({"name": r["name"], "namespace": r["namespace"], "revision": str(r["version"]),
                         "updated": go_time_string(r["info"]["last_deployed"]), "status": st,
                         "chart": chart_label(r),
                         "app_version": r["chart"]["metadata"].get("appVersion", "")})
        fmt = opts.get("output", "table")
        if fmt == "json":
            sys.stdout.write(go_json(rows))
        elif fmt == "yaml":
            sys.stdout.write(yaml_dump(rows))
        else:
            sys.stdout.write(table([("NAME", "NAMESPACE", "REVISION", "UPDATED", "STATUS", "CHART",
                                     "APP VERSION")] + [tuple(x.values()) for x in rows]))
        return 0

    def cmd_version(self, opts, pos):
        if opts.get("short"):
            sys.stdout.write(SIM_VERSION + "\n")
        else:
            sys.stdout.write('version.BuildInfo{Version:"%s", GitCommit:"", GitTreeState:"", '
                             'GoVersion:"helm-sim (python %d.%d)"}\n' % ((SIM_VERSION,) + sys.version_info[:2]))
        return 0
