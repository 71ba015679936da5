"""Packaging lives in pyproject.toml; this shim keeps `pip install -e .` and `python setup.py` working."""
from setuptools import setup

setup()
