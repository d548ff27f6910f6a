"""tomopick: native cryo-ET particle picking for Scipion."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "tomopick" / "__init__.py").read_text()).group(1)
REQUIREMENTS = [line.strip() for line in (HERE / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

setup(
    name="scipion-em-tomopick",
    version=VERSION,
    description="Native cryo-ET particle picking for Scipion: denoise, vectorial and "
                "PickET picking, extraction, alignment, consensus",
    long_description=(HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.8",
    packages=find_packages(include=["tomopick", "tomopick.*"]),
    # everything the installed plugin reads besides its modules: the GUI tree and the
    # saved workflows (tests/test_wheel.py builds a wheel and runs a template from it)
    package_data={"tomopick": ["protocols.conf", "workflows/*.json", "workflows/*.json.template"]},
    include_package_data=True,
    install_requires=REQUIREMENTS,
    # wheel: test_wheel.py builds the wheel without fetching a build backend
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "wheel"]},
    entry_points={
        "pyworkflow.plugin": ["tomopick = tomopick"],
        "console_scripts": ["tomopick = tomopick.cli:main"],
    },
    classifiers=["Programming Language :: Python :: 3",
                 "Topic :: Scientific/Engineering :: Bio-Informatics"],
)
