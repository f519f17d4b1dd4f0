"""kiln-hello: the pure-Python package pipelines/examples/pip-offline.yaml installs offline."""

__version__ = "1.0.0"


def greet(name):
    """A greeting that names where the package came from."""
    return f"hello, {name}, from kiln-hello {__version__} (installed from the kiln mirror)"
