"""The network adapters around the sans-IO core: aiohttp server, peer client, gossip."""
