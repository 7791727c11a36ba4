"""Package marker. It loads the native build's finder before any module of the package loads, so a
compiled module is used only while it matches its source (domain/native.py)."""

from domain import native as _native

_native.install()
