"""Sane defaults for the environment pyworkflow needs, for users who never set it.

Only variables that are unset are given a value, so a real Scipion
installation (with its own SCIPION_HOME, hosts.conf, ...) is left untouched.
This module must not import pyworkflow: pyworkflow reads the environment when
it is first imported.
"""
import os
import sys

HOSTS_TEMPLATE = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME = localhost
ADDRESS = localhost
SCIPION_HOME = {home}
SCIPION_USER_DATA = {user_data}
"""


def config_dir():
    """Folder for tomopick's own Scipion configuration (hosts.conf)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "tomopick")


def set_defaults(user_data=None):
    """Fill in SCIPION_* variables that are not set, writing a default hosts.conf.

    Parameters
    ----------
    user_data : str, optional
        Where projects go (SCIPION_USER_DATA) if it is not set already;
        ``~/ScipionUserData`` (Scipion's own default) when omitted.

    Returns
    -------
    dict
        The variables this call set (name -> value).
    """
    defaults = {
        "SCIPION_DOMAIN": "pwem",
        # protocol subprocesses must run with the interpreter that has tomopick
        "SCIPION_PYTHON": sys.executable,
        "SCIPION_USER_DATA": user_data or os.path.join(os.path.expanduser("~"), "ScipionUserData"),
        "SCIPION_HOME": os.path.join(config_dir(), "scipion"),
        "SCIPION_TEST_NOSYNC": "1",
        "SCIPION_NOTIFY": "False",
    }
    changed = {name: value for name, value in defaults.items() if not os.environ.get(name)}
    os.environ.update(changed)
    if not os.environ.get("SCIPION_HOSTS"):
        hosts = os.path.join(os.environ["SCIPION_HOME"], "config", "hosts.conf")
        if not os.path.exists(hosts):
            os.makedirs(os.path.dirname(hosts), exist_ok=True)
            with open(hosts, "w") as handle:
                handle.write(HOSTS_TEMPLATE.format(home=os.environ["SCIPION_HOME"],
                                                   user_data=os.environ["SCIPION_USER_DATA"]))
        os.environ["SCIPION_HOSTS"] = hosts
        changed["SCIPION_HOSTS"] = hosts
    os.makedirs(os.environ["SCIPION_USER_DATA"], exist_ok=True)
    return changed
