"""Scarce-class benchmark: synthetic images of a scarce class against classical augmentation.

  augment    classical augmentation with MONAI transforms (flips, affine, elastic, intensity)
  benchmark  the protocol: cut to K, four training sets, intervals, verdicts, the leak check
"""
