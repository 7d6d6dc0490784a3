import os
import sys

# tests/reference.py (the independent oracle) is imported as a top-level module.
sys.path.insert(0, os.path.dirname(__file__))
