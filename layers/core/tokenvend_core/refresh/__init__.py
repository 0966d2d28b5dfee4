"""The refresh path, what a provider function does: one attempt at a time under a lease,
refresh-token rotation, and the scheduled runs. Token requests go out through `endpoint`."""
