"""Compare runs side by side: `python compare.py logs/train/multiruns/<sweep>` (see --help)."""

from glimpse.reports.compare import main

if __name__ == "__main__":
    main()
