"""helm-sim's code: a simulated helm 3.17 CLI that keeps release state on disk.

tests/helm-sim/helm is the entry point; sim.main() runs one command. Modules (each imports
only those before it): consts, formats, storage, cli, releases, charts, commands, sim.
See tests/helm-sim/README.md.
"""
