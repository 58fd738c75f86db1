#!/usr/bin/python3
"""kube-emulator: an emulated Kubernetes API server for real helm 3 and kubectl.

Python 3 standard library only; plain HTTP, or TLS as well with --tls. Serves discovery,
/version, /openapi/v3, CRUD + list + watch + patch (merge, JSON, strategic merge, apply) of
the built-in kinds helm charts use (and of kinds defined by CRDs), decodes the protobuf
bodies helm's release storage sends, runs emulated controllers and a kubelet (Deployments ->
ReplicaSets -> Pods, StatefulSets, DaemonSets, Jobs), garbage collects by ownerReferences,
authenticates, impersonates and enforces RBAC, and persists its state to a directory.

This file is the entry point (same command line as ever); the code is the emulator/ package
beside it, found through this file's real path. Imported as a module (tests/kube_emulator.t
does), it exposes authorize() and forbidden(). See tests/kube/README.md.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from emulator.main import main  # noqa: E402
from emulator.rbac import authorize, forbidden  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
