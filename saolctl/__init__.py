"""saolctl: output layers that keep location (SAOL, CAM, ABN) and their WSOL evaluation."""

__version__ = "0.1.0"
