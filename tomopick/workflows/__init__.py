"""Saved workflow templates and running them headless in a project.

A template is a pyworkflow workflow (the JSON that ``Project.exportProtocols``
writes) whose data paths are template fields ``~Title|default|type|alias~``,
the format of Scipion's own templates (``pyworkflow.template``). The Scipion
GUI lists them through ``Plugin.getTemplates``; ``tomopick run`` fills the
fields and runs every protocol in order.
"""
import glob
import json
import os

import psutil
from pyworkflow.template import LocalTemplate

TEMPLATE_SUFFIX = ".json.template"
WORKFLOWS_DIR = os.path.dirname(os.path.abspath(__file__))


def template_names():
    """Names of the built-in templates (file names without the suffix)."""
    return sorted(os.path.basename(p)[:-len(TEMPLATE_SUFFIX)]
                  for p in glob.glob(os.path.join(WORKFLOWS_DIR, "*" + TEMPLATE_SUFFIX)))


def resolve_workflow(name_or_path):
    """Path of a workflow given a file path or the name of a built-in template."""
    if os.path.exists(name_or_path):
        return os.path.abspath(name_or_path)
    builtin = os.path.join(WORKFLOWS_DIR, name_or_path + TEMPLATE_SUFFIX)
    if os.path.exists(builtin):
        return builtin
    raise FileNotFoundError(f"no workflow file {name_or_path!r} and no built-in template of that "
                            f"name (built-in: {', '.join(template_names())})")


def workflow_json(path, values=None):
    """The workflow of a file as a JSON string, template fields filled in.

    Parameters
    ----------
    path : str
        A ``.json`` workflow or a ``.json.template``.
    values : dict of str -> str, optional
        Values of template fields by alias; the others keep their defaults.

    Raises
    ------
    ValueError
        If a value does not fit its field, an alias is unknown, or the result
        is not valid JSON.
    """
    values = dict(values or {})
    if path.endswith(TEMPLATE_SUFFIX):
        template = LocalTemplate("tomopick", path)
        # fills %(VAR)s from the environment and splits the ~fields~ (Scipion's own order)
        template.replaceEnvVariables()
        template.parseContent()
        known = {p.getAlias() for p in template.getParams().values()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{os.path.basename(path)} has no field {', '.join(unknown)} "
                             f"(fields: {', '.join(sorted(a for a in known if a))})")
        for alias, value in values.items():
            try:
                template.setParamValue(alias, value)
            except Exception as err:
                raise ValueError(str(err)) from err
        template._replaceFields()
        text = "".join(template.getContent())
    else:
        if values:
            raise ValueError(f"{path} is a plain workflow: it has no fields to set")
        with open(path) as handle:
            text = handle.read()
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a valid workflow: {err}") from err
    return text


RUNS_RECORD = "tomopick_runs.json"


def _records(project):
    path = os.path.join(project.getPath(), RUNS_RECORD)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return json.load(handle)


def _process_alive(pid):
    """Whether a protocol's process still runs (True when it is unknown: queued jobs have no pid).

    pyworkflow refreshes a run's status from its database only, so a run whose process was
    killed stays 'running'; a killed process can also linger as a zombie where nothing reaps it.
    """
    if not pid:
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _add_record(project, record):
    from tomopick.core.atomic import atomic_path
    records = _records(project) + [record]
    with atomic_path(os.path.join(project.getPath(), RUNS_RECORD)) as tmp:
        with open(tmp, "w") as handle:
            json.dump(records, handle, indent=1)


def _previous_run(project, path, values):
    """The protocol ids of the last run of this workflow (same file and values), or None."""
    for record in reversed(_records(project)):
        if record["workflow"] == path and record["values"] == values:
            if all(project.doesProtocolExists(i) for i in record["protocols"]):
                return record["protocols"]
    return None


def run_workflow(name_or_path, project_name, values=None, log=print, resume=None):
    """Load a workflow into a project (created if missing) and run it, waiting.

    Protocols run one after the other in the order of the file; a failure stops
    the run (later protocols depend on earlier outputs). A run that was killed
    (or failed) continues where it stopped when run again: the protocols of the
    previous run of the same workflow with the same values are reused, finished
    ones are skipped and the others relaunched in Scipion's resume ("Continue")
    mode, in which their finished steps (e.g. tomograms) are not redone.

    Parameters
    ----------
    name_or_path, project_name, values, log
        The workflow (file or built-in template name), the project, the
        template values by alias, and where progress lines go.
    resume : bool or None, optional
        None (default): continue the previous run of this workflow in the
        project when there is one, else load the workflow anew. True: continue
        it (ValueError if there is none). False: always load a fresh copy.

    Returns
    -------
    list of dict
        Per protocol: ``label``, ``status``, ``error``, ``seconds`` (wall), ``cpu_seconds``
        (user + system of the protocol's process, all its threads; 0 for a protocol of an
        earlier run), ``protocol``, ``resumed`` (True for a protocol already finished by an
        earlier run).
    """
    import resource
    import time
    from pyworkflow.project import Manager
    from pyworkflow.protocol.constants import MODE_RESUME

    path = resolve_workflow(name_or_path)
    values = {str(k): str(v) for k, v in (values or {}).items()}
    text = workflow_json(path, values)
    manager = Manager()
    if manager.hasProject(project_name):
        project = manager.loadProject(project_name)
    else:
        project = manager.createProject(project_name)
    # launchProtocol copies project.sqlite by a path relative to the project
    os.chdir(project.getPath())
    previous = _previous_run(project, path, values) if resume is not False else None
    if resume and previous is None:
        raise ValueError(f"project {project_name} has no earlier run of "
                         f"{os.path.basename(path)} with these values to continue")
    if previous is not None:
        # the runs' status as their databases say (a killed run still says running)
        project.getRuns(refresh=True)
        protocols = {i: project.getProtocol(i) for i in previous}
        log(f"Project {project_name} ({project.getPath()}): continuing the run of "
            f"{os.path.basename(path)} ({len(protocols)} protocols)")
    else:
        protocols = project.loadProtocols(jsonStr=text)
        # loadProtocols passes object.label to constructors that drop it: set it here
        labels = {str(d["object.id"]): d.get("object.label") for d in json.loads(text)}
        for prot_id, prot in protocols.items():
            if labels.get(str(prot_id)):
                prot.setObjLabel(labels[str(prot_id)])
                project.saveProtocol(prot)
        _add_record(project, {"workflow": path, "values": values,
                              "protocols": [p.getObjId() for p in protocols.values()]})
        log(f"Project {project_name} ({project.getPath()}): {len(protocols)} protocols "
            f"from {os.path.basename(path)}")
    results = []
    for prot in protocols.values():
        start, cpu = time.time(), _children_cpu(resource)
        done = prot.isFinished()
        if prot.isActive() and _process_alive(prot.getPid()):
            raise ValueError(f"{prot.getRunName()} is still running (another `tomopick run` "
                             f"or the GUI launched it): wait for it or stop it first")
        if not done:
            prot.runMode.set(MODE_RESUME)  # finished steps of a killed run are kept
            project.launchProtocol(prot, wait=True)
            prot = project.getProtocol(prot.getObjId())
        result = {"label": prot.getObjLabel() or prot.getClassName(), "status": prot.getStatus(),
                  "error": prot.getErrorMessage() if prot.isFailed() else "",
                  "seconds": time.time() - start, "cpu_seconds": _children_cpu(resource) - cpu,
                  "protocol": prot, "resumed": done}
        results.append(result)
        log(f"  {result['label']:<40s} {result['status']:<9s} {result['seconds']:6.1f} s "
            f"({result['cpu_seconds']:.1f} s CPU)" + ("  (earlier run)" if done else ""))
        if result["status"] != "finished":
            break
    return results


def _children_cpu(resource):
    """CPU seconds (user + system) of the finished child processes (the protocols run
    in a waited child process, so this counts each protocol's threads too)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
