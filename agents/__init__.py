"""The shipped agents and classifiers, installed as the package data of ``spiral.shipped_agents``.

This file makes the folder a package so that ``importlib.resources`` finds the agents both in an
editable install (this folder) and after ``pip install .`` (a copy in site-packages); see
``[tool.setuptools]`` in pyproject.toml and ``spiral.shipped``.
"""
