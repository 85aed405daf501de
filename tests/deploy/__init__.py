"""Tests of deploy/: the container image's Dockerfile, the kustomize manifests (schemas, hardening,
RBAC, NetworkPolicy flows) and Parallax's own posture scan of them."""
