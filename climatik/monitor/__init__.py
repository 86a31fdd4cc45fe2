"""The Power Usage Monitor: measures each policy's power and decides whether capping is required."""
