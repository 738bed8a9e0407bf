"""Lab and test infrastructure of strongmesh: not shipped, never imported by ``controller``."""
