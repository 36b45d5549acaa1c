"""Evaluate and sample from a checkpoint: `python eval.py ckpt_path=PATH` (see conf/eval.yaml)."""

from glimpse.cli import eval_main

if __name__ == "__main__":
    eval_main()
