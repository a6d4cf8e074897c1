"""The in-memory records every core function shares: examples and their text formats,
splits and subsets (sampling), and the empirical labels of a split."""
