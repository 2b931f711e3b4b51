"""Every exception class of the package is defined in ``sphaera_crdt.errors``, once."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import click

import sphaera_crdt
from sphaera_crdt import errors
from sphaera_crdt.net import client, middleware


def _modules() -> list[str]:
    names = [sphaera_crdt.__name__]
    for info in pkgutil.walk_packages(sphaera_crdt.__path__, prefix="sphaera_crdt."):
        if not info.name.endswith(".__main__"):  # running it runs the command line
            names.append(info.name)
    return names


def test_every_exception_class_is_defined_in_errors() -> None:
    elsewhere = []
    for name in _modules():
        if name == errors.__name__:
            continue
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if value.__module__ != name or not issubclass(value, BaseException):
                continue
            # The command line's click exceptions are how click prints and exits: the
            # CLI's translation of library errors, not errors of the library.
            if issubclass(value, click.ClickException):
                continue
            elsewhere.append(f"{name}.{value.__qualname__}")
    assert not elsewhere, f"exception classes outside sphaera_crdt.errors: {elsewhere}"


def test_every_error_is_a_sphaera_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.SphaeraError), name


def test_one_api_error_for_the_server_and_the_client() -> None:
    assert middleware.ApiError is client.ApiError is errors.ApiError
    error = errors.ApiError(404, "not_found", "entity 'x' is not declared")
    assert (error.status, error.code, error.message, error.headers) == (
        404,
        "not_found",
        "entity 'x' is not declared",
        {},
    )
    assert str(error) == "404 not_found: entity 'x' is not declared"
