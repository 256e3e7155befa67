"""The command-line programs behind ``tools/*.py``: each module's ``main``
parses the arguments and calls into the package."""
