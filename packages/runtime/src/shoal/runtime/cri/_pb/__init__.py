"""Generated protobuf messages of ``proto/cri_api.proto`` (CRI v1, ``make proto``); do not edit."""
