"""Node-to-node gRPC: signed calls, the State, Pods, Images and Traces services, clients."""
