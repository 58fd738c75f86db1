"""kube-emulator's code: an emulated Kubernetes API server for real helm 3 and kubectl.

tests/kube/kube-emulator.py is the entry point; main.main(argv) runs the server. Modules
(each imports only those before it in this list): util, errors, resources, selectors, patch,
protobuf, rbac, defaults, store, controllers, discovery, tables, authn, watch, handler, main.
See tests/kube/README.md.
"""
