"""Fine-tuning providers behind one seam (`base.Provider`), one folder per kind,
assembled with the model catalog by `registry`."""
