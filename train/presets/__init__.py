"""The training presets (``NAME.toml``), installed as the package data of ``spiral.presets``.

This file makes the folder a package so that ``importlib.resources`` finds the presets both in
an editable install (this folder) and after ``pip install .`` (a copy in site-packages); see
``[tool.setuptools]`` in pyproject.toml.
"""
