"""Entry point for `python -m saolctl` (and `torchrun -m saolctl`)."""

from saolctl.cli.app import main

if __name__ == "__main__":
    main()
