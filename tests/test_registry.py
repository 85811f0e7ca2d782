"""The in-memory registry passes the shared registry behaviour suite."""

from chatservice.registry import Registry
from chatservice.testing import RegistryBehaviour


class TestRegistry(RegistryBehaviour):
    def make_registry(self) -> Registry:
        return Registry()
