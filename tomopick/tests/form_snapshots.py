"""Open protocol forms in the real pyworkflow Tk form window and report their widgets.

Run as a script under an X server (Xvfb in tests):
``python -m tomopick.tests.form_snapshots OUTDIR ProtClass [ProtClass ...]``.
For every class it prints one JSON line {class, params, error} and, when
ImageMagick's ``import`` is available, saves OUTDIR/<class>.png.
"""
import json
import os
import shutil
import subprocess
import sys


def snapshot_forms(class_names, outdir, project_name="tomopick_forms"):
    outdir = os.path.abspath(outdir)  # the project becomes the working directory below
    import tomopick.protocols as protocols
    from pyworkflow.project import Manager
    import pyworkflow.gui.project  # noqa: F401  (resolves pyworkflow.gui.form's import cycle)
    from pyworkflow.gui.form import FormWindow

    manager = Manager()
    project = (manager.loadProject(project_name) if manager.hasProject(project_name)
               else manager.createProject(project_name))
    os.chdir(project.getPath())
    os.makedirs(outdir, exist_ok=True)
    grab = shutil.which("import")
    for name in class_names:
        result = {"class": name, "params": [], "error": None}
        try:
            prot = project.newProtocol(getattr(protocols, name))
            window = FormWindow(f"Protocol Run: {prot.getClassLabel()}", prot, lambda *a: None)
            window.root.deiconify()
            window.root.geometry("900x820+0+0")
            window.root.update()
            window.root.update()
            result["params"] = sorted(window.widgetDict)
            result["title"] = prot.getClassLabel()
            if grab:
                subprocess.run([grab, "-window", "root", "-crop", "900x820+0+0",
                                os.path.join(outdir, f"{name}.png")], check=False)
            window.root.destroy()
        except Exception as err:  # reported per form, so one broken form hides no other
            result["error"] = f"{type(err).__name__}: {err}"
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    from tomopick import environment
    environment.set_defaults()  # the Scipion environment, before pyworkflow loads
    snapshot_forms(sys.argv[2:], sys.argv[1])
