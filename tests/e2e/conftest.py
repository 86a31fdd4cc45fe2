"""End-to-end fixtures: the whole loop (hack/loopenv.py) with real processes and servers."""
