"""The scaling study: its grid, runner, baselines, evaluation and rendering.

Submodules are imported on demand: the runner pulls in torch and Lightning.
"""
