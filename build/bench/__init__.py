"""`make bench`: side-by-side ratios, each framework timed in its own process."""
