"""Building a target: the builders (``idf.py`` or a command), the one command runner, the
app image check, and the ``build:<target>`` action."""
