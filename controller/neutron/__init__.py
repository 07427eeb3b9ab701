"""Neutron's v2.0 REST API (and Octavia's v2 for load balancers) over the same resource tables as the gRPC
API: one declarative mapping per resource kind (kinds.py), the standard methods written once (rest.py)."""
