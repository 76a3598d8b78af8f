//! The `process` provider: each machine is a `drover-worker` process on this machine.

// Contract stub for issue 13: the fleet helper writes the provider.
