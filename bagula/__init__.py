"""The composition root: the ``bagula`` command (one module per command group under
``bagula.cli``), the project-local PostgreSQL (``localdb``), the process supervisor of
``bagula run`` and the Superset launcher. It wires the layers together; no package
imports it."""
