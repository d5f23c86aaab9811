"""Where the project lives: output folders default to places under its root, never the CWD."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

__all__ = ['PROJECT_ROOT']
