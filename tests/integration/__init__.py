"""Integration tests: the client against real PostgreSQL servers, fake servers and the
fault proxy. A package so that its conftest.py is a module of its own
(``integration.conftest``) beside tests/conftest.py, for mypy as for pytest."""
