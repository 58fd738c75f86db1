"""Constants and exception types: the simulated version, helm's release statuses, helm's error
texts for invalid names, missing releases and pending operations; HelmError and Cancelled."""



SIM_VERSION = "v3.17.3-sim"
DEFAULT_MAX_HISTORY = 10

STATUSES = ("unknown", "deployed", "uninstalled", "superseded", "failed",
            "uninstalling", "pending-install", "pending-upgrade", "pending-rollback")
PENDING = ("pending-install", "pending-upgrade", "pending-rollback")

NAME_REGEX = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ERR_INVALID_NAME = ("invalid release name, must match regex %s and the length must "
                    "not be longer than 53" % NAME_REGEX)
ERR_NOT_FOUND = "release: not found"
ERR_PENDING = "another operation (install/upgrade/rollback) is in progress"


class HelmError(Exception):
    """An error helm prints as 'Error: <msg>' on stderr before exiting 1."""


class Cancelled(Exception):
    """Raised from the SIGTERM/SIGINT handler while an install/upgrade waits."""
