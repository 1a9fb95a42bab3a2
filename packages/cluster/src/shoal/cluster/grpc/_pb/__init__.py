"""Generated protobuf messages of ``proto/shoal_node.proto`` (``make proto``); do not edit."""
