"""Pubsub: gossipsub v1.2/v1.1/v1.0 and floodsub as sans-IO state machines.

``router.GossipsubRouter`` is the router; ``rpc_pb`` the wire format;
``score`` peer scoring; ``mcache`` and ``backoff`` its caches; ``events``
what it reports. The asyncio driver is ``fastp2p.services.pubsub``.
"""
