"""The implementation of sgtlab's top-level functions (`sgtlab.fit`, ...); see `sgtlab/__init__.py`."""
