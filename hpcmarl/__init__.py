"""hpcmarl: multi-agent RL on HPC clusters."""
__version__ = "0.1.0"
