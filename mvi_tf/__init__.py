"""mvi-tf: microvascular invasion prediction for hepatocellular carcinoma from multiphase CT and EOB-MRI."""

__version__ = "0.1.0"
