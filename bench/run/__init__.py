"""Run: the sweep, the runner, the environment, the roofline, the self-check and the executors."""
