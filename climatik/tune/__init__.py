"""The Frequency Tuner's node side: hardware backends, the state file of original settings, and the applier."""
