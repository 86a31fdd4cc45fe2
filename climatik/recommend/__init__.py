"""The recommender: runs each policy's algorithm and writes the resulting targets into NodeFrequencies specs."""
