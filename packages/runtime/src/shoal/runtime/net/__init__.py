"""Pod networking: CNI bridge networks owned host-wide, network namespaces, host networking."""
