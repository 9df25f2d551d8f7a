"""DICOM studies -> per-patient multiphase ROI stacks and tabular features -> sharded TFRecords."""
