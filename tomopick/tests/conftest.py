"""Fixtures shared by the napari viewer and picker tests."""
import pytest

from tomopick.viewers import headless


@pytest.fixture(scope="module")
def qapp():
    from napari.qt import get_qapp

    headless.virtual_display()  # a private Xvfb (when installed) before Qt starts
    return get_qapp()


@pytest.fixture(scope="module")
def renders(qapp):
    return qapp.platformName() == "xcb" and headless.canvas_renders()
