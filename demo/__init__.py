"""A simulated Horizon farm (Connection Servers / UAGs) and a client load generator for the demo stack."""
