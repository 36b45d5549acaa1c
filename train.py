"""Train a glimpse model: `python train.py model=lstm data=pystdlib` (see conf/train.yaml)."""

from glimpse.cli import train_main

if __name__ == "__main__":
    train_main()
