"""vrlms-edge: the classroom box for VR lessons."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vrlms-edge")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
