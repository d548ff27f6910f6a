"""Rendering the viewers without a screen (tests, screenshots, CI).

napari draws with OpenGL. Qt's ``offscreen`` platform has no OpenGL context,
so its canvas renders nothing; a virtual X server (Xvfb) with Mesa's software
renderer (llvmpipe) renders exactly what a screen would. `virtual_display`
starts a private Xvfb and points Qt at it.

System packages (Debian 12), besides Python's own: ``xvfb`` (the server) and
Mesa's software OpenGL ``libgl1-mesa-dri libglx-mesa0``, plus the X libraries
PyQt5's wheel links but does not ship::

    apt-get install -y xvfb libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 \
        libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
        libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1 libfontconfig1

(on the reference machine only ``xvfb libxcb-icccm4 libxcb-keysyms1
libxcb-xinerama0`` were missing). Without them the viewers still import and
their widgets run on Qt's ``offscreen`` platform; only rendering is lost.
"""
import os
import shutil
import subprocess
import sys

_SERVER = None


def virtual_display(width=1280, height=1024):
    """Start (once per process) a private Xvfb and make Qt use it.

    Must run before Qt creates its QApplication. Sets ``DISPLAY`` and
    ``QT_QPA_PLATFORM=xcb``.

    Returns
    -------
    str or None
        The display (``":N"``), or None when Xvfb is not installed or Qt's
        xcb platform cannot load (missing system libraries), in which case
        nothing is changed (Qt keeps e.g. ``offscreen``: widgets work, the
        napari canvas does not render).
    """
    global _SERVER
    if _SERVER is not None:
        return os.environ["DISPLAY"]
    widgets = sys.modules.get("PyQt5.QtWidgets")
    if widgets is not None and widgets.QApplication.instance() is not None:
        # Qt already runs on some platform; it cannot be switched any more
        app = widgets.QApplication.instance()
        return os.environ.get("DISPLAY") if app.platformName() == "xcb" else None
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return None
    read_fd, write_fd = os.pipe()
    # -displayfd: the server picks a free display number and writes it back
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number or not _qt_starts_on(f":{number}"):
        process.kill()
        process.wait()
        return None
    _SERVER = process
    import atexit

    atexit.register(_stop)
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    return os.environ["DISPLAY"]


def _qt_starts_on(display):
    """Whether Qt's xcb platform loads on ``display`` (tried in a child process:
    a missing xcb library makes Qt abort, which must not take this process down)."""
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
    code = "from PyQt5.QtWidgets import QApplication; QApplication(['probe'])"
    try:
        result = subprocess.run([sys.executable, "-c", code], env=env, timeout=60,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _stop():
    global _SERVER
    if _SERVER is not None:
        _SERVER.terminate()
        try:
            _SERVER.wait(5)
        except subprocess.TimeoutExpired:
            _SERVER.kill()
        _SERVER = None


def canvas_renders():
    """True when a napari canvas actually draws (checked by rendering a test image)."""
    import numpy as np
    import napari

    viewer = napari.Viewer(show=True)
    try:
        viewer.add_image(np.full((8, 8), 1.0, dtype=np.float32), contrast_limits=(0, 1))
        shot = viewer.screenshot(canvas_only=True, flash=False)
        return shot is not None and shot[..., :3].max() > 200
    except (AttributeError, RuntimeError):
        return False
    finally:
        viewer.close()
