"""The help formatter of the scripts that must not import JAX before parsing their flags."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Kept description paragraphs and shown defaults: `nte.continual.HelpFormatter`, without
    importing `nte` (and so JAX) first."""
