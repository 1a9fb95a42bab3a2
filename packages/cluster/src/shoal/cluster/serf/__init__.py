"""SerfCluster: gossip membership and failure detection through a supervised ``serf agent``."""
