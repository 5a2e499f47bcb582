"""Pure models shared by layers above: the analytic frame-latency model (used by the budget
controller and by the analysis) and the windowed loss estimator (controllers, FEC policies)."""
