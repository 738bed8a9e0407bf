"""strongmesh: node-to-node IPsec for Kubernetes, driven by IPsecPolicy resources."""

__version__ = "0.1.0"
