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


def run_workflow(name_or_path, project_name, values=None, log=print):
    """Load a workflow into a project (created if missing) and run it, waiting.

    Protocols run one after the other in the order of the file; a failure stops
    the run (later protocols depend on earlier outputs).

    Returns
    -------
    list of dict
        Per protocol: ``label``, ``status``, ``error``, ``seconds`` (wall), ``cpu_seconds``
        (user + system of the protocol's process, all its threads), ``protocol``.
    """
    import resource
    import time
    from pyworkflow.project import Manager

    path = resolve_workflow(name_or_path)
    text = workflow_json(path, values)
    manager = Manager()
    if manager.hasProject(project_name):
        project = manager.loadProject(project_name)
    else:
        project = manager.createProject(project_name)
    # launchProtocol copies project.sqlite by a path relative to the project
    os.chdir(project.getPath())
    protocols = project.loadProtocols(jsonStr=text)
    # loadProtocols passes object.label to constructors that drop it: set it here
    labels = {str(d["object.id"]): d.get("object.label") for d in json.loads(text)}
    for prot_id, prot in protocols.items():
        if labels.get(str(prot_id)):
            prot.setObjLabel(labels[str(prot_id)])
            project.saveProtocol(prot)
    log(f"Project {project_name} ({project.getPath()}): {len(protocols)} protocols "
        f"from {os.path.basename(path)}")
    results = []
    for prot in protocols.values():
        start, cpu = time.time(), _children_cpu(resource)
        project.launchProtocol(prot, wait=True)
        prot = project.getProtocol(prot.getObjId())
        result = {"label": prot.getObjLabel() or prot.getClassName(), "status": prot.getStatus(),
                  "error": prot.getErrorMessage() if prot.isFailed() else "",
                  "seconds": time.time() - start, "cpu_seconds": _children_cpu(resource) - cpu,
                  "protocol": prot}
        results.append(result)
        log(f"  {result['label']:<40s} {result['status']:<9s} {result['seconds']:6.1f} s "
            f"({result['cpu_seconds']:.1f} s CPU)")
        if result["status"] != "finished":
            break
    return results


def _children_cpu(resource):
    """CPU seconds (user + system) of the finished child processes (the protocols run
    in a waited child process, so this counts each protocol's threads too)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
