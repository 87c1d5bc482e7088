"""`python -m mvpose ...` (and `torchrun -m mvpose ...`) run the command-line interface."""

from mvpose.cli import main

if __name__ == "__main__":
    main()
