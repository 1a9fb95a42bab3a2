"""Node-to-node gRPC: signed calls, the State, Pods and Images services, and their clients."""
