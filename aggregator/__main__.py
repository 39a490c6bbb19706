"""``python -m aggregator`` runs the ``agg`` command line."""

from aggregator.cli import main

if __name__ == "__main__":
    main()
