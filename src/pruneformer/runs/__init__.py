"""The top half of a run, shared by every command: the registry of methods (name -> stages), read by the
recipe, the CLI's help, the pipeline and the benchmarks."""

from .registry import (MethodEntry, Phase, describe_methods, method_entry, method_names, oneshot_method,
                       oneshot_names, register_method, unregister_method)

__all__ = ["MethodEntry", "Phase", "describe_methods", "method_entry", "method_names", "oneshot_method",
           "oneshot_names", "register_method", "unregister_method"]
