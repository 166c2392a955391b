"""Training and evaluation data: image folders, random patches, and MATLAB-style bicubic degradation."""
