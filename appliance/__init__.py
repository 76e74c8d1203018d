"""IT/OT demarcation appliance: one package, one CLI, one daemon role per concern."""

__version__ = "0.1.0"
