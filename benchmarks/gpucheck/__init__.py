"""The GPU check's parts (benchmarks/gpu_check.py runs them): shapes and workloads, synthetic data, the device,
the section runner with its time guard, the shared context, and one module per kind of section."""
