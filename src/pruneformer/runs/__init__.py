"""Runs: the validated recipe (``recipe``), the engine every command's run shares (``engine``), each command's
flow (``pipeline`` for prune, ``structured``, ``solution_path``, ``oneshot``) and the report they write."""
