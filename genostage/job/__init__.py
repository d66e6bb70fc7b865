"""The job layer: one batch job's private scratch directory, its staged inputs and outputs,
the tool run between them, the node-level reference cache and the provenance manifest.

- :mod:`.job`: :class:`Job`, which ties the parts together;
- :mod:`.staging`: what goes where between the stores and scratch (``stage_in``, ``stage_out``);
- :mod:`.scratch`: the private directory, its free-space check, cleanup and sweeping;
- :mod:`.tool`: running the tool (placeholders, logs, signals, resource use);
- :mod:`.cache`: reference data downloaded once per node and shared by concurrent jobs.
"""
