"""Test doubles shared by test files: a fake ``pynvml`` module, a fake powercap tree, a clock.

Test files import them as ``from fakes.fake_pynvml import ...``: pytest's default ``prepend``
import mode puts ``tests/`` on ``sys.path`` because ``tests/`` has no ``__init__.py`` (the same
way ``from _capture import ...`` works).
"""
