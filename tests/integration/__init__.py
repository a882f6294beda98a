"""Integration tests: real components (Prometheus, Ray, kube-apiserver) started by the suite."""
