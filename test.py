"""Evaluate models on benchmark sets: ``python test.py -opt options/test/<name>.yml``."""
import sys

from basicsr_ext.test import main

if __name__ == '__main__':
    sys.exit(main())
