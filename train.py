"""Train a super-resolution network: ``python train.py -opt options/train/<Arch>/<name>.yml``."""
import sys

from basicsr_ext.train import train_pipeline

if __name__ == '__main__':
    sys.exit(train_pipeline())
