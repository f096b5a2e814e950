"""xenreconcile: keep the running Xen guests equal to a directory of xl.cfg files."""

__version__ = "0.1.0"
