"""dcbench: a DeepCluster training and transfer-evaluation benchmark suite."""

__version__ = "0.1.0"
