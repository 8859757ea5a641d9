"""Packages: vizsuite/* plus the model cards in models/, installed as `vizsuite.models`.

(pyproject.toml alone cannot combine package discovery with mapping a top-level folder
into the package, hence this file; all metadata stays in pyproject.toml.)
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vizsuite", "vizsuite.*"]) + ["vizsuite.models"],
    package_dir={"vizsuite.models": "models"},
)
