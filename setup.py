"""ament_python package ``mhc_ros``.

The folders keep the names a ROS user expects (``model/``, ``sim/``) and are installed
as ``mhc_model`` and ``mhc_sim`` so imports stay unambiguous.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mhc_ros"


def _subpackages(folder: str, name: str) -> dict[str, str]:
    """Map ``folder`` and its sub-folders to import names under ``name``."""
    found = {name: folder}
    for sub in find_packages(where=folder):
        found[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return found


package_dir = {PACKAGE: PACKAGE}
package_dir.update(_subpackages("model", "mhc_model"))
package_dir.update(_subpackages("sim", "mhc_sim"))

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE, *[p for p in package_dir if p != PACKAGE]],
    package_dir=package_dir,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mhc_ros maintainers",
    description="ROS 2 control stack around the mHC multimodal transformer",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "mhc = mhc_ros.cli:main",
            "mhc_sim_bridge = mhc_ros.sim_bridge_node:main",
            "mhc_expert_controller = mhc_ros.expert_controller_node:main",
            "mhc_controller = mhc_ros.controller_node:main",
        ],
    },
)
