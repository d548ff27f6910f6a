"""A real one-node SLURM cluster on loopback, for the queue tests.

Debian's ``slurm-wlm`` and ``munge`` packages provide the daemons (`.ci/run`
installs them when missing). `SlurmCluster` writes everything it needs under
one temporary state folder - munge key and socket, ``slurm.conf`` describing
this machine (``slurmd -C``), spool/state folders, logs - starts ``munged``,
``slurmctld`` and ``slurmd`` there and stops them on `stop`. Nothing under
/etc or /run is touched, so it coexists with a system installation.

Clients find this cluster through ``SLURM_CONF`` (set in ``os.environ`` while
the cluster runs, so pyworkflow's ``sbatch``/``squeue``/``scancel`` calls and
the jobs see it). The partition oversubscribes its cores (``FORCE:4``) so
that several jobs run together on a small CI machine. Finished jobs are recorded by ``JobCompType=jobcomp/filetxt``
and read back with ``sacct --completion``: full accounting
(``accounting_storage/slurmdbd``) needs a MySQL server, which a test should not
start.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sacct", "sinfo")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here; the message says why (for a test skip)."""


def _free_ports(n):
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _find(program):
    # the daemons live in /usr/sbin, which a non-login PATH may lack
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


class SlurmCluster:
    """Start munged, slurmctld and slurmd for one node, ``localhost``.

    Parameters
    ----------
    partition : str
        Name of the single partition (the hosts.conf queue name).
    """

    def __init__(self, partition="cpu"):
        self.partition = partition
        self.dir = None
        self._env_before = None
        self._pids = {}

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout=60):
        """Start the daemons; raise SlurmUnavailable with the reason if they cannot run."""
        missing = [p for p in DAEMONS + CLIENTS if _find(p) is None]
        if missing:
            raise SlurmUnavailable(
                f"SLURM is not installed ({', '.join(missing)} missing): "
                "apt-get install slurm-wlm munge (.ci/run does it)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd needs root (it launches jobs as their user)")
        self.dir = tempfile.mkdtemp(prefix="tomopick-slurm-")
        os.chmod(self.dir, 0o755)
        atexit.register(self.stop)  # daemons never outlive an interrupted test run
        try:
            self._start_munge()
            self._write_conf()
            self._env_before = os.environ.get("SLURM_CONF")
            os.environ["SLURM_CONF"] = self.conf
            self._start("slurmctld", [_find("slurmctld"), "-D", "-f", self.conf])
            self._start("slurmd", [_find("slurmd"), "-D", "-f", self.conf, "-N", "localhost"])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Cancel what is left, stop the daemons, delete the state folder."""
        if self.dir is None:
            return
        if "slurmctld" in self._pids and self._pids["slurmctld"].poll() is None:
            # jobs outlive slurmd (slurmstepd runs them): cancel them and wait until gone
            subprocess.run([_find("scancel"), "--full", "--partition", self.partition],
                           env=self.env(), capture_output=True, timeout=30)
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if not self.squeue():
                        break
                except (RuntimeError, subprocess.TimeoutExpired):
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self._pids.pop(name, None)
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._env_before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._env_before
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -------------------------------------------------------------- clients
    def env(self):
        """Environment for a client command of this cluster."""
        return dict(os.environ, SLURM_CONF=self.conf)

    def command(self, *args, check=True):
        """Run a SLURM client (``squeue``, ``sacct``...) and return its stdout."""
        result = subprocess.run([_find(args[0]), *args[1:]], env=self.env(),
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def squeue(self):
        """{job id: state} of the jobs in the queue (pending/running)."""
        out = self.command("squeue", "-h", "-o", "%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def sacct(self):
        """{job id: state} of finished jobs, from the job completion log."""
        out = self.command("sacct", "--completion", "-n", "-P", "-o", "jobid,state")
        rows = (line.split("|") for line in out.splitlines() if line.strip())
        return {row[0]: row[1] for row in rows}

    def log(self, name, suffix=".log"):
        """End of a daemon's log (``.out``: its console output), for failure messages."""
        try:
            with open(os.path.join(self.dir, name + suffix)) as handle:
                return handle.read()[-4000:]
        except OSError:
            return ""

    # ------------------------------------------------------------- internals
    @property
    def conf(self):
        return os.path.join(self.dir, "slurm.conf")

    def _start(self, name, args):
        out = open(os.path.join(self.dir, f"{name}.out"), "w")
        self._pids[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                            env=dict(os.environ, SLURM_CONF=self.conf),
                                            start_new_session=True)
        out.close()

    def _start_munge(self):
        key = os.path.join(self.dir, "munge.key")
        with open(key, "wb") as handle:
            handle.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = os.path.join(self.dir, "munge.socket")
        self._start("munged", [
            _find("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
            f"--key-file={key}", f"--pid-file={os.path.join(self.dir, 'munged.pid')}",
            f"--log-file={os.path.join(self.dir, 'munged.log')}",
            f"--seed-file={os.path.join(self.dir, 'munged.seed')}"])
        deadline = time.time() + 20
        while not os.path.exists(self.munge_socket):
            if self._pids["munged"].poll() is not None or time.time() > deadline:
                raise SlurmUnavailable("munged did not start: " + self.log("munged", ".out"))
            time.sleep(0.1)

    def _node_line(self):
        # "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105": this machine's cores/memory
        out = subprocess.run([_find("slurmd"), "-C"], capture_output=True, text=True,
                             timeout=30).stdout
        line = next((l for l in out.splitlines() if l.startswith("NodeName=")), None)
        if line is None:
            raise SlurmUnavailable(f"slurmd -C gave no node description: {out!r}")
        return ("NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost "
                + " ".join(line.split()[1:]))

    def _write_conf(self):
        ctld_port, d_port = _free_ports(2)
        d = self.dir
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        conf = f"""\
ClusterName=tomopick
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
InactiveLimit=0
KillWait=2
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
{self._node_line()} State=UNKNOWN
PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""
        with open(self.conf, "w") as handle:
            handle.write(conf)

    def _wait_idle(self, timeout):
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for name, process in self._pids.items():
                if process.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited ({process.returncode}): "
                                           + (self.log(name, ".out") or self.log(name)))
            result = subprocess.run([_find("sinfo"), "-h", "-N", "-o", "%T"], env=self.env(),
                                    capture_output=True, text=True, timeout=30)
            state = result.stdout.strip()
            if result.returncode == 0 and state.startswith("idle"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"the node did not become idle in {timeout} s (state "
                               f"{state!r}): {self.log('slurmd')}")
